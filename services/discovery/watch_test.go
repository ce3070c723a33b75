package discovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

func TestWatchSendsSnapshotThenChanges(t *testing.T) {
	static := rpcservertest.Start(t, rpcservertest.Options{})
	agent := rpcservertest.Start(t, rpcservertest.Options{})
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.RPCBackends = config.StringList{static.Addr()}
	}))
	r.waitBackend(t, static.Addr(), "healthy", healthIs(healthy))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := r.client.WatchBackends(ctx, &discoveryv1.WatchBackendsRequest{Kind: kindRPC})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	snap := first.GetSnapshot()
	require.NotNil(t, snap, "the first message is the snapshot")
	require.Len(t, snap.GetBackends(), 1)
	require.Equal(t, static.Addr(), snap.GetBackends()[0].GetAddress())
	require.Positive(t, snap.GetRevision())

	reg, err := r.client.RegisterBackend(ctx, &discoveryv1.RegisterBackendRequest{Kind: kindRPC, Address: agent.Addr(), Ttl: durationpb.New(time.Minute)})
	require.NoError(t, err)
	nextEvent := func(want discoveryv1.BackendEventType) *discoveryv1.BackendEvent {
		t.Helper()
		for {
			msg, err := stream.Recv()
			require.NoError(t, err)
			ev := msg.GetEvent()
			require.NotNil(t, ev, "after the snapshot only events arrive")
			require.Greater(t, ev.GetRevision(), snap.GetRevision())
			if ev.GetBackend().GetAddress() == agent.Addr() && ev.GetType() == want {
				return ev
			}
		}
	}
	put := nextEvent(discoveryv1.BackendEventType_BACKEND_EVENT_TYPE_PUT)
	require.Equal(t, []string{"self-registered"}, put.GetBackend().GetSources())

	_, err = r.client.DeregisterBackend(ctx, &discoveryv1.DeregisterBackendRequest{RegistrationId: reg.GetRegistrationId()})
	require.NoError(t, err)
	del := nextEvent(discoveryv1.BackendEventType_BACKEND_EVENT_TYPE_DELETE)
	require.Equal(t, put.GetBackend().GetId(), del.GetBackend().GetId())
}

func TestLocalAddressesAreOneBackend(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	cluster := etcdtest.Start(t)
	port := portOf(t, rpc.Addr())
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		// The same rpc-server written three ways, as the Python SOLLOL users' configs had it.
		c.RPCBackends = config.StringList{"127.0.0.1:" + port, "localhost:" + port, "0.0.0.0:" + port}
	}))
	r.waitBackend(t, rpc.Addr(), "healthy", healthIs(healthy))
	require.Len(t, r.backends(t, false), 1)
}

func TestBadConfigurationNamesTheFlag(t *testing.T) {
	cluster := etcdtest.Start(t)
	tests := []struct {
		mutate func(*discovery.Config)
		want   string
	}{
		{func(c *discovery.Config) { c.OllamaNodes = config.StringList{"gpu1:abc"} }, "discovery.ollama-nodes"},
		{func(c *discovery.Config) { c.RPCBackends = config.StringList{"h:0"} }, "discovery.rpc-backends"},
		{func(c *discovery.Config) { c.DNSNames = config.StringList{"ollama"} }, "discovery.dns-names"},
		{func(c *discovery.Config) { c.Scan.CIDRs = config.StringList{"8.8.8.0/24"} }, "discovery.scan-cidrs"},
		{func(c *discovery.Config) {
			c.Scan.CIDRs = config.StringList{"10.0.0.0/24"}
			c.Scan.RPCPorts = config.StringList{"http"}
		}, "discovery.scan-rpc-ports"},
	}
	for _, tt := range tests {
		_, err := discovery.New(testConfig(t, tt.mutate), depsFor(cluster))
		require.ErrorContains(t, err, tt.want)
	}
}

// An open watch must not hold up a replica's shutdown: it ends at once with UNAVAILABLE,
// well before the drain timeout, so the client can watch another replica.
func TestOpenWatchEndsWhenTheReplicaStops(t *testing.T) {
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) { c.GRPC.DrainTimeout = time.Minute }))
	stream, err := r.client.WatchBackends(context.Background(), &discoveryv1.WatchBackendsRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)

	stopped := make(chan error, 1)
	go func() { stopped <- r.svc.Stop(context.Background()) }()
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Stop waited for the watch instead of ending it")
	}
}
