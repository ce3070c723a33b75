package coordinator_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

const stopped = coordinatorv1.CoordinatorState_COORDINATOR_STATE_STOPPED

// needOf is what placement estimates one tiny model needs with the tests' settings.
func needOf(t *testing.T, path string) uint64 {
	t.Helper()
	m, err := placement.Inspect(path)
	require.NoError(t, err)
	pl, err := placement.Plan(m, placement.Request{Context: tinymodel.ContextLen * 4, Parallel: 4},
		[]placement.Backend{{Address: "x:1", Free: []uint64{1 << 30}}})
	require.NoError(t, err)
	return pl.Total
}

func TestBudgetOfTwoEvictsTheLeastRecentlyUsedAfterItsStreamCompletes(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(3), Models: []string{"a", "b", "c"},
		Double: llamaservertest.DoubleOptions{TokenInterval: 15 * time.Millisecond}})
	need := needOf(t, w.models["a"])
	r := w.start(w.config(func(c *coordinator.Config) { c.CacheBudget = strconv.FormatUint(need*5/2, 10) }))

	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "a", "first", 2), 2)
	// A long stream on a; then b is used, so a (whose last use began earlier) is the least
	// recently used while its stream still runs.
	long := make(chan streamResult, 1)
	go func() { long <- r.chat(ctxTimeout(t, time.Minute), "a", "a long answer", 80) }()
	require.Eventually(t, func() bool { return r.coordinatorOf(t, "a").GetInFlight() == 1 }, 10*time.Second, 5*time.Millisecond)
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "b", "second", 2), 2)

	third := r.chat(ctxTimeout(t, time.Minute), "c", "third", 2)
	requireComplete(t, third, 2)
	aRes := <-long
	requireComplete(t, aRes, 80)
	if !w.real {
		require.True(t, !aRes.doneAt.After(third.firstChunk), "c waited until a's stream had completed")
		var queued bool
		for _, p := range third.progress {
			queued = queued || p.GetStage().String() == "LOAD_STAGE_QUEUED"
		}
		require.True(t, queued, "c reported that it waited for the eviction")
	}

	require.Equal(t, stopped, r.waitState(t, "a", stopped).GetState(), "the least recently used was stopped")
	require.Equal(t, ready, r.coordinatorOf(t, "b").GetState())
	require.Equal(t, ready, r.coordinatorOf(t, "c").GetState())
	require.Empty(t, w.llamaProcesses("a"))
	s := r.stats(t)
	require.EqualValues(t, 1, s.GetEvictionsTotal())
	require.LessOrEqual(t, s.GetCacheBytes(), s.GetCacheBudgetBytes())
}

func TestIdleCoordinatorIsStoppedAfterItsTTLAndStartsAgain(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(func(c *coordinator.Config) { c.IdleTTL = 300 * time.Millisecond }))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "hi", 2), 2)
	r.waitState(t, "tiny", stopped)
	require.Empty(t, w.llamaProcesses("tiny"))
	require.EqualValues(t, 1, r.stats(t).GetEvictionsTotal())

	again := r.chat(ctxTimeout(t, time.Minute), "tiny", "back", 2)
	requireComplete(t, again, 2)
	require.NotEmpty(t, again.progress, "a stopped coordinator starts cold again")
}

func TestKeepAliveZeroStopsOnceIdle(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(nil))
	req := chatRequest("tiny", "just once", 2)
	req.Options.KeepAlive = durationpb.New(0)
	requireComplete(t, r.chatReq(ctxTimeout(t, time.Minute), req), 2)
	r.waitState(t, "tiny", stopped)
}

func TestStopCoordinatorDrainsThenStops(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"},
		Double: llamaservertest.DoubleOptions{TokenInterval: 10 * time.Millisecond}})
	r := w.start(w.config(nil))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "warm", 2), 2)
	long := make(chan streamResult, 1)
	go func() { long <- r.chat(ctxTimeout(t, time.Minute), "tiny", "long", 40) }()
	require.Eventually(t, func() bool { return r.coordinatorOf(t, "tiny").GetInFlight() == 1 }, 10*time.Second, 5*time.Millisecond)

	resp, err := r.client.StopCoordinator(ctxTimeout(t, time.Minute), &coordinatorv1.StopCoordinatorRequest{Model: "tiny", Drain: true})
	require.NoError(t, err)
	require.Equal(t, stopped, resp.GetCoordinator().GetState())
	requireComplete(t, <-long, 40)
	require.Empty(t, w.llamaProcesses("tiny"))

	_, err = r.client.StopCoordinator(ctxTimeout(t, time.Minute), &coordinatorv1.StopCoordinatorRequest{Model: "ghost"})
	requireStatus(t, err, 5 /* NotFound */, "COORDINATOR_NOT_FOUND")
}

func TestLargerContextRestartsTheCoordinator(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(func(c *coordinator.Config) { c.DefaultContext = 64 }))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "small", 2), 2)
	small := r.coordinatorOf(t, "tiny")
	require.EqualValues(t, 64*4, small.GetContextSize())

	req := chatRequest("tiny", "bigger", 2)
	req.Options.ContextSize = ptr(int32(200))
	requireComplete(t, r.chatReq(ctxTimeout(t, time.Minute), req), 2)
	big := r.coordinatorOf(t, "tiny")
	require.EqualValues(t, 200*4, big.GetContextSize())
	require.NotEqual(t, small.GetPid(), big.GetPid())
	require.Len(t, w.llamaProcesses("tiny"), 1)

}
