package manager

import (
	"errors"
	"fmt"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator/internal/llamaproc"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// startFailure is the public error of a start that did not come up.
func (m *Manager) startFailure(e *entry, err error) error {
	var pub *rpcerr.Error
	if errors.As(err, &pub) {
		return err
	}
	var se *llamaproc.StartError
	if errors.As(err, &se) {
		tail := se.Tail
		if len(tail) > 12 {
			tail = tail[len(tail)-12:]
		}
		return &rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "COORDINATOR_START_FAILED",
			Message:  fmt.Sprintf("the coordinator of model %s did not start: %s", e.model, se.Error()),
			Metadata: map[string]string{"exit_status": se.Status, "log_tail": strings.Join(tail, "\n")}}
	}
	return &rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "COORDINATOR_START_FAILED",
		Message: fmt.Sprintf("the coordinator of model %s did not start", e.model), Err: err}
}

// withStartFailure adds to a placement error the start failure that led to it (a backend
// left out because llama-server could not reach it), with its exit status and last lines.
func withStartFailure(err error, se *llamaproc.StartError) error {
	var pub *rpcerr.Error
	if se == nil || !errors.As(err, &pub) {
		return err
	}
	out := *pub
	out.Message += "; before that, " + se.Error()
	out.Metadata = map[string]string{}
	for k, v := range pub.Metadata {
		out.Metadata[k] = v
	}
	tail := se.Tail
	if len(tail) > 12 {
		tail = tail[len(tail)-12:]
	}
	out.Metadata["exit_status"] = se.Status
	out.Metadata["log_tail"] = strings.Join(tail, "\n")
	return &out
}

// markFailed shows a coordinator that is down and will be restarted.
func (m *Manager) markFailed(e *entry, why string) {
	m.mu.Lock()
	e.state = stateFailed
	e.lastErr = why
	m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_QUEUED, -1, "restarting after: "+firstLine(why))
	m.mu.Unlock()
	m.publish(e)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// finish ends a run: the process is already gone; the reservation, the record and the lock
// are released, and waiters learn the outcome.
func (m *Manager) finish(e *entry, state coordinatorv1.CoordinatorState, err error) {
	m.mu.Lock()
	proc := e.proc
	m.mu.Unlock()
	m.retire(e, proc)
	m.unpublish(e)
	m.release(e)
	m.mu.Lock()
	defer m.mu.Unlock()
	if state == stateFailed {
		e.state = stateFailed
		e.err = err
		if err != nil {
			e.lastErr = err.Error()
			m.log.Warn("coordinator failed", "model", e.model, "err", err)
		}
	} else {
		e.state = stateStopped
		m.log.Info("coordinator stopped", "model", e.model)
	}
	e.running = false
	e.place = nil
	e.addr = ""
	e.stopReq = nil
	e.rebuild = nil
	e.progress = nil
	e.gen++
	m.bumpLocked()
}
