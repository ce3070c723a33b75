package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Connect opens an etcd client and proves the cluster answers before returning, so a wrong
// --etcd-endpoints fails at start with the address in the message instead of later in a
// watch that never delivers.
func Connect(ctx context.Context, endpoints []string, timeout time.Duration) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("etcd endpoints: none configured")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: timeout,
		// The client logs every retry at warn level; during an outage that is a flood. The
		// mesh reports etcd trouble itself, once, at its boundaries.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(endpoints, ","), err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A linearizable read needs a quorum, so it proves more than an open socket.
	if _, err := cli.Get(pingCtx, Root+"ping"); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("etcd unreachable at %s: %w", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}
