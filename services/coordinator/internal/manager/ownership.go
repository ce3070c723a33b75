package manager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/coordinator/internal/llamaproc"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// lockPrefix is where replicas lock models: the holder owns the model's coordinator.
const lockPrefix = registry.Root + "locks/coordinator/"

// errElsewhere means another replica holds the model's lock.
var errElsewhere = errors.New("another replica owns the model")

// ownership holds the etcd session behind this replica's model locks. The session's lease is
// recorded in the state file, so a run after a crash can revoke it and free the locks at once
// instead of after the TTL.
type ownership struct {
	m *Manager

	mu   sync.Mutex
	sess *concurrency.Session
}

func newOwnership(m *Manager) *ownership { return &ownership{m: m} }

// session returns a live session, creating one when there is none or it was lost.
func (o *ownership) session(ctx context.Context) (*concurrency.Session, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sess != nil {
		select {
		case <-o.sess.Done():
			o.sess = nil
		default:
			return o.sess, nil
		}
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ttl := max(int64(o.m.cfg.LeaseTTL/time.Second), 1)
	lease, err := o.m.etcd.Grant(gctx, ttl)
	if err != nil {
		return nil, err
	}
	// The keep-alive runs on the manager's context, not on this call's.
	sess, err := concurrency.NewSession(o.m.etcd, concurrency.WithLease(lease.ID), concurrency.WithContext(o.m.ctx))
	if err != nil {
		return nil, err
	}
	o.sess = sess
	if err := o.m.state.Update(func(s *llamaproc.State) { s.SessionLease = int64(lease.ID) }); err != nil {
		o.m.log.Warn("cannot record the etcd session in the state file", "err", err)
	}
	return sess, nil
}

// claim takes model's lock; errElsewhere when another replica holds it.
func (o *ownership) claim(ctx context.Context, model string) (*concurrency.Mutex, *concurrency.Session, error) {
	sess, err := o.session(ctx)
	if err != nil {
		return nil, nil, err
	}
	mu := concurrency.NewMutex(sess, lockPrefix+recordKey(model))
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := mu.TryLock(tctx); err != nil {
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, nil, errElsewhere
		}
		return nil, nil, err
	}
	return mu, sess, nil
}

// close ends the session, which deletes every lock still held. The manager's context is
// already cancelled then, so the revoke gets its own deadline.
func (o *ownership) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sess == nil {
		return
	}
	o.sess.Orphan()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := o.m.etcd.Revoke(ctx, o.sess.Lease()); err != nil {
		o.m.log.Warn("cannot revoke the ownership session; its locks expire with the TTL", "err", err)
	}
	o.sess = nil
}

// claim makes this replica the model's owner, or tells the waiters it is not.
func (m *Manager) claim(e *entry) bool {
	mu, sess, err := m.owner.claim(m.ctx, e.model)
	if err == nil {
		m.mu.Lock()
		e.mutex, e.sess = mu, sess
		m.mu.Unlock()
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e.running = false
	if errors.Is(err, errElsewhere) {
		e.state = stateNone
		e.elsewhereAt = time.Now()
		m.bumpLocked()
		return false
	}
	e.state = stateFailed
	e.err = &rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "ETCD_UNAVAILABLE",
		Message: fmt.Sprintf("cannot take ownership of model %s in etcd, so cannot start its coordinator", e.model), Err: err}
	e.lastErr = e.err.Error()
	e.gen++
	m.bumpLocked()
	return false
}

// release gives up the model's lock.
func (m *Manager) release(e *entry) {
	m.mu.Lock()
	mu := e.mutex
	e.mutex, e.sess = nil, nil
	m.mu.Unlock()
	if mu == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := mu.Unlock(ctx); err != nil {
		m.log.Warn("cannot release a model lock in etcd; it expires with the session", "model", e.model, "err", err)
	}
}

// publish writes the entry's record, so routers and other replicas find the coordinator.
func (m *Manager) publish(e *entry) {
	m.mu.Lock()
	owned := e.mutex != nil
	c := m.coordinatorLocked(e)
	m.mu.Unlock()
	if !owned {
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, 3*time.Second)
	defer cancel()
	if err := m.pub.Set(ctx, recordKey(e.model), c); err != nil {
		m.log.Debug("coordinator record kept for later", "model", e.model, "err", err)
	}
}

// unpublish removes the entry's record.
func (m *Manager) unpublish(e *entry) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := m.pub.Remove(ctx, recordKey(e.model)); err != nil {
		m.log.Warn("cannot remove a coordinator record; it expires with its lease", "model", e.model, "err", err)
	}
}

// forgetPrevious removes what a previous run of this replica left in etcd: its session (so its
// locks go at once) and its records.
func (m *Manager) forgetPrevious(ctx context.Context, prev llamaproc.State) {
	if prev.Instance == "" {
		return
	}
	if prev.SessionLease != 0 {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := m.etcd.Revoke(rctx, clientv3.LeaseID(prev.SessionLease))
		cancel()
		if err == nil {
			m.log.Info("revoked the etcd session of a previous run", "instance", prev.Instance)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	items, _, _, err := m.recStore.List(lctx)
	if err != nil {
		m.log.Warn("cannot list coordinator records to clean up a previous run", "err", err)
		return
	}
	for id, rec := range items {
		if rec.GetOwner() == prev.Instance {
			if err := m.recStore.Delete(lctx, id); err == nil {
				m.log.Info("removed a coordinator record of a previous run", "model", rec.GetModel())
			}
		}
	}
}

// reclaim re-takes the locks of coordinators whose session was lost (an etcd outage longer
// than the TTL). If another replica took a model meanwhile, this replica stops its own
// coordinator of it, so there is never more than one.
func (m *Manager) reclaim() {
	m.mu.Lock()
	var lost []*entry
	for _, e := range m.entries {
		if e.sess == nil {
			continue
		}
		select {
		case <-e.sess.Done():
			lost = append(lost, e)
		default:
		}
	}
	m.mu.Unlock()
	for _, e := range lost {
		mu, sess, err := m.owner.claim(m.ctx, e.model)
		m.mu.Lock()
		switch {
		case err == nil:
			e.mutex, e.sess = mu, sess
			m.log.Info("model lock re-taken after the etcd session was lost", "model", e.model)
		case errors.Is(err, errElsewhere):
			e.mutex, e.sess = nil, nil
			m.requestStopLocked(e, false, false, "another replica took the model while etcd was unreachable")
		}
		m.mu.Unlock()
		if err == nil {
			m.publish(e)
		}
	}
}

// AwaitOwnerGone waits until the record naming addr as model's owner is gone or names another
// owner, as happens once a dead owner's lease expires, for at most the lease TTL plus a
// margin. A caller whose forward found the owner unreachable then tries again, and takes the
// model over itself, instead of failing for as long as the dead owner's record lives.
func (m *Manager) AwaitOwnerGone(ctx context.Context, model, addr string, progress func(*commonv1.LoadProgress) error) error {
	limit := m.cfg.LeaseTTL + 5*time.Second
	if progress != nil {
		if err := progress(&commonv1.LoadProgress{Model: model, Stage: commonv1.LoadStage_LOAD_STAGE_QUEUED,
			Message: fmt.Sprintf("the replica that owns %s (%s) does not answer; waiting up to %v for its ownership to expire", model, addr, limit)}); err != nil {
			return err
		}
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if rec := m.remoteOwner(model); rec == nil || rec.GetOwnerAddress() != addr {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return rpcerr.New(rpcerr.KindUnavailable, "OWNER_UNREACHABLE",
				"the replica that owns model %s (%s) does not answer, and its ownership did not expire within %v", model, addr, limit)
		case <-tick.C:
		}
	}
}
