package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/coordinator/internal/llamaproc"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
	"github.com/sollol/mesh/services/shared/netutil"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// errStopRequested ends a run that was asked to stop while it was starting.
var errStopRequested = errors.New("stop requested")

// maxQuickRetries bounds starts retried at once because the log named the cause (an
// unreachable rpc backend, a port taken meanwhile).
const maxQuickRetries = 4

// supervise is one run of an entry: claim ownership, place, start, wait until ready, serve
// until asked to stop, and restart after crashes. It ends with the entry STOPPED or FAILED.
func (m *Manager) supervise(e *entry) {
	defer m.wg.Done()
	if !m.claim(e) {
		return
	}
	backoff := m.cfg.RestartBackoff
	failures, quick := 0, 0
	var lastStart *llamaproc.StartError // a start the log explained, retried elsewhere
	for {
		if m.stopWanted(e) {
			m.finish(e, stateStopped, nil)
			return
		}
		pl, err := m.place(e)
		if err != nil {
			if errors.Is(err, errStopRequested) {
				m.finish(e, stateStopped, nil)
			} else {
				m.finish(e, stateFailed, withStartFailure(err, lastStart))
			}
			return
		}
		proc, err := m.launch(e, pl)
		if err != nil {
			m.finish(e, stateFailed, err)
			return
		}
		err = m.awaitReady(e, proc)
		if err == nil {
			failures, quick, backoff = 0, 0, m.cfg.RestartBackoff
			switch m.serve(e, proc) {
			case outcomeStop:
				m.finish(e, stateStopped, nil)
				return
			case outcomeRebuild:
				continue
			case outcomeCrash:
				if !m.pause(e, backoff) {
					m.finish(e, stateStopped, nil)
					return
				}
				backoff = min(2*backoff, m.cfg.RestartBackoffMax)
				continue
			}
		}
		m.retire(e, proc)
		if errors.Is(err, errStopRequested) {
			m.finish(e, stateStopped, nil)
			return
		}
		var se *llamaproc.StartError
		if errors.As(err, &se) && quick < maxQuickRetries && (len(se.Findings.Unreachable) > 0 || se.Findings.PortInUse) {
			// The log named the cause: leave out the dead backend (or take another port) and
			// try again at once.
			quick++
			lastStart = se
			m.suspect(e, se.Findings.Unreachable)
			continue
		}
		public := m.startFailure(e, err)
		m.mu.Lock()
		cold := e.cold
		m.mu.Unlock()
		failures++
		if cold || failures > m.cfg.MaxRestarts {
			// A first start that fails is reported to its callers, not retried behind their
			// backs; a coordinator that keeps failing to come back is given up on.
			m.finish(e, stateFailed, public)
			return
		}
		m.markFailed(e, public.Error())
		if !m.pause(e, backoff) {
			m.finish(e, stateStopped, nil)
			return
		}
		backoff = min(2*backoff, m.cfg.RestartBackoffMax)
	}
}

// stopWanted reports whether the run should end.
func (m *Manager) stopWanted(e *entry) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.stopReq != nil || m.ctx.Err() != nil
}

// pause waits before a restart; false when asked to stop meanwhile.
func (m *Manager) pause(e *entry, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return false
		case <-e.wake:
			if m.stopWanted(e) {
				return false
			}
		case <-t.C:
			return !m.stopWanted(e)
		}
	}
}

// launch starts llama-server for the placement.
func (m *Manager) launch(e *entry, pl *placement.Placement) (*llamaproc.Process, error) {
	port, err := netutil.FreeLoopbackPort()
	if err != nil {
		return nil, err
	}
	spec := llamaproc.Spec{
		Binary: m.cfg.Binary, Model: e.path, RPC: pl.Backends, Split: pl.Split,
		Context: pl.Context, Parallel: pl.Parallel, GPULayers: m.cfg.GPULayers, Threads: m.cfg.Threads,
		Host: m.cfg.Host, Port: port, Extra: m.cfg.ExtraArgs,
		LogPath: filepath.Join(m.cfg.DataDir, "logs", recordKey(e.model)+".log"),
		OnEvent: func(ev llamaproc.Event) { m.onEvent(e, ev) },
		Log:     m.log,
	}
	m.mu.Lock()
	e.state = stateStarting
	m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_STARTING, -1,
		fmt.Sprintf("starting llama-server over %d rpc backends (%s)", len(pl.Backends), strings.Join(pl.Backends, ", ")))
	m.mu.Unlock()
	proc, err := m.launcher.Start(spec)
	if err != nil {
		return nil, &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "LLAMA_SERVER_UNAVAILABLE",
			Message: fmt.Sprintf("cannot run llama-server %q; set coordinator.llama-server to its path", m.cfg.Binary), Err: err}
	}
	if err := m.state.AddProcess(proc.Record(e.model)); err != nil {
		m.log.Warn("cannot record a llama-server in the state file", "pid", proc.PID(), "err", err)
	}
	advertise := m.cfg.AdvertiseHost
	if advertise == "" {
		advertise = m.cfg.Host
	}
	m.mu.Lock()
	e.proc = proc
	e.addr = net.JoinHostPort(advertise, strconv.Itoa(port))
	e.startedAt = time.Now()
	e.slotCtx = pl.Context / max(pl.Parallel, 1)
	m.mu.Unlock()
	m.publish(e)
	m.log.Info("llama-server started", "model", e.model, "pid", proc.PID(), "addr", spec.Addr(),
		"rpc", strings.Join(pl.Backends, ","), "context", pl.Context, "parallel", pl.Parallel)
	return proc, nil
}

// dialAddr is where this replica reaches a local llama-server: a wildcard listen host is
// reached over loopback.
func (m *Manager) dialAddr(e *entry) string {
	host, port, err := net.SplitHostPort(e.addr)
	if err != nil {
		return e.addr
	}
	if ip := net.ParseIP(m.cfg.Host); m.cfg.Host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if m.cfg.AdvertiseHost != "" {
		return net.JoinHostPort(m.cfg.Host, port)
	}
	return net.JoinHostPort(host, port)
}

// onEvent turns the process's log into progress, until it is ready.
func (m *Manager) onEvent(e *entry, ev llamaproc.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.state != stateStarting && e.state != stateLoading {
		return
	}
	if ev.Stage == commonv1.LoadStage_LOAD_STAGE_LOADING {
		e.state = stateLoading
	}
	m.setProgressLocked(e, ev.Stage, ev.Fraction, ev.Message)
}

// awaitReady waits for GET /health, bounded by a timeout that grows with the model's size,
// and marks the entry READY.
func (m *Manager) awaitReady(e *entry, proc *llamaproc.Process) error {
	gib := float64(e.info.FileSize) / (1 << 30)
	timeout := m.cfg.HealthTimeout + time.Duration(gib*float64(m.cfg.HealthPerGiB))
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-e.wake:
				if m.stopWanted(e) {
					cancel()
					return
				}
			}
		}
	}()
	if err := proc.WaitReady(ctx, timeout, m.http); err != nil {
		if ctx.Err() != nil {
			return errStopRequested
		}
		return err
	}
	m.mu.Lock()
	e.state = stateReady
	e.lastErr = ""
	m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_READY, 1, "ready at "+e.addr)
	if e.cold {
		e.cold = false
		m.stats.starts.Add(1)
		m.stats.coldStartLocked(time.Since(e.runStart))
	}
	m.mu.Unlock()
	m.publish(e)
	m.log.Info("coordinator ready", "model", e.model, "addr", e.addr, "pid", proc.PID())
	return nil
}

// retire stops a process that is no longer wanted (or already dead) and forgets it.
func (m *Manager) retire(e *entry, proc *llamaproc.Process) {
	if proc == nil {
		return
	}
	proc.Stop(m.cfg.StopTimeout)
	if err := m.state.RemoveProcess(proc.PID()); err != nil {
		m.log.Warn("cannot update the state file", "err", err)
	}
	m.mu.Lock()
	if e.proc == proc {
		e.proc = nil
	}
	m.mu.Unlock()
}
