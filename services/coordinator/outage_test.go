package coordinator_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/registry"
)

// etcd is down for longer than the ownership lease: the running coordinator keeps serving
// meanwhile, and once etcd is back the replica takes its lock again and republishes the
// record, with the same process — no second start, no lost model.
func TestEtcdOutageLongerThanTheLease(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(func(c *coordinator.Config) { c.LeaseTTL = 2 * time.Second }))
	before := ensure(t, r.client, "tiny")

	w.cluster.Stop()
	time.Sleep(4 * time.Second) // twice the lease: every lease of the replica has expired
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "while etcd is down", 3), 3)
	w.cluster.Restart()
	restarted := time.Now()

	records := registry.NewStore(w.cluster.Client(), registry.CoordinatorsPrefix,
		registry.ProtoJSON(func() *coordinatorv1.Coordinator { return &coordinatorv1.Coordinator{} }))
	require.Eventually(t, func() bool {
		items, _, _, err := records.List(ctxTimeout(t, 5*time.Second))
		if err != nil {
			return false
		}
		for _, rec := range items {
			if rec.GetModel() == "tiny" && rec.GetOwner() == r.svc.Instance() && rec.GetPid() == before.GetPid() {
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "the record is republished for the same process")
	// The model's lock is held again (under a new session), so no other replica may start it.
	require.Eventually(t, func() bool {
		resp, err := w.cluster.Client().Get(ctxTimeout(t, 5*time.Second), registry.Root+"locks/coordinator/", clientv3.WithPrefix())
		return err == nil && resp.Count == 1
	}, 30*time.Second, 100*time.Millisecond, "the model lock is taken again")
	t.Logf("lock and record back %v after etcd restarted", time.Since(restarted).Round(10*time.Millisecond))
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "after the outage", 3), 3)
	require.Equal(t, before.GetPid(), r.coordinatorOf(t, "tiny").GetPid(), "the same process: nothing restarted")
	require.Len(t, w.llamaProcesses("tiny"), 1)
}
