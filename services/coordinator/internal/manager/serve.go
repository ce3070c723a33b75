package manager

import (
	"fmt"
	"strings"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/coordinator/internal/llamaproc"
)

// outcome is how serving a ready coordinator ended.
type outcome int

const (
	outcomeStop    outcome = iota // asked to stop: the run ends
	outcomeRebuild                // replaced by a new process (lost backend, larger context)
	outcomeCrash                  // the process died: restart after a pause
)

// serve watches a READY coordinator until it crashes or is asked to stop or rebuild.
func (m *Manager) serve(e *entry, proc *llamaproc.Process) outcome {
	for {
		m.mu.Lock()
		req, rebuild := e.stopReq, e.rebuild
		m.mu.Unlock()
		switch {
		case req != nil || m.ctx.Err() != nil:
			if req != nil && req.drain && m.ctx.Err() == nil {
				m.drain(e, req.reason)
			}
			m.retire(e, proc)
			return outcomeStop
		case rebuild != nil:
			if rebuild.drain {
				m.drain(e, rebuild.reason)
			}
			m.log.Info("rebuilding coordinator", "model", e.model, "reason", rebuild.reason)
			m.retire(e, proc)
			m.mu.Lock()
			e.rebuild = nil
			e.state = stateStarting
			m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_QUEUED, -1, "rebuilding: "+rebuild.reason)
			m.mu.Unlock()
			return outcomeRebuild
		}
		select {
		case <-proc.Exited():
			m.crashed(e, proc)
			return outcomeCrash
		case <-e.wake:
		case <-m.ctx.Done():
		}
	}
}

// crashed records a coordinator whose process died while serving.
func (m *Manager) crashed(e *entry, proc *llamaproc.Process) {
	status, tail := proc.ExitStatus(), proc.Tail()
	if len(tail) > 8 {
		tail = tail[len(tail)-8:]
	}
	m.retire(e, proc)
	why := fmt.Sprintf("llama-server %s; last log lines:\n%s", status, strings.Join(tail, "\n"))
	if proc.Findings().BackendCrashed {
		why = "an rpc backend died under it: " + why
	}
	m.stats.restarts.Add(1)
	m.mu.Lock()
	e.restarts++
	m.mu.Unlock()
	m.log.Warn("coordinator crashed; restarting", "model", e.model, "pid", proc.PID(), "status", status)
	m.markFailed(e, why)
}

// drain stops new requests from reaching the coordinator and waits, bounded, for those in
// flight to finish.
func (m *Manager) drain(e *entry, reason string) {
	m.mu.Lock()
	e.state = stateDraining
	m.bumpLocked()
	m.mu.Unlock()
	m.publish(e)
	deadline := time.NewTimer(m.cfg.DrainTimeout)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		n, ch := e.inFlight, m.changed
		m.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-e.wake:
		case <-m.ctx.Done():
			return
		case <-deadline.C:
			m.log.Warn("drain timed out; stopping with requests in flight", "model", e.model, "in_flight", n,
				"timeout", m.cfg.DrainTimeout, "reason", reason)
			return
		}
	}
}

// requestStopLocked asks an entry's supervisor to stop it. A stop without draining overrides
// one with.
func (m *Manager) requestStopLocked(e *entry, drain, evict bool, reason string) {
	if !e.running {
		return
	}
	if e.stopReq != nil && (!e.stopReq.drain || drain) {
		return
	}
	if evict && e.stopReq == nil {
		m.stats.evictions.Add(1)
	}
	e.stopReq = &stopRequest{drain: drain, evict: evict, reason: reason}
	m.log.Info("stopping coordinator", "model", e.model, "reason", reason, "drain", drain)
	e.poke()
}

// requestRebuildLocked asks for the process to be replaced. A larger context is waited for
// politely (drain); a lost backend has broken the process already, so its requests cannot
// finish anyway.
func (m *Manager) requestRebuildLocked(e *entry, reason string, drain bool) {
	if !e.running || e.rebuild != nil || e.stopReq != nil {
		return
	}
	e.rebuild = &rebuildRequest{reason: reason, drain: drain}
	e.poke()
}
