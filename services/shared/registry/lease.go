package registry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// leaseKeeper holds one etcd lease alive for as long as it runs. Whenever it obtains a new
// lease (at start, and after the old one was lost in an outage longer than its TTL) it calls
// rewrite so that every key its owner wants exists again under the new lease. This is the one
// place where the mesh handles lease loss; Publisher and ServiceRegistration build on it.
type leaseKeeper struct {
	cli     *clientv3.Client
	ttl     time.Duration
	log     *slog.Logger
	rewrite func(ctx context.Context, lease clientv3.LeaseID) error

	mu      sync.Mutex
	session *concurrency.Session
	// written is closed after the first successful rewrite.
	written chan struct{}
	once    sync.Once
}

func newLeaseKeeper(cli *clientv3.Client, ttl time.Duration, log *slog.Logger,
	rewrite func(ctx context.Context, lease clientv3.LeaseID) error) *leaseKeeper {
	return &leaseKeeper{cli: cli, ttl: ttl, log: log, rewrite: rewrite, written: make(chan struct{})}
}

// lease is the current lease, or false while none is held (etcd unreachable).
func (k *leaseKeeper) lease() (clientv3.LeaseID, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.session == nil {
		return 0, false
	}
	return k.session.Lease(), true
}

// run keeps a lease until ctx ends, then revokes it so the owner's keys vanish at once instead
// of after the TTL.
func (k *leaseKeeper) run(ctx context.Context) {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		sess, err := k.newSession(ctx)
		if err != nil {
			k.log.Warn("etcd lease unavailable, retrying", "err", err)
			backoff.wait(ctx)
			continue
		}
		k.mu.Lock()
		k.session = sess
		k.mu.Unlock()

		if !k.rewriteUntilDone(ctx, sess) {
			backoff.wait(ctx)
		} else {
			backoff.reset()
			select {
			case <-sess.Done():
				k.log.Warn("etcd lease lost, re-registering", "lease", int64(sess.Lease()))
			case <-ctx.Done():
			}
		}
		k.mu.Lock()
		k.session = nil
		k.mu.Unlock()
		sess.Orphan()
		if ctx.Err() != nil {
			k.revoke(sess.Lease())
		}
	}
}

func (k *leaseKeeper) newSession(ctx context.Context) (*concurrency.Session, error) {
	grantCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ttl := int(k.ttl / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	// concurrency.Session grants the lease with grantCtx but keeps it alive with WithContext's
	// context, so the keep-alive outlives this call.
	lease, err := k.cli.Grant(grantCtx, int64(ttl))
	if err != nil {
		return nil, err
	}
	return concurrency.NewSession(k.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
}

// rewriteUntilDone retries the owner's rewrite under sess until it succeeds, the lease is lost
// or ctx ends. It reports whether the rewrite succeeded.
func (k *leaseKeeper) rewriteUntilDone(ctx context.Context, sess *concurrency.Session) bool {
	backoff := newBackoff(100*time.Millisecond, 2*time.Second)
	for {
		writeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := k.rewrite(writeCtx, sess.Lease())
		cancel()
		if err == nil {
			k.once.Do(func() { close(k.written) })
			return true
		}
		k.log.Warn("etcd write under lease failed, retrying", "err", err)
		select {
		case <-sess.Done():
			return false
		case <-ctx.Done():
			return false
		default:
		}
		backoff.wait(ctx)
	}
}

// revoke ends the lease when the keeper stops, deleting its keys at once. The run context is
// already cancelled then, so the call gets its own short deadline.
func (k *leaseKeeper) revoke(lease clientv3.LeaseID) {
	revokeCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := k.cli.Revoke(revokeCtx, lease); err != nil {
		k.log.Warn("etcd lease revoke failed; keys expire with the TTL", "err", err)
	}
}

// waitWritten blocks until the first rewrite succeeded or ctx ends.
func (k *leaseKeeper) waitWritten(ctx context.Context) error {
	select {
	case <-k.written:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
