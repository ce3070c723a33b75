// Package lifecycle runs the targets of one process in order and reports their states. It is
// the piece behind `sollol up` and `sollol <target>`: start in dependency order, stop in
// reverse, and answer /readyz from the states it keeps.
package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
)

// State is where a target is in its life.
type State string

// The states, in the order a target passes through them.
const (
	StateNew      State = "new"
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
)

// Service is anything the manager can start and stop.
type Service interface {
	// Name identifies the service in logs and /readyz.
	Name() string
	// Start returns once the service does its job, or with the reason it cannot.
	Start(ctx context.Context) error
	// Stop releases everything Start acquired; ctx bounds how long it may take.
	Stop(ctx context.Context) error
}

// Failer is implemented by services that can fail after a successful Start.
type Failer interface {
	Err() <-chan error
}

// Manager runs services in the order they were added.
type Manager struct {
	log *slog.Logger

	mu       sync.Mutex
	services []Service
	states   map[string]State
	started  []Service
	stopping bool
	failed   chan error
}

// NewManager returns an empty manager.
func NewManager(log *slog.Logger) *Manager {
	return &Manager{log: log, states: map[string]State{}, failed: make(chan error, 1)}
}

// Add appends a service; it starts after those added before it and stops before them.
func (m *Manager) Add(s Service) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.services = append(m.services, s)
	m.states[s.Name()] = StateNew
}

// Start starts every service in order. If one fails, those already started are stopped again
// and the error names the one that failed.
func (m *Manager) Start(ctx context.Context) error {
	for _, s := range m.services {
		m.set(s.Name(), StateStarting)
		if err := s.Start(ctx); err != nil {
			m.set(s.Name(), StateFailed)
			_ = m.Stop(context.WithoutCancel(ctx))
			return fmt.Errorf("start %s: %w", s.Name(), err)
		}
		m.mu.Lock()
		m.started = append(m.started, s)
		m.mu.Unlock()
		m.set(s.Name(), StateRunning)
		if f, ok := s.(Failer); ok {
			go m.watchFailure(s.Name(), f.Err())
		}
	}
	return nil
}

func (m *Manager) watchFailure(name string, errc <-chan error) {
	err, ok := <-errc
	if !ok || err == nil {
		return
	}
	m.set(name, StateFailed)
	select {
	case m.failed <- fmt.Errorf("%s failed: %w", name, err):
	default:
	}
}

// Failed delivers the first failure of a running service; the process should then stop.
func (m *Manager) Failed() <-chan error { return m.failed }

// Stop stops started services in reverse order. Every service gets its turn even if an
// earlier one fails to stop cleanly; the errors are joined.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	// Readiness drops before anything stops, so load balancers move away first.
	m.stopping = true
	started := m.started
	m.started = nil
	m.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		s := started[i]
		m.set(s.Name(), StateStopping)
		if err := s.Stop(ctx); err != nil {
			m.log.Warn("service did not stop cleanly", "component", s.Name(), "err", err)
			errs = append(errs, fmt.Errorf("stop %s: %w", s.Name(), err))
			m.set(s.Name(), StateFailed)
			continue
		}
		m.set(s.Name(), StateStopped)
	}
	return errors.Join(errs...)
}

func (m *Manager) set(name string, st State) {
	m.mu.Lock()
	m.states[name] = st
	m.mu.Unlock()
	m.log.Debug("service state", "component", name, "state", string(st))
}

// TargetState is one row of the readiness report.
type TargetState struct {
	Name  string `json:"name"`
	State State  `json:"state"`
}

// States lists every service and its state, in start order.
func (m *Manager) States() []TargetState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]TargetState, 0, len(m.services))
	for _, s := range m.services {
		out = append(out, TargetState{Name: s.Name(), State: m.states[s.Name()]})
	}
	return out
}

// Ready reports whether every service is running and no stop has begun.
func (m *Manager) Ready() bool {
	m.mu.Lock()
	stopping := m.stopping
	m.mu.Unlock()
	if stopping {
		return false
	}
	for _, st := range m.States() {
		if st.State != StateRunning {
			return false
		}
	}
	return true
}

// ReadyzHandler answers 200 when every service runs and 503 otherwise, with a JSON body
// naming each service and its state.
func (m *Manager) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		body := struct {
			Ready   bool          `json:"ready"`
			Targets []TargetState `json:"targets"`
		}{Ready: m.Ready(), Targets: m.States()}
		w.Header().Set("Content-Type", "application/json")
		if !body.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
}
