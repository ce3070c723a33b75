package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// NewClient opens an etcd client without waiting for the cluster; use Ping to prove it
// answers. Creating the client first lets a process hand it to every service before an
// embedded etcd has even started.
func NewClient(endpoints []string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("etcd endpoints: none configured")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints,
		// The client logs every retry at warn level; during an outage that is a flood. The
		// mesh reports etcd trouble itself, once, at its boundaries.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}

// Ping proves the cluster answers within timeout, so a wrong --etcd-endpoints fails at start
// with the address in the message instead of later in a watch that never delivers.
func Ping(ctx context.Context, cli *clientv3.Client, timeout time.Duration) error {
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A linearizable read needs a quorum, so it proves more than an open socket.
	if _, err := cli.Get(pingCtx, Root+"ping"); err != nil {
		return fmt.Errorf("etcd unreachable at %s: %w", strings.Join(cli.Endpoints(), ","), err)
	}
	return nil
}

// Connect is NewClient followed by Ping.
func Connect(ctx context.Context, endpoints []string, timeout time.Duration) (*clientv3.Client, error) {
	cli, err := NewClient(endpoints)
	if err != nil {
		return nil, err
	}
	if err := Ping(ctx, cli, timeout); err != nil {
		_ = cli.Close()
		return nil, err
	}
	return cli, nil
}
