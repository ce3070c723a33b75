package discovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

func TestTwoReplicasNeitherDuplicateEntriesNorScans(t *testing.T) {
	ollama := ollamatest.Start(t)
	cluster := etcdtest.Start(t)
	port := portOf(t, ollama.Addr())
	cfg := testConfig(t, func(c *discovery.Config) {
		// Found twice over in each replica: statically, and by a scan of loopback.
		c.OllamaNodes = config.StringList{ollama.Addr()}
		c.Scan.CIDRs = config.StringList{"127.0.0.1/32"}
		c.Scan.OllamaPorts = config.StringList{port}
		c.Scan.RPCPorts = config.StringList{port}
		c.Scan.Interval = 500 * time.Millisecond
	})
	a := startDiscovery(t, cluster, cfg)
	b := startDiscovery(t, cluster, cfg)

	a.waitBackend(t, ollama.Addr(), "listed from both sources", func(be *commonv1.Backend) bool {
		return len(be.GetSources()) == 2
	})
	require.Eventually(t, func() bool { return a.svc.IsLeader() != b.svc.IsLeader() }, 10*time.Second, 50*time.Millisecond,
		"exactly one replica must lead")
	leader, follower := a, b
	if b.svc.IsLeader() {
		leader, follower = b, a
	}
	// Let several scan rounds pass, then compare the work done.
	require.Eventually(t, func() bool {
		probes, scans, _ := leader.svc.Counters()
		return scans >= 3 && probes > 0
	}, 15*time.Second, 50*time.Millisecond)
	followerProbes, followerScans, followerWrites := follower.svc.Counters()
	require.Zero(t, followerScans, "the follower must not scan")
	require.Zero(t, followerProbes, "the follower must not probe")
	require.Zero(t, followerWrites, "the follower must not write")

	for _, r := range []*replica{a, b} {
		list := r.backends(t, false)
		require.Len(t, list, 1, "one backend, however many sources and replicas found it: %v", list)
		require.Equal(t, []string{"scan", "static"}, list[0].GetSources())
	}

	// The leader leaves; the follower takes over and keeps the entry true.
	require.NoError(t, leader.svc.Stop(context.Background()))
	require.Eventually(t, follower.svc.IsLeader, 15*time.Second, 50*time.Millisecond)
	follower.waitBackend(t, ollama.Addr(), "healthy under the new leader", healthIs(healthy))
	_, scans, _ := follower.svc.Counters()
	require.Positive(t, scans)
}
