package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

type readyz struct {
	Ready   bool `json:"ready"`
	Targets []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"targets"`
}

func TestUpServesThenStopsCleanlyOnSIGTERM(t *testing.T) {
	ports := freePorts(t)
	args := append([]string{"up", "--data-dir", t.TempDir()}, ports.args()...)
	p := startSollol(t, args...)

	// /readyz turns 200 once every target runs; poll it with a deadline.
	var report readyz
	require.Eventually(t, func() bool {
		code, body, err := httpGet("http://" + ports.http + "/readyz")
		if err != nil || code != http.StatusOK {
			return false
		}
		return json.Unmarshal([]byte(body), &report) == nil
	}, 30*time.Second, 50*time.Millisecond, "readyz never answered 200")
	require.True(t, report.Ready)
	names := map[string]string{}
	for _, tg := range report.Targets {
		names[tg.Name] = tg.State
	}
	for _, want := range []string{"etcd", "discovery", "coordinator", "ollamapool", "router", "http"} {
		require.Equal(t, "running", names[want], "target %s in %v", want, report.Targets)
	}

	conn, err := grpc.NewClient(ports.router, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "sollol.router.v1.RouterService"})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, health.GetStatus())

	// With no backend at all the mesh still answers: stats over gRPC and REST, and a chat
	// gets an immediate error that says what to configure.
	_, err = routerv1.NewRouterServiceClient(conn).GetStats(ctx, &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	code, body, err := httpGet("http://" + ports.http + "/sollol/v1/stats")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"mode"`)
	chat, err := routerv1.NewRouterServiceClient(conn).Chat(ctx, &routerv1.ChatRequest{Model: "tiny",
		Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "hi"}}})
	require.NoError(t, err)
	_, err = chat.Recv()
	require.Equal(t, codes.FailedPrecondition, status.Code(err))

	code, body, err = httpGet("http://" + ports.http + "/sollol/v1/openapi.json")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "/sollol/v1/chat")

	code, body, err = httpGet("http://" + ports.http + "/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `sollol_grpc_server_handled_total{grpc_code="OK",grpc_method="GetStats"`)
	require.Contains(t, body, "sollol_ollamapool_queue_depth 0", "the pool's own figures")
	require.Contains(t, body, "sollol_coordinator_starts_total 0", "the coordinator-manager's own figures")
	require.Contains(t, body, `sollol_router_requests_total{path="pool"} 0`, "the router's own figures")
	require.Contains(t, body, "sollol_discovery_probes_total", "discovery's own figures")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.waitExit(20*time.Second), "a clean stop exits 0")
	require.False(t, p.groupAlive(), "a process of sollol's group outlived it")
}

func TestSingleTargetRegistersInEtcdAndLeavesOnStop(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := cluster.Client()
	ports := freePorts(t)
	p := startSollol(t, "ollamapool", "--etcd-endpoints", cluster.Endpoint(),
		"--http-addr", ports.http, "--ollamapool.grpc-addr", ports.pool)

	instances := func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, registry.ServiceTarget("ollamapool")+"/", clientv3.WithPrefix())
		if err != nil {
			return nil
		}
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		return keys
	}
	require.Eventually(t, func() bool { return len(instances()) == 1 }, 30*time.Second, 50*time.Millisecond)
	require.True(t, strings.HasSuffix(instances()[0], "/"+ports.pool), instances())

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.waitExit(20*time.Second))
	require.Empty(t, instances(), "a stopped instance must deregister, not wait for its lease")
}

func TestBadInputExitsNonZeroNamingTheProblem(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown target", []string{"frobnicate"}, `unknown target "frobnicate"`},
		{"bad flag", []string{"up", "--no-such-flag"}, "no-such-flag"},
		{"bad flag value", []string{"router", "--etcd-dial-timeout", "soon"}, "etcd-dial-timeout"},
		{"stray argument", []string{"router", "extra"}, `unexpected argument "extra"`},
		{"unreachable etcd", []string{"router", "--etcd-endpoints", "127.0.0.1:1", "--etcd-dial-timeout", "1s",
			"--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--router.grpc-addr", "127.0.0.1:0"},
			"etcd unreachable at 127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runSollol(t, 30*time.Second, tt.args...)
			require.NotZero(t, code, out)
			require.Contains(t, lastLine(out), tt.want, out)
		})
	}
}
