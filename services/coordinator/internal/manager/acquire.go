package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
	"github.com/sollol/mesh/services/shared/modelstore"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// Want is what a request needs of a model's coordinator.
type Want struct {
	Model string
	// SlotContext is the context the request needs, in tokens (0: the default).
	SlotContext uint32
	// ContextField names the request field SlotContext came from, for errors.
	ContextField string
	// Parallel is the number of slots (0: the default); it applies when the coordinator
	// starts and is ignored by a running one.
	Parallel uint32
	// KeepAlive, when set, is how long the coordinator stays after this request (0: stop when
	// idle, negative: never stop for idleness).
	KeepAlive *time.Duration
	// NoForward marks a request another replica forwarded here: it is served here or fails,
	// never forwarded again.
	NoForward bool
	// Priority orders requests waiting for a busy coordinator's slots (1–10, higher first).
	Priority int32
}

// Lease is a request's hold on a READY coordinator; Release it when the request ends. While
// any lease is held the coordinator is not stopped for idleness, and an eviction waits.
type Lease struct {
	m *Manager
	e *entry
	// Addr is the coordinator's published HTTP address; Dial is where this replica reaches it.
	Addr, Dial string
	// Cold reports that the request waited for a start; Waited is how long.
	Cold   bool
	Waited time.Duration

	keepAlive *time.Duration
	released  atomic.Bool
	slot      bool // holds one of the coordinator's slots (WaitSlot)
}

// Release ends the request's hold.
func (l *Lease) Release() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	m, e := l.m, l.e
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.slot {
		m.releaseSlotLocked(e)
	}
	e.inFlight--
	e.lastUsed = time.Now()
	// Like Ollama's keep_alive: the latest request decides, and no value means the default.
	e.keepAlive = l.keepAlive
	if e.inFlight == 0 && (e.state == stateDraining || e.stopReq != nil || (e.keepAlive != nil && *e.keepAlive == 0)) {
		if e.keepAlive != nil && *e.keepAlive == 0 && e.stopReq == nil {
			m.requestStopLocked(e, true, true, "keep_alive 0: stop once idle")
		}
		m.bumpLocked()
		e.poke()
	}
}

// Coordinator describes the leased coordinator now.
func (l *Lease) Coordinator() *coordinatorv1.Coordinator {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	return l.m.coordinatorLocked(l.e)
}

// Crashed reports how the leased coordinator's process ended, or "" while it runs: a broken
// stream is explained with it. A dead process is taken out of service at once, so the next
// Acquire waits for the restart instead of reaching the dead address again.
func (l *Lease) Crashed() string {
	l.m.mu.Lock()
	p := l.e.proc
	l.m.mu.Unlock()
	if p == nil {
		return ""
	}
	select {
	case <-p.Exited():
	case <-time.After(200 * time.Millisecond):
		return ""
	}
	l.m.mu.Lock()
	if l.e.proc == p && l.e.state == stateReady {
		l.e.state = stateFailed
		l.m.bumpLocked()
	}
	l.m.mu.Unlock()
	return p.ExitStatus()
}

// Acquire returns a lease on the model's READY coordinator, starting it when needed and
// reporting load progress through progress meanwhile. When another replica owns the model it
// returns that replica's gRPC address instead (forward), unless w.NoForward.
func (m *Manager) Acquire(ctx context.Context, w Want, progress func(*commonv1.LoadProgress) error) (*Lease, string, error) {
	path, info, slotCtx, parallel, err := m.prepare(w)
	if err != nil {
		return nil, "", err
	}
	began := time.Now()
	var sent *commonv1.LoadProgress
	cold := false
	var seenGen uint64
	seen := false
	for {
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			return nil, "", rpcerr.New(rpcerr.KindUnavailable, "SHUTTING_DOWN", "this coordinator-manager replica is shutting down")
		}
		e := m.entries[w.Model]
		if e == nil {
			e = newEntry(w.Model, path, info)
			m.entries[w.Model] = e
		}
		if !seen {
			seenGen, seen = e.gen, true
		}
		idle := !e.running
		if idle {
			if rec := m.remoteOwner(w.Model); rec != nil {
				m.mu.Unlock()
				if w.NoForward {
					return nil, "", rpcerr.New(rpcerr.KindUnavailable, "OWNER_MOVED",
						"model %s is owned by the replica at %s now; try again", w.Model, rec.GetOwnerAddress())
				}
				return nil, rec.GetOwnerAddress(), nil
			}
		}
		switch {
		case idle && e.state == stateFailed && e.gen != seenGen:
			err := e.err
			m.mu.Unlock()
			return nil, "", err
		case idle && !e.elsewhereAt.IsZero() && time.Since(e.elsewhereAt) < 500*time.Millisecond:
			// Another replica holds the lock but has not published yet: wait for its record.
			m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_QUEUED, -1, "another coordinator-manager replica is starting this model")
		case idle:
			m.startRunLocked(e, slotCtx, parallel)
		case e.state == stateReady && e.stopReq == nil && e.rebuild == nil && e.slotCtx >= slotCtx:
			e.inFlight++
			e.lastUsed = time.Now()
			l := &Lease{m: m, e: e, Addr: e.addr, Dial: m.dialAddr(e), Cold: cold, Waited: time.Since(began), keepAlive: w.KeepAlive}
			ready := m.coordinatorLocked(e)
			m.mu.Unlock()
			if cold && progress != nil {
				if err := progress(&commonv1.LoadProgress{Model: w.Model, Stage: commonv1.LoadStage_LOAD_STAGE_READY,
					Message: "ready at " + ready.GetAddress()}); err != nil {
					l.Release()
					return nil, "", err
				}
			}
			return l, "", nil
		case e.state == stateReady && e.slotCtx < slotCtx && e.rebuild == nil:
			e.wantSlotCtx = max(e.wantSlotCtx, slotCtx)
			m.requestRebuildLocked(e, fmt.Sprintf("a request needs a context of %d per slot", slotCtx), true)
		default:
			e.wantSlotCtx = max(e.wantSlotCtx, slotCtx)
		}
		cold = true
		prog := e.progress
		ch := m.changed
		m.mu.Unlock()
		if prog != nil && prog != sent && progress != nil {
			sent = prog
			if err := progress(proto.Clone(prog).(*commonv1.LoadProgress)); err != nil {
				return nil, "", err
			}
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-ch:
		case <-time.After(100 * time.Millisecond):
			// Records of other replicas arrive through etcd, not through m.changed.
		}
	}
}

// startRunLocked launches a supervisor run for an idle entry.
func (m *Manager) startRunLocked(e *entry, slotCtx, parallel uint32) {
	e.running = true
	e.err = nil
	e.elsewhereAt = time.Time{}
	e.stopReq = nil
	e.rebuild = nil
	e.wantSlotCtx = max(e.wantSlotCtx, slotCtx)
	e.parallel = parallel
	e.runStart = time.Now()
	e.cold = true
	e.state = stateStarting
	m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_QUEUED, -1, "starting a coordinator")
	m.wg.Add(1)
	go m.supervise(e)
}

// prepare resolves and sizes the model: its file, its metadata, and the context per slot and
// slots to run it with.
func (m *Manager) prepare(w Want) (string, *placement.Model, uint32, uint32, error) {
	model, err := m.cfg.Resolver.Resolve(w.Model)
	if err != nil {
		var nf *modelstore.NotFoundError
		switch {
		case errors.Is(err, modelstore.ErrBadName):
			return "", nil, 0, 0, rpcerr.InvalidArgument("model", "%q is not a model name", w.Model)
		case errors.As(err, &nf):
			msg := nf.Error()
			if have := m.cfg.Resolver.List(); len(have) > 0 {
				if len(have) > 20 {
					have = append(have[:20], "…")
				}
				msg += "; available: " + strings.Join(have, ", ")
			}
			return "", nil, 0, 0, &rpcerr.Error{Kind: rpcerr.KindNotFound, Reason: "MODEL_NOT_FOUND", Message: msg}
		}
		return "", nil, 0, 0, &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "MODEL_UNREADABLE",
			Message: fmt.Sprintf("model %s cannot be read", w.Model), Err: err}
	}
	info, err := m.inspector.Inspect(model.Path)
	if err != nil {
		return "", nil, 0, 0, &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "MODEL_UNREADABLE",
			Message: fmt.Sprintf("model %s (%s) is not a usable GGUF file", w.Model, model.Path), Err: err}
	}
	slot := w.SlotContext
	if info.MaxContext > 0 && uint64(slot) > info.MaxContext {
		field := w.ContextField
		if field == "" {
			field = "context_size"
		}
		return "", nil, 0, 0, rpcerr.InvalidArgument(field, "%d tokens is more than model %s allows (%d)", slot, w.Model, info.MaxContext)
	}
	if slot == 0 {
		slot = m.cfg.DefaultContext
		if info.MaxContext > 0 && uint64(slot) > info.MaxContext {
			slot = uint32(info.MaxContext)
		}
	}
	parallel := w.Parallel
	if parallel == 0 {
		parallel = m.cfg.Parallel
	}
	return model.Path, info, slot, parallel, nil
}

// remoteOwner returns another live replica's record for model, if any.
func (m *Manager) remoteOwner(model string) *coordinatorv1.Coordinator {
	rec, ok := m.records.Get(recordKey(model))
	if !ok || rec.GetOwner() == m.instance || rec.GetOwnerAddress() == "" || rec.GetOwnerAddress() == *m.address.Load() {
		return nil
	}
	return rec
}
