package llamaservertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sollol/mesh/services/shared/netutil"
	"github.com/sollol/mesh/services/shared/testutil"
)

// Options configures Start.
type Options struct {
	// Model is the GGUF file. Required.
	Model string
	// RPC are the rpc-server addresses.
	RPC []string
	// CtxSize and Parallel are -c and -np; defaults 1024 and 4.
	CtxSize, Parallel int
	// Double are settings only the double has; ignored (with a log line) for the real binary.
	Double DoubleOptions
	// Args are extra arguments for whichever binary runs.
	Args []string
	// StartTimeout bounds the wait for GET /health to answer 200; default 60s.
	StartTimeout time.Duration
	// StopTimeout bounds the wait after SIGTERM before SIGKILL; default 10s.
	StopTimeout time.Duration
}

// Process is a running llama-server.
type Process struct {
	t      testing.TB
	real   bool
	addr   string
	opts   Options
	cmd    *exec.Cmd
	output *testutil.SyncBuffer
	exited chan struct{}

	mu      sync.Mutex
	waitErr error
}

// Start launches llama-server and waits until GET /health answers 200. A cleanup stops it.
func Start(t testing.TB, opts Options) *Process {
	t.Helper()
	p, err := TryStart(t, opts)
	if err != nil {
		t.Fatalf("llamaservertest: %v", err)
	}
	return p
}

// TryStart is Start that returns the failure (the process's exit, or a timeout) instead of
// failing the test, for tests of start failures. The process, if any, is still cleaned up.
func TryStart(t testing.TB, opts Options) (*Process, error) {
	t.Helper()
	if opts.CtxSize == 0 {
		opts.CtxSize = 1024
	}
	if opts.Parallel == 0 {
		opts.Parallel = 4
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	bin, real := Binary(t)
	if real && opts.Double != (DoubleOptions{}) {
		t.Logf("llamaservertest: real llama-server: the double's LoadTime, TokenInterval and CrashAfter are ignored")
	}
	port, err := netutil.FreeLoopbackPort()
	if err != nil {
		return nil, err
	}
	args := append(CommandLine(opts.Model, opts.RPC, opts.CtxSize, opts.Parallel, port), opts.Double.Args(real)...)
	args = append(args, opts.Args...)
	p := &Process{t: t, real: real, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), opts: opts,
		output: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.output
	p.cmd.Stderr = p.output
	p.cmd.SysProcAttr = sysProcAttr()
	fmt.Fprintf(p.output, "--- llamaservertest: %s %s\n", bin, strings.Join(args, " "))
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(p.cleanup)
	if err := p.waitHealthy(); err != nil {
		return p, err
	}
	return p, nil
}

// waitHealthy polls GET /health until 200, the process exits, or StartTimeout passes.
func (p *Process) waitHealthy() error {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(p.opts.StartTimeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("llama-server exited before it was ready (%v):\n%s", p.WaitError(), p.Output())
		default:
		}
		resp, err := client.Get(p.URL() + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("llama-server on %s not ready after %v:\n%s", p.addr, p.opts.StartTimeout, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is the HTTP address, 127.0.0.1:port.
func (p *Process) Addr() string { return p.addr }

// URL is the base URL of the HTTP API.
func (p *Process) URL() string { return "http://" + p.addr }

// Real reports whether this is the real llama.cpp binary.
func (p *Process) Real() bool { return p.real }

// PID is the process id (and process group id).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Output returns everything the process printed so far.
func (p *Process) Output() string { return p.output.String() }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// WaitError is the process's exit error once it has exited (an *exec.ExitError for a
// non-zero status or a signal).
func (p *Process) WaitError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// ExitStatus is the shell's view of how the process ended: its exit code, or 128+signal.
// It is -1 while the process runs.
func (p *Process) ExitStatus() int {
	select {
	case <-p.exited:
	default:
		return -1
	}
	var ee *exec.ExitError
	if !errors.As(p.WaitError(), &ee) {
		return 0
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// Kill sends SIGKILL to the process group and waits for the process to exit, like a crash.
func (p *Process) Kill() { p.signal(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM, waits up to StopTimeout, then kills.
func (p *Process) Stop() {
	if !p.signal(syscall.SIGTERM, p.opts.StopTimeout) {
		p.t.Logf("llamaservertest: %s ignored SIGTERM for %v; killing it", p.addr, p.opts.StopTimeout)
		p.Kill()
	}
}

// signal signals the process group this helper created (never anything else) and waits up to
// d for the process to exit; it reports whether it did.
func (p *Process) signal(sig syscall.Signal, d time.Duration) bool {
	select {
	case <-p.exited:
		return true
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.exited:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *Process) cleanup() {
	p.Stop()
	select {
	case <-p.exited:
	default:
		p.t.Errorf("llamaservertest: llama-server pid %d did not exit", p.PID())
	}
	if p.t.Failed() {
		p.t.Logf("llama-server output:\n%s", p.Output())
	}
}

// Get is a helper for tests: GET path on the server, bounded by ctx.
func (p *Process) Get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+path, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}
