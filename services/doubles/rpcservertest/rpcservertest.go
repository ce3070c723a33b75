// Package rpcservertest runs an rpc-server process for tests: the real llama.cpp binary
// (rpc-server or ggml-rpc-server) when SOLLOL_RPC_SERVER names it, otherwise the project's
// double (services/doubles/cmd/rpc-server), built once per test binary.
//
//	func TestMain(m *testing.M) { os.Exit(rpcservertest.Main(m)) } // removes the built double
//
//	p := rpcservertest.Start(t, rpcservertest.Options{Devices: ...})
//	info, err := ggmlrpc.Probe(ctx, p.Addr())
//
// Each process listens on its own free 127.0.0.1 port and is ready when it has answered a
// HELLO. t.Cleanup stops it, checks that it has exited, and logs its output if the test
// failed. Settings only the double has (Devices, ProtocolVersion, Concurrent) are ignored,
// with a log line, when the real binary runs: tests that depend on them should check Real.
package rpcservertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sollol/mesh/services/doubles/internal/doublebin"

	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
	"github.com/sollol/mesh/services/shared/netutil"
	"github.com/sollol/mesh/services/shared/testutil"
)

// EnvBinary names the real rpc-server binary to run instead of the double.
const EnvBinary = "SOLLOL_RPC_SERVER"

// Options configures Start.
type Options struct {
	// Devices sets the devices and memory the double reports, in whole MiB (the command line
	// takes MiB). Double only.
	Devices []rpcserver.DeviceMemory
	// ProtocolVersion overrides the version the double reports. Double only.
	ProtocolVersion ggmlrpc.Version
	// Concurrent makes the double serve connections in parallel. Double only.
	Concurrent bool
	// Args are extra arguments for whichever binary runs.
	Args []string
	// StartTimeout bounds the wait for the first HELLO answer; default 30s.
	StartTimeout time.Duration
	// StopTimeout bounds the wait after SIGTERM before SIGKILL; default 10s.
	StopTimeout time.Duration
}

// double is the rpc-server this package runs: the real one when SOLLOL_RPC_SERVER names it.
var double = &doublebin.Double{Name: "rpc-server", EnvVar: EnvBinary}

// Real reports whether SOLLOL_RPC_SERVER selects the real binary.
func Real() bool { return double.Real() }

// Binary returns the binary to run and whether it is the real one, building the double if
// needed. It fails the test when the double cannot be built or SOLLOL_RPC_SERVER is not an
// executable.
func Binary(t testing.TB) (path string, real bool) {
	t.Helper()
	return double.Binary(t)
}

// Main runs the tests and then removes the double built for them; use it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	double.Cleanup()
	return code
}

// Process is a running rpc-server.
type Process struct {
	t      testing.TB
	bin    string
	real   bool
	addr   string
	args   []string
	opts   Options
	output *testutil.SyncBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Start launches the rpc-server and waits until it answers a HELLO. A cleanup stops it.
func Start(t testing.TB, opts Options) *Process {
	t.Helper()
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	bin, real := Binary(t)
	p := &Process{t: t, bin: bin, real: real, opts: opts, output: &testutil.SyncBuffer{}}
	extra, err := p.doubleArgs()
	if err != nil {
		t.Fatalf("rpcservertest: %v", err)
	}
	t.Cleanup(p.cleanup)

	// A port found free can be taken before the server binds it: retry on a fresh one.
	for attempt := 1; ; attempt++ {
		port, err := netutil.FreeLoopbackPort()
		if err != nil {
			t.Fatalf("rpcservertest: %v", err)
		}
		p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p.args = append([]string{"-H", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "1"}, extra...)
		p.args = append(p.args, opts.Args...)
		err = p.launch()
		if err == nil {
			return p
		}
		if attempt == 3 || !errors.Is(err, errExitedEarly) {
			t.Fatalf("rpcservertest: %v\n%s", err, p.output.String())
		}
	}
}

func (p *Process) doubleArgs() ([]string, error) {
	o := p.opts
	if p.real {
		if len(o.Devices) > 0 || !o.ProtocolVersion.IsZero() || o.Concurrent {
			p.t.Logf("rpcservertest: real rpc-server: Devices, ProtocolVersion and Concurrent are ignored")
		}
		return nil, nil
	}
	var args []string
	if len(o.Devices) > 0 {
		var total, free []string
		for _, d := range o.Devices {
			if d.Total%(1<<20) != 0 || d.Free%(1<<20) != 0 {
				return nil, fmt.Errorf("device memory %+v is not in whole MiB", d)
			}
			total = append(total, strconv.FormatUint(d.Total>>20, 10))
			free = append(free, strconv.FormatUint(d.Free>>20, 10))
		}
		args = append(args, "-m", strings.Join(total, ","), "--free", strings.Join(free, ","),
			"--devices", strconv.Itoa(len(o.Devices)))
	}
	if !o.ProtocolVersion.IsZero() {
		args = append(args, "--protocol-version", o.ProtocolVersion.String())
	}
	if o.Concurrent {
		args = append(args, "--concurrent")
	}
	return args, nil
}

var errExitedEarly = errors.New("rpc-server exited before answering")

// launch starts the process and waits until it is ready.
func (p *Process) launch() error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout = p.output
	cmd.Stderr = p.output
	cmd.SysProcAttr = sysProcAttr()
	fmt.Fprintf(p.output, "--- rpcservertest: %s %s\n", p.bin, strings.Join(p.args, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.waitErr = cmd, exited, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	if err := p.waitReady(exited); err != nil {
		p.Kill()
		return err
	}
	return nil
}

// waitReady polls with HELLO until the server answers (any version counts: it is up).
func (p *Process) waitReady(exited chan struct{}) error {
	deadline := time.Now().Add(p.opts.StartTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("%w on %s (%v)", errExitedEarly, p.addr, p.waitError())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := ggmlrpc.Dial(ctx, p.addr)
		cancel()
		var mismatch *ggmlrpc.VersionMismatchError
		switch {
		case err == nil:
			conn.Close()
			return nil
		case errors.As(err, &mismatch):
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rpc-server on %s not ready after %v: %w", p.addr, p.opts.StartTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is the server's address, 127.0.0.1:port; it stays the same across Restart.
func (p *Process) Addr() string { return p.addr }

// Real reports whether this is the real llama.cpp binary.
func (p *Process) Real() bool { return p.real }

// PID is the process id of the current process.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Output returns everything the process (and its earlier incarnations) printed so far.
func (p *Process) Output() string { return p.output.String() }

// Exited reports whether the current process has exited.
func (p *Process) Exited() bool {
	p.mu.Lock()
	ch := p.exited
	p.mu.Unlock()
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (p *Process) waitError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Kill sends SIGKILL and waits for the process to exit, like a crash.
func (p *Process) Kill() {
	p.signalAndWait(syscall.SIGKILL, p.opts.StopTimeout)
}

// Stop sends SIGTERM, waits up to StopTimeout, then kills.
func (p *Process) Stop() {
	if !p.signalAndWait(syscall.SIGTERM, p.opts.StopTimeout) {
		p.t.Logf("rpcservertest: %s ignored SIGTERM for %v; killing it", p.addr, p.opts.StopTimeout)
		p.Kill()
	}
}

// Restart stops the process if it runs and starts a new one on the same address.
func (p *Process) Restart() {
	p.t.Helper()
	p.Stop()
	var err error
	// The port was just released; another process may grab it, but usually nothing does.
	for attempt := 1; attempt <= 3; attempt++ {
		if err = p.launch(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("rpcservertest: restart on %s: %v\n%s", p.addr, err, p.output.String())
}

// signalAndWait signals the current process (only it: the pid this helper started) and waits
// up to d for it to exit; it reports whether it did.
func (p *Process) signalAndWait(sig syscall.Signal, d time.Duration) bool {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-exited:
		return true
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// cleanup stops the process and checks that it has exited and been reaped.
func (p *Process) cleanup() {
	p.mu.Lock()
	started := p.cmd != nil
	p.mu.Unlock()
	if !started {
		return
	}
	p.Stop()
	if !p.Exited() {
		p.t.Errorf("rpcservertest: rpc-server pid %d did not exit", p.PID())
	}
	if p.t.Failed() {
		p.t.Logf("rpc-server output:\n%s", p.output.String())
	}
}
