package registry

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Publisher owns a set of values that should exist in etcd for as long as the publisher runs:
// each is written under the publisher's lease, so when the process dies or stops renewing,
// etcd deletes them after the TTL. It remembers what it published, so after an outage that
// cost it its lease it writes everything again under a new one.
type Publisher[T any] struct {
	store  *Store[T]
	keeper *leaseKeeper

	mu      sync.Mutex
	desired map[string]T

	cancel context.CancelFunc
	done   chan struct{}
}

// NewPublisher returns a stopped publisher; call Start.
func NewPublisher[T any](store *Store[T], ttl time.Duration, log *slog.Logger) *Publisher[T] {
	p := &Publisher[T]{store: store, desired: map[string]T{}}
	p.keeper = newLeaseKeeper(store.cli, ttl, log, p.writeAll)
	return p
}

// Start obtains a lease and keeps it alive in the background until Stop. It returns once the
// lease is held, or with ctx's error if etcd does not answer in time.
func (p *Publisher[T]) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		p.keeper.run(runCtx)
	}()
	if err := p.keeper.waitWritten(ctx); err != nil {
		p.Stop()
		return fmt.Errorf("registry: publisher under %s: %w", p.store.prefix, err)
	}
	return nil
}

// Stop revokes the lease, which deletes every published key at once, and waits for the
// keep-alive to end.
func (p *Publisher[T]) Stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
}

// Set publishes id's value. The value is remembered even when the write fails (etcd down): it
// is written again as soon as a lease is held, so callers need not retry.
func (p *Publisher[T]) Set(ctx context.Context, id string, v T) error {
	p.mu.Lock()
	p.desired[id] = v
	p.mu.Unlock()
	lease, ok := p.keeper.lease()
	if !ok {
		return fmt.Errorf("registry: %s kept for later: no etcd lease now", p.store.Key(id))
	}
	return p.store.Put(ctx, id, v, clientv3.WithLease(lease))
}

// Remove unpublishes id.
func (p *Publisher[T]) Remove(ctx context.Context, id string) error {
	p.mu.Lock()
	delete(p.desired, id)
	p.mu.Unlock()
	return p.store.Delete(ctx, id)
}

func (p *Publisher[T]) writeAll(ctx context.Context, lease clientv3.LeaseID) error {
	p.mu.Lock()
	snapshot := maps.Clone(p.desired)
	p.mu.Unlock()
	for id, v := range snapshot {
		if err := p.store.Put(ctx, id, v, clientv3.WithLease(lease)); err != nil {
			return err
		}
	}
	return nil
}
