package discovery

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/registry"
)

// writeTimeout bounds one etcd write, so an outage costs the writer seconds, not forever.
const writeTimeout = 2 * time.Second

// pendingWrite is the latest state of one backend that etcd does not have yet.
type pendingWrite struct {
	backend *commonv1.Backend // nil: delete the key
	// inPlace updates a self-registered key without touching its lease (the node agent's
	// lease decides how long it lives); otherwise the key goes under discovery's lease.
	inPlace bool
}

// writer takes etcd writes off the tracker's loop: the tracker records the latest state of
// each backend and goes on probing; the writer stores it, retrying with backoff while etcd
// is unreachable. Only the newest state of a backend is ever written.
type writer struct {
	pub      *registry.Publisher[*commonv1.Backend]
	store    *registry.Store[*commonv1.Backend]
	log      *slog.Logger
	counters *counters

	pending map[string]pendingWrite // owned by the tracker loop until handed over in flush
	queue   chan map[string]pendingWrite
}

func newWriter(pub *registry.Publisher[*commonv1.Backend], store *registry.Store[*commonv1.Backend], log *slog.Logger, c *counters) *writer {
	return &writer{pub: pub, store: store, log: log, counters: c, pending: map[string]pendingWrite{}, queue: make(chan map[string]pendingWrite, 1)}
}

// put records a backend's new state; called from the tracker loop.
func (w *writer) put(id string, b *commonv1.Backend, inPlace bool) {
	w.pending[id] = pendingWrite{backend: b, inPlace: inPlace}
	w.handOver()
}

// remove records that a backend's key must go; called from the tracker loop.
func (w *writer) remove(id string) {
	w.pending[id] = pendingWrite{}
	w.handOver()
}

// handOver passes the pending writes to the writer goroutine, merging with any it has not
// taken yet, without ever blocking the tracker.
func (w *writer) handOver() {
	select {
	case older := <-w.queue:
		for id, pw := range w.pending {
			older[id] = pw
		}
		w.pending = older
	default:
	}
	w.queue <- w.pending
	w.pending = map[string]pendingWrite{}
}

func (w *writer) run(ctx context.Context) {
	var backlog map[string]pendingWrite
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	wait := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-w.queue:
			if backlog == nil {
				backlog = batch
			} else {
				maps.Copy(backlog, batch)
			}
		case <-retry.C:
		}
		if len(backlog) == 0 {
			continue
		}
		if w.flush(ctx, backlog) {
			wait = 100 * time.Millisecond
			continue
		}
		retry.Reset(wait)
		wait = min(2*wait, 5*time.Second)
	}
}

// flush writes the backlog, removing what succeeded; it stops at the first failure (etcd is
// most likely unreachable) and reports whether everything was written.
func (w *writer) flush(ctx context.Context, backlog map[string]pendingWrite) bool {
	for id, pw := range backlog {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := w.write(wctx, id, pw)
		cancel()
		if err != nil {
			w.log.Warn("etcd write failed; will retry", "id", id, "err", err)
			return false
		}
		delete(backlog, id)
	}
	return true
}

func (w *writer) write(ctx context.Context, id string, pw pendingWrite) error {
	w.counters.writes.Add(1)
	switch {
	case pw.backend == nil:
		return w.pub.Remove(ctx, id)
	case pw.inPlace:
		err := w.store.Put(ctx, id, pw.backend, clientv3.WithIgnoreLease())
		if err != nil && isKeyNotFound(err) {
			return nil // the registration expired meanwhile; nothing to update
		}
		return err
	default:
		return w.pub.Set(ctx, id, pw.backend)
	}
}

func isKeyNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrKeyNotFound)
}
