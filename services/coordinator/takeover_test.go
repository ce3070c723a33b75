package coordinator_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/coordinator"
)

// The replica that owns a model is killed while another replica forwards to it: the next
// request to the survivor waits for the dead owner's ownership to expire (saying so in its
// progress), takes the model over and completes, instead of failing for as long as the dead
// owner's record lives.
func TestASurvivorTakesOverTheModelOfAKilledOwner(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	ttl := func(c *coordinator.Config) { c.LeaseTTL = 3 * time.Second }
	owner := w.startChild(w.config(ttl))
	first := ensure(t, dial(t, owner.addr), "tiny")
	survivor := w.start(w.config(ttl))

	// The survivor forwards to the live owner.
	require.Eventually(t, func() bool {
		res := survivor.chat(ctxTimeout(t, time.Minute), "tiny", "via the owner", 3)
		return res.err == nil && res.done.GetRoute().GetBackend() == first.GetAddress()
	}, 20*time.Second, 100*time.Millisecond, "the survivor never forwarded to the owner's coordinator")

	owner.kill(t)
	killed := time.Now()
	res := survivor.chat(ctxTimeout(t, time.Minute), "tiny", "after the owner died", 3)
	requireComplete(t, res, 3)
	waited := time.Since(killed)
	require.True(t, strings.HasPrefix(res.order, "p"), "the wait is explained before the tokens: %s", res.order)
	require.Contains(t, res.progress[0].GetMessage(), "does not answer")
	require.Contains(t, res.progress[0].GetMessage(), owner.addr)
	again := survivor.coordinatorOf(t, "tiny")
	require.Equal(t, survivor.svc.Instance(), again.GetOwner(), "the survivor owns the model now")
	require.NotEqual(t, first.GetPid(), again.GetPid())
	require.Len(t, w.llamaProcesses("tiny"), 1, "exactly one coordinator")
	t.Logf("served %v after the owner was killed (lease TTL 3s)", waited.Round(10*time.Millisecond))
}
