package e2e

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/router"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/lifecycle"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

// meshOptions chooses which services run and how they are configured.
type meshOptions struct {
	ollamaNodes      []string
	rpcBackends      []string
	noPool           bool
	taskDistribution string // router switch; default auto
	modelSharding    string
	extra            []lifecycle.Service // more services (a coordinator-manager) to run
}

// inProcessMesh is the mesh started in-process by target, each service on its own port and
// reaching the others over gRPC through etcd, as `sollol up` does.
type inProcessMesh struct {
	etcd   *etcdtest.Cluster
	router *router.Service
	pool   *ollamapool.Service
	client routerv1.RouterServiceClient
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
	for _, s := range o.extra {
		manager.Add(s)
	}
	if !o.noPool {
		m.pool, err = ollamapool.New(pcfg, deps)
		require.NoError(t, err)
		manager.Add(m.pool)
	}
	m.router, err = router.New(rcfg, deps)
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
