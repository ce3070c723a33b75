package grpcserver_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

// panicky is a one-method service whose handler panics, registered by hand so the test
// needs no generated code.
var panicky = grpc.ServiceDesc{
	ServiceName: "test.Panicky",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Boom",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { panic("boom") }
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Panicky/Boom"}, h)
		},
	}},
}

func TestServiceLifecycleThroughEtcdResolver(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := cluster.Client()
	reg := prometheus.NewRegistry()
	svc := grpcserver.New("testsvc", grpcserver.Config{Addr: "127.0.0.1:0", DrainTimeout: 2 * time.Second},
		grpcserver.Deps{Logger: slog.Default(), Metrics: grpcserver.NewMetrics(reg), Etcd: cli})
	var impl any = struct{}{}
	svc.Server().RegisterService(&panicky, impl)
	require.NoError(t, svc.Start(context.Background()))

	// Reach the instance the way other services will: by name, through etcd.
	conn, err := registry.DialService(cli, "testsvc")
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	// A panicking handler answers INTERNAL and the server keeps serving.
	err = conn.Invoke(ctx, "/test.Panicky/Boom", &emptypb.Empty{}, &emptypb.Empty{})
	require.Equal(t, codes.Internal, status.Code(err))
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)

	require.Equal(t, 1.0, testutil.ToFloat64(counter(t, reg, "test.Panicky", "Boom", "Internal")))

	// A direct connection that outlives the stop sees the drain: NOT_SERVING is set first.
	direct, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer direct.Close()
	require.NoError(t, svc.Stop(context.Background()))
	_, err = healthpb.NewHealthClient(direct).Check(ctx, &healthpb.HealthCheckRequest{})
	require.Error(t, err, "a stopped server must not answer")

	list, err := cli.Get(ctx, registry.ServiceTarget("testsvc")+"/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, list.Kvs, "stop deregisters the instance")
}

func counter(t *testing.T, reg *prometheus.Registry, service, method, code string) prometheus.Collector {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != "sollol_grpc_server_handled_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["grpc_service"] == service && labels["grpc_method"] == method && labels["grpc_code"] == code {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no handled counter for %s/%s %s", service, method, code)
	return nil
}

func TestListenErrorNamesTheAddress(t *testing.T) {
	svc := grpcserver.New("testsvc", grpcserver.Config{Addr: "127.0.0.1:99999"}, grpcserver.Deps{Logger: slog.Default()})
	err := svc.Start(context.Background())
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "127.0.0.1:99999"), err.Error())
}
