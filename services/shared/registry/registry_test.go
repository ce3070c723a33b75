package registry_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

var codec = registry.ProtoJSON(func() *wrapperspb.StringValue { return &wrapperspb.StringValue{} })

const prefix = registry.Root + "test/"

func newClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := registry.Connect(context.Background(), []string{endpoint}, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func keyExists(t *testing.T, cli *clientv3.Client, key string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	require.NoError(t, err)
	return len(resp.Kvs) == 1
}

func TestPublisherKeyDisappearsWhenLeaseIsNotRenewed(t *testing.T) {
	cluster := etcdtest.Start(t)
	observer := newClient(t, cluster.Endpoint())

	// The publisher gets its own client: closing it stops the keep-alive without revoking,
	// which is what a crashed process looks like to etcd.
	pubCli, err := registry.Connect(context.Background(), []string{cluster.Endpoint()}, 5*time.Second)
	require.NoError(t, err)
	pub := registry.NewPublisher(registry.NewStore(pubCli, prefix, codec), 2*time.Second, slog.Default())
	require.NoError(t, pub.Start(context.Background()))
	require.NoError(t, pub.Set(context.Background(), "node-a", wrapperspb.String("a")))
	require.True(t, keyExists(t, observer, prefix+"node-a"))

	require.NoError(t, pubCli.Close())
	defer pub.Stop()

	// Still there right after the crash (the lease is valid for its TTL) ...
	require.True(t, keyExists(t, observer, prefix+"node-a"))
	// ... and gone once the TTL passes without renewal.
	require.Eventually(t, func() bool { return !keyExists(t, observer, prefix+"node-a") },
		15*time.Second, 100*time.Millisecond, "key outlived its unrenewed lease")
}

func TestPublisherStopDeletesKeysAtOnce(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := newClient(t, cluster.Endpoint())
	pub := registry.NewPublisher(registry.NewStore(cli, prefix, codec), time.Minute, slog.Default())
	require.NoError(t, pub.Start(context.Background()))
	require.NoError(t, pub.Set(context.Background(), "node-a", wrapperspb.String("a")))
	require.True(t, keyExists(t, cli, prefix+"node-a"))

	pub.Stop()
	// The TTL is a minute, so only the revoke on Stop can explain the key vanishing now.
	require.False(t, keyExists(t, cli, prefix+"node-a"))
}

func TestPublisherRewritesAfterLosingItsLease(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := newClient(t, cluster.Endpoint())
	pub := registry.NewPublisher(registry.NewStore(cli, prefix, codec), 5*time.Second, slog.Default())
	require.NoError(t, pub.Start(context.Background()))
	defer pub.Stop()
	require.NoError(t, pub.Set(context.Background(), "node-a", wrapperspb.String("a")))

	resp, err := cli.Get(context.Background(), prefix+"node-a")
	require.NoError(t, err)
	lost := clientv3.LeaseID(resp.Kvs[0].Lease)
	// Revoking from outside is how a lease dies when etcd expired it during a long outage.
	_, err = cli.Revoke(context.Background(), lost)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		resp, err := cli.Get(context.Background(), prefix+"node-a")
		return err == nil && len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) != lost
	}, 15*time.Second, 50*time.Millisecond, "publisher did not re-publish under a new lease")
}

func TestSnapshotSeesAddUpdateDelete(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := newClient(t, cluster.Endpoint())
	store := registry.NewStore(cli, prefix, codec)
	ctx := context.Background()
	require.NoError(t, store.Put(ctx, "before", wrapperspb.String("0")))

	snap := registry.NewSnapshot(store, slog.Default())
	require.NoError(t, snap.Start(ctx))
	defer snap.Stop()

	items, _, events, cancel := snap.Subscribe(16)
	defer cancel()
	require.Equal(t, "0", items["before"].GetValue(), "the first list includes existing keys")

	require.NoError(t, store.Put(ctx, "n1", wrapperspb.String("v1")))
	require.NoError(t, store.Put(ctx, "n1", wrapperspb.String("v2")))
	require.NoError(t, store.Delete(ctx, "n1"))

	want := []struct {
		typ   registry.EventType
		value string
	}{{registry.EventPut, "v1"}, {registry.EventPut, "v2"}, {registry.EventDelete, "v2"}}
	for i, w := range want {
		select {
		case ev := <-events:
			require.Equal(t, w.typ, ev.Type, "event %d", i)
			require.Equal(t, "n1", ev.ID, "event %d", i)
			require.Equal(t, w.value, ev.Value.GetValue(), "event %d", i)
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d never arrived", i)
		}
	}
	_, ok := snap.Get("n1")
	require.False(t, ok)
}

func TestSnapshotServesWhileEtcdIsDownAndCatchesUp(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := newClient(t, cluster.Endpoint())
	store := registry.NewStore(cli, prefix, codec)
	ctx := context.Background()
	require.NoError(t, store.Put(ctx, "a", wrapperspb.String("1")))

	snap := registry.NewSnapshot(store, slog.Default())
	require.NoError(t, snap.Start(ctx))
	defer snap.Stop()

	cluster.Stop()
	// With etcd gone the mirror still answers from memory.
	v, ok := snap.Get("a")
	require.True(t, ok)
	require.Equal(t, "1", v.GetValue())
	require.Len(t, snap.Items(), 1)

	cluster.Restart()
	writer := newClient(t, cluster.Endpoint())
	writerStore := registry.NewStore(writer, prefix, codec)
	require.NoError(t, writerStore.Put(ctx, "b", wrapperspb.String("2")))
	require.NoError(t, writerStore.Delete(ctx, "a"))

	require.Eventually(t, func() bool {
		items := snap.Items()
		_, hasA := items["a"]
		return !hasA && items["b"].GetValue() == "2"
	}, 20*time.Second, 50*time.Millisecond, "snapshot did not catch up after etcd restarted")
}

func TestServiceRegistrationIsResolvable(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := newClient(t, cluster.Endpoint())
	ctx := context.Background()
	reg, err := registry.RegisterService(ctx, cli, "ollamapool", "127.0.0.1:1234", 5*time.Second, slog.Default())
	require.NoError(t, err)

	resp, err := cli.Get(ctx, registry.ServiceTarget("ollamapool")+"/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Contains(t, string(resp.Kvs[0].Value), "127.0.0.1:1234")

	reg.Stop()
	resp, err = cli.Get(ctx, registry.ServiceTarget("ollamapool")+"/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs, "deregistration must remove the instance at once")
}

func TestConnectFailsFastOnUnreachableEtcd(t *testing.T) {
	_, err := registry.Connect(context.Background(), []string{"127.0.0.1:1"}, time.Second)
	require.ErrorContains(t, err, "etcd unreachable at 127.0.0.1:1")
}
