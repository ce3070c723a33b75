package discovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	"github.com/sollol/mesh/services/shared/rpcerr"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

func TestSelfRegistrationLivesAsLongAsItsKeepAlive(t *testing.T) {
	ollama := ollamatest.Start(t)
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, nil))
	ctx := context.Background()

	reg, err := r.client.RegisterBackend(ctx, &discoveryv1.RegisterBackendRequest{
		Kind: kindOllama, Address: ollama.Addr(), Labels: map[string]string{"gpu": "none"}, Ttl: durationpb.New(time.Second),
	})
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, reg.GetTtl().AsDuration(), "a too-short TTL is raised to the minimum")
	require.Equal(t, healthy, reg.GetBackend().GetHealth())

	b := r.waitBackend(t, ollama.Addr(), "self-registered", healthIs(healthy))
	require.Equal(t, []string{"self-registered"}, b.GetSources())
	require.Equal(t, "none", b.GetLabels()["gpu"])

	// Renewed for longer than the TTL, it stays.
	keepUntil := time.Now().Add(7 * time.Second)
	for time.Now().Before(keepUntil) {
		_, err := r.client.KeepAlive(ctx, &discoveryv1.KeepAliveRequest{RegistrationId: reg.GetRegistrationId()})
		require.NoError(t, err)
		time.Sleep(time.Second)
	}
	require.Len(t, r.backends(t, true), 1, "kept alive past its TTL, the registration must still be listed")

	// Not renewed, it goes once the TTL runs out.
	stoppedAt := time.Now()
	require.Eventually(t, func() bool { return len(r.backends(t, false)) == 0 }, 20*time.Second, 100*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(stoppedAt), 3*time.Second, "it must not vanish long before its TTL")

	_, err = r.client.KeepAlive(ctx, &discoveryv1.KeepAliveRequest{RegistrationId: reg.GetRegistrationId()})
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Equal(t, "REGISTRATION_NOT_FOUND", rpcerr.Reason(err))
}

func TestDeregisterRemovesAtOnce(t *testing.T) {
	ollama := ollamatest.Start(t)
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, nil))
	ctx := context.Background()
	reg, err := r.client.RegisterBackend(ctx, &discoveryv1.RegisterBackendRequest{Kind: kindOllama, Address: ollama.Addr(), Ttl: durationpb.New(time.Minute)})
	require.NoError(t, err)
	r.waitBackend(t, ollama.Addr(), "registered", healthIs(healthy))
	_, err = r.client.DeregisterBackend(ctx, &discoveryv1.DeregisterBackendRequest{RegistrationId: reg.GetRegistrationId()})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(r.backends(t, false)) == 0 }, 5*time.Second, 50*time.Millisecond,
		"the TTL is a minute; only deregistration explains an empty list now")
}

func TestBadRequestsNameTheField(t *testing.T) {
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, nil))
	ctx := context.Background()
	closed := closedPort(t)
	tests := []struct {
		name  string
		call  func() error
		code  codes.Code
		field string
	}{
		{"register malformed address", func() error {
			_, err := r.client.RegisterBackend(ctx, &discoveryv1.RegisterBackendRequest{Kind: kindOllama, Address: "host:notaport"})
			return err
		}, codes.InvalidArgument, "address"},
		{"register without kind", func() error {
			_, err := r.client.RegisterBackend(ctx, &discoveryv1.RegisterBackendRequest{Address: "127.0.0.1:1"})
			return err
		}, codes.InvalidArgument, "kind"},
		{"register negative ttl", func() error {
			_, err := r.client.RegisterBackend(ctx, &discoveryv1.RegisterBackendRequest{Kind: kindOllama, Address: "127.0.0.1:1", Ttl: durationpb.New(-time.Second)})
			return err
		}, codes.InvalidArgument, "ttl"},
		{"register something that is not a backend", func() error {
			_, err := r.client.RegisterBackend(ctx, &discoveryv1.RegisterBackendRequest{Kind: kindOllama, Address: closed})
			return err
		}, codes.FailedPrecondition, ""},
		{"keepalive without id", func() error {
			_, err := r.client.KeepAlive(ctx, &discoveryv1.KeepAliveRequest{})
			return err
		}, codes.InvalidArgument, "registration_id"},
		{"deregister garbage id", func() error {
			_, err := r.client.DeregisterBackend(ctx, &discoveryv1.DeregisterBackendRequest{RegistrationId: "zz"})
			return err
		}, codes.InvalidArgument, "registration_id"},
		{"probe coordinator kind", func() error {
			_, err := r.client.ProbeBackend(ctx, &discoveryv1.ProbeBackendRequest{Kind: commonv1.BackendKind_BACKEND_KIND_COORDINATOR, Address: "127.0.0.1:1"})
			return err
		}, codes.InvalidArgument, "kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), tt.field)
		})
	}
	require.Empty(t, r.backends(t, false), "nothing invalid may be stored")
}
