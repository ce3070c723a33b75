package discovery_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

// While etcd is down discovery keeps probing; when etcd returns it writes what changed in
// the meantime, even after an outage long enough to lose its lease and its leadership.
func TestKeepsProbingThroughAnEtcdOutageAndReconcilesAfter(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	cluster := etcdtest.Start(t)
	cfg := testConfig(t, func(c *discovery.Config) {
		c.RPCBackends = config.StringList{rpc.Addr()}
		c.LeaseTTL = 2 * time.Second
	})
	r := startDiscovery(t, cluster, cfg)
	r.waitBackend(t, rpc.Addr(), "healthy", healthIs(healthy))

	cluster.Stop()
	rpc.Kill()
	probesAtOutage, _, _ := r.svc.Counters()
	outageStart := time.Now()
	require.Eventually(t, func() bool {
		probes, _, _ := r.svc.Counters()
		return probes >= probesAtOutage+5
	}, 20*time.Second, 50*time.Millisecond, "discovery stopped probing while etcd was down")
	// Stay down past the lease TTL, so the lease and the leadership are lost too.
	if wait := 2*cfg.LeaseTTL - time.Since(outageStart); wait > 0 {
		time.Sleep(wait)
	}

	cluster.Restart()
	r.waitBackend(t, rpc.Addr(), "written down after etcd returned", healthIs(down))
	rpc.Restart()
	r.waitBackend(t, rpc.Addr(), "healthy again", healthIs(healthy))
	require.True(t, r.svc.IsLeader(), "the only replica leads again")
}
