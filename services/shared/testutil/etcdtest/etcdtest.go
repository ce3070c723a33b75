// Package etcdtest starts a real embedded etcd for tests: free loopback ports, data under
// t.TempDir(), stopped at the end of the test. It can be stopped and restarted on the same
// ports and data to test how clients ride out an outage.
package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sollol/mesh/services/shared/etcdembed"
	"github.com/sollol/mesh/services/shared/netutil"
)

// Cluster is one embedded etcd member owned by a test.
type Cluster struct {
	t      testing.TB
	cfg    etcdembed.Config
	server *etcdembed.Server
}

// Start launches a member and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Cluster {
	t.Helper()
	clientAddr, err := netutil.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	peerAddr, err := netutil.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, cfg: etcdembed.Config{
		Dir:          t.TempDir(),
		ClientAddr:   clientAddr,
		PeerAddr:     peerAddr,
		StartTimeout: 30 * time.Second,
	}}
	c.Restart()
	t.Cleanup(c.Stop)
	return c
}

// Endpoint is the client host:port.
func (c *Cluster) Endpoint() string { return c.cfg.ClientAddr }

// Stop shuts the member down; clients see it as unreachable. Safe to call twice.
func (c *Cluster) Stop() {
	if c.server != nil {
		c.server.Close()
		c.server = nil
	}
}

// Restart starts the member again on the same ports and data after Stop.
func (c *Cluster) Restart() {
	c.t.Helper()
	if c.server != nil {
		c.t.Fatal("etcdtest: Restart while running")
	}
	s, err := etcdembed.Start(context.Background(), c.cfg)
	if err != nil {
		c.t.Fatalf("etcdtest: %v", err)
	}
	c.server = s
}

// Client returns a client of the member, closed at the end of the test.
func (c *Cluster) Client() *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{c.Endpoint()},
		DialTimeout: 5 * time.Second,
		// Outage tests would otherwise fill the log with the client's retry warnings.
		Logger: zap.NewNop(),
	})
	if err != nil {
		c.t.Fatalf("etcdtest: client: %v", err)
	}
	c.t.Cleanup(func() { _ = cli.Close() })
	return cli
}
