package discovery_test

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/testutil"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

// testConfig is discovery's flag defaults with fast probes, on a free port.
func testConfig(t testing.TB, mutate func(*discovery.Config)) discovery.Config {
	t.Helper()
	var cfg discovery.Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.MaxProbeInterval = time.Second
	cfg.ProbeTimeout = time.Second
	cfg.LeaseTTL = 3 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

type replica struct {
	svc     *discovery.Service
	client  discoveryv1.DiscoveryServiceClient
	metrics *prometheus.Registry // the replica's own metrics
}

// startDiscovery runs one discovery replica against the cluster; it is stopped at the end.
func startDiscovery(t testing.TB, cluster *etcdtest.Cluster, cfg discovery.Config) *replica {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	metrics := prometheus.NewRegistry()
	svc, err := discovery.New(cfg, grpcserver.Deps{Logger: log, Etcd: cluster.Client(), Registry: metrics})
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	conn, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &replica{svc: svc, client: discoveryv1.NewDiscoveryServiceClient(conn), metrics: metrics}
}

// backends lists what discovery reports right now.
func (r *replica) backends(t testing.TB, healthyOnly bool) []*commonv1.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.client.ListBackends(ctx, &discoveryv1.ListBackendsRequest{HealthyOnly: healthyOnly})
	require.NoError(t, err)
	return resp.GetBackends()
}

// waitBackend polls until a backend at addr satisfies ok, and returns it.
func (r *replica) waitBackend(t *testing.T, addr string, why string, ok func(*commonv1.Backend) bool) *commonv1.Backend {
	t.Helper()
	var found *commonv1.Backend
	require.Eventually(t, func() bool {
		for _, b := range r.backends(t, false) {
			if b.GetAddress() == addr && ok(b) {
				found = b
				return true
			}
		}
		return false
	}, 20*time.Second, 50*time.Millisecond, "waiting for %s: %s; have %v", addr, why, r.backends(t, false))
	return found
}

func healthIs(h commonv1.HealthState) func(*commonv1.Backend) bool {
	return func(b *commonv1.Backend) bool { return b.GetHealth() == h }
}

const (
	healthy      = commonv1.HealthState_HEALTH_STATE_HEALTHY
	down         = commonv1.HealthState_HEALTH_STATE_DOWN
	incompatible = commonv1.HealthState_HEALTH_STATE_INCOMPATIBLE
	kindOllama   = commonv1.BackendKind_BACKEND_KIND_OLLAMA
	kindRPC      = commonv1.BackendKind_BACKEND_KIND_RPC
)

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func dial(t testing.TB, addr string) discoveryv1.DiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return discoveryv1.NewDiscoveryServiceClient(conn)
}

func depsFor(cluster *etcdtest.Cluster) grpcserver.Deps {
	return grpcserver.Deps{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Etcd: cluster.Client()}
}

// portOf is the port of a host:port address.
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	return port
}

// metric is the value of the replica's metric name with the given label values (ordered by
// label name), and whether it is exported.
func (r *replica) metric(t testing.TB, name string, labels ...string) (float64, bool) {
	return testutil.MetricValue(t, r.metrics, name, labels...)
}
