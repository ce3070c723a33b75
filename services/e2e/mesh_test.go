package e2e

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/router"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/lifecycle"
	"github.com/sollol/mesh/services/shared/testutil"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

// meshOptions chooses which services run and how they are configured.
type meshOptions struct {
	ollamaNodes      []string
	rpcBackends      []string
	noPool           bool
	taskDistribution string // router switch; default auto
	modelSharding    string
	// probeInterval overrides discovery's (long: the view keeps a dead node "healthy" for a
	// while, which is how a failure before the first token is staged).
	probeInterval time.Duration
	// shardModels, when set, runs a coordinator-manager with these model files (name→path).
	shardModels map[string]string
	// poolReplicas is how many ollama-pool replicas run (default 1).
	poolReplicas int
}

// inProcessMesh is the mesh started in-process by target, each service on its own port and
// reaching the others over gRPC through etcd, as `sollol up` does.
type inProcessMesh struct {
	etcd    *etcdtest.Cluster
	router  *router.Service
	metrics *prometheus.Registry  // the router's own metrics
	pool    *ollamapool.Service   // the first of pools
	pools   []*ollamapool.Service // every pool replica
	client  routerv1.RouterServiceClient
}

func startMesh(t *testing.T, o meshOptions) *inProcessMesh {
	t.Helper()
	cluster := etcdtest.Start(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	deps := grpcserver.Deps{Logger: log, Etcd: cluster.Client()}
	fs := flag.NewFlagSet("mesh", flag.ContinueOnError)

	var dcfg discovery.Config
	dcfg.RegisterFlags(fs)
	dcfg.GRPC.Addr = "127.0.0.1:0"
	dcfg.ProbeInterval = 200 * time.Millisecond
	if o.probeInterval > 0 {
		dcfg.ProbeInterval, dcfg.MaxProbeInterval = o.probeInterval, o.probeInterval
	}
	dcfg.OllamaNodes = config.StringList(o.ollamaNodes)
	dcfg.RPCBackends = config.StringList(o.rpcBackends)
	var pcfg ollamapool.Config
	pcfg.RegisterFlags(fs)
	pcfg.GRPC.Addr = "127.0.0.1:0"
	var rcfg router.Config
	rcfg.RegisterFlags(fs)
	rcfg.GRPC.Addr = "127.0.0.1:0"
	if o.taskDistribution != "" {
		rcfg.TaskDistribution = o.taskDistribution
	}
	if o.modelSharding != "" {
		rcfg.ModelSharding = o.modelSharding
	}

	m := &inProcessMesh{etcd: cluster}
	manager := lifecycle.NewManager(log)
	disc, err := discovery.New(dcfg, deps)
	require.NoError(t, err)
	manager.Add(disc)
	if o.shardModels != nil {
		coord, err := coordinator.New(coordinatorConfig(t, fs, o.shardModels), deps)
		require.NoError(t, err)
		manager.Add(coord)
	}
	for i := 0; !o.noPool && i < max(o.poolReplicas, 1); i++ {
		pool, err := ollamapool.New(pcfg, deps)
		require.NoError(t, err)
		manager.Add(pool)
		m.pools = append(m.pools, pool)
	}
	if len(m.pools) > 0 {
		m.pool = m.pools[0]
	}
	m.metrics = prometheus.NewRegistry()
	routerDeps := deps
	routerDeps.Registry = m.metrics
	m.router, err = router.New(rcfg, routerDeps)
	require.NoError(t, err)
	manager.Add(m.router)
	require.NoError(t, manager.Start(context.Background()))
	t.Cleanup(func() { _ = manager.Stop(context.Background()) })

	conn, err := grpc.NewClient(m.router.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	m.client = routerv1.NewRouterServiceClient(conn)
	return m
}

// waitRoute polls Route until the decision for model satisfies ok (discovery and the
// router's view take a moment to settle).
func (m *inProcessMesh) waitRoute(t *testing.T, model string, ok func(*routerv1.Decision) bool) *routerv1.Decision {
	t.Helper()
	var last *routerv1.Decision
	require.Eventually(t, func() bool {
		resp, err := m.client.Route(context.Background(), &routerv1.RouteRequest{Model: model})
		if err != nil {
			return false
		}
		last = resp.GetDecision()
		return ok(last)
	}, 30*time.Second, 50*time.Millisecond, "decision never settled; last: %v", last)
	return last
}

// coordinatorConfig runs llama-server (the double, or the real binary SOLLOL_LLAMA_SERVER
// names) for the given model files.
func coordinatorConfig(t *testing.T, fs *flag.FlagSet, models map[string]string) coordinator.Config {
	var c coordinator.Config
	c.RegisterFlags(fs)
	c.GRPC.Addr = "127.0.0.1:0"
	bin, real := llamaservertest.Binary(t)
	c.LlamaServer = bin
	c.LlamaServerArgs = llamaservertest.DoubleOptions{}.Args(real)
	c.Threads = 1
	c.DefaultContext = tinymodel.ContextLen
	c.OllamaModels = "none"
	for name, path := range models {
		c.Models = append(c.Models, name+"="+path)
	}
	c.DataDir = t.TempDir()
	c.StartTimeout = time.Minute
	c.StopTimeout = 5 * time.Second
	c.MaxRestarts = 1
	return c
}

// tinyModelFile writes the tiny GGUF for the coordinator to load.
func tinyModelFile(t *testing.T, name string) string {
	path := filepath.Join(t.TempDir(), name+".gguf")
	require.NoError(t, tinymodel.WriteFile(path, tinymodel.Options{Name: name}))
	return path
}

// counterValue is the value of the router's counter name with the given label values
// (ordered by label name), 0 when absent.
func (m *inProcessMesh) counterValue(t *testing.T, name string, labels ...string) float64 {
	v, _ := testutil.MetricValue(t, m.metrics, name, labels...)
	return v
}
