package manager

import (
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator/internal/llamaproc"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
	"github.com/sollol/mesh/services/shared/prioq"
)

// Coordinator states, shorter.
const (
	stateNone     = coordinatorv1.CoordinatorState_COORDINATOR_STATE_UNSPECIFIED
	stateStarting = coordinatorv1.CoordinatorState_COORDINATOR_STATE_STARTING
	stateLoading  = coordinatorv1.CoordinatorState_COORDINATOR_STATE_LOADING
	stateReady    = coordinatorv1.CoordinatorState_COORDINATOR_STATE_READY
	stateDraining = coordinatorv1.CoordinatorState_COORDINATOR_STATE_DRAINING
	stateStopped  = coordinatorv1.CoordinatorState_COORDINATOR_STATE_STOPPED
	stateFailed   = coordinatorv1.CoordinatorState_COORDINATOR_STATE_FAILED
)

// stopRequest asks a coordinator's supervisor to stop it.
type stopRequest struct {
	drain  bool // wait for in-flight requests first (bounded by the drain timeout)
	evict  bool // counted as an eviction
	reason string
}

// rebuildRequest asks for the running process to be replaced by a new one.
type rebuildRequest struct {
	reason string
	drain  bool
}

// entry is one model's coordinator on this replica. Every field is guarded by Manager.mu.
type entry struct {
	model string
	path  string
	info  *placement.Model

	// What the next start uses: the largest context per slot asked for so far.
	wantSlotCtx uint32
	parallel    uint32

	state     coordinatorv1.CoordinatorState
	progress  *commonv1.LoadProgress
	place     *placement.Placement // reservation of backends and memory, while held
	proc      *llamaproc.Process
	addr      string
	slotCtx   uint32 // context per slot of the running process
	startedAt time.Time
	lastUsed  time.Time
	inFlight  int
	slotsBusy int                        // leases holding one of the process's slots
	slotQueue prioq.Queue[chan struct{}] // leases waiting for a slot
	restarts  uint32
	lastErr   string
	keepAlive *time.Duration

	running bool   // a supervisor goroutine owns the entry
	err     error  // why the last run failed, for callers that waited on it
	gen     uint64 // counts finished runs, so a waiter knows a failure is news
	stopReq *stopRequest
	rebuild *rebuildRequest // why the running process must be replaced
	wake    chan struct{}

	// elsewhereAt is when another replica was found to own the model (zero: not so).
	elsewhereAt time.Time
	mutex       *concurrency.Mutex   // the etcd lock, while owned
	sess        *concurrency.Session // the session the lock lives in
	runStart    time.Time            // when the current run began (cold-start timing)
	cold        bool                 // the current run has not been ready yet
}

func newEntry(model, path string, info *placement.Model) *entry {
	return &entry{model: model, path: path, info: info, wake: make(chan struct{}, 1), lastUsed: time.Now()}
}

// poke wakes the entry's supervisor without blocking.
func (e *entry) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// holdsResources reports whether the entry counts against backends and the budget.
func (e *entry) holdsResources() bool { return e.place != nil }

// coordinatorLocked describes the entry for the API and for etcd.
func (m *Manager) coordinatorLocked(e *entry) *coordinatorv1.Coordinator {
	c := &coordinatorv1.Coordinator{
		Model:        e.model,
		Address:      e.addr,
		State:        e.state,
		Parallel:     e.parallel,
		InFlight:     uint32(e.inFlight),
		Queued:       uint32(e.slotQueue.Len()),
		Restarts:     e.restarts,
		LastError:    e.lastErr,
		Owner:        m.instance,
		OwnerAddress: *m.address.Load(),
		LastUsed:     timestamppb.New(e.lastUsed),
	}
	if e.place != nil {
		c.RpcBackends = append(c.RpcBackends, e.place.Backends...)
		c.TensorSplit = append(c.TensorSplit, e.place.Split...)
		c.ContextSize = e.place.Context
		c.Parallel = e.place.Parallel
		c.MemoryBytes = e.place.Total
	}
	if e.proc != nil {
		c.Pid = int32(e.proc.PID())
	}
	if !e.startedAt.IsZero() {
		c.StartedAt = timestamppb.New(e.startedAt)
	}
	return c
}

// setProgressLocked records the current load step for everybody waiting.
func (m *Manager) setProgressLocked(e *entry, stage commonv1.LoadStage, fraction float32, msg string) {
	if old := e.progress; old != nil && old.GetStage() == stage && old.GetMessage() == msg &&
		(old.Fraction != nil) == (fraction >= 0) && (fraction < 0 || old.GetFraction() == fraction) {
		// Nothing new: waking every waiter for it would only make them spin.
		return
	}
	p := &commonv1.LoadProgress{Model: e.model, Stage: stage, Message: msg}
	if fraction >= 0 {
		p.Fraction = &fraction
		if e.info != nil && stage == commonv1.LoadStage_LOAD_STAGE_LOADING {
			p.BytesTotal = uint64(e.info.FileSize)
			p.BytesDone = uint64(float64(fraction) * float64(e.info.FileSize))
		}
	}
	e.progress = p
	m.bumpLocked()
}

// stats are the replica's counters since start.
type stats struct {
	starts, restarts, evictions, requests, failures atomic.Uint64

	// guarded by Manager.mu
	coldN                      int
	coldLast, coldSum, coldMax time.Duration
}

func (s *stats) coldStartLocked(d time.Duration) {
	s.coldN++
	s.coldLast = d
	s.coldSum += d
	s.coldMax = max(s.coldMax, d)
}
