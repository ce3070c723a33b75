// Package llamaproc runs llama-server processes: each in its own process group with its output
// captured and read for load progress, waited on through GET /health, and stopped with its
// whole group. A state file records every process so that a manager restarted after a crash
// finds and stops the ones its previous run left behind.
package llamaproc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tailLines is how many of the last output lines a Process keeps for error messages.
const tailLines = 40

// Spec describes one llama-server to start.
type Spec struct {
	// Binary is the llama-server executable.
	Binary string
	// Model is the GGUF file.
	Model string
	// RPC are the rpc-server endpoints; Split is the share per device (--tensor-split).
	RPC   []string
	Split []float32
	// Context (-c) and Parallel (-np).
	Context, Parallel uint32
	// GPULayers is -ngl; Threads is -t (0: not passed).
	GPULayers, Threads int
	// Host and Port are where its HTTP API listens.
	Host string
	Port int
	// Extra are more arguments, appended last.
	Extra []string
	// LogPath receives the whole output; empty keeps only the tail in memory.
	LogPath string
	// OnEvent is called, from the output reader, for every progress event; it must not block.
	OnEvent func(Event)
	// Log receives each output line at debug level.
	Log *slog.Logger
}

// Args is the command line, without the binary.
func (s Spec) Args() []string {
	args := []string{"--model", s.Model, "-ngl", strconv.Itoa(s.GPULayers),
		"-c", strconv.FormatUint(uint64(s.Context), 10), "-np", strconv.FormatUint(uint64(s.Parallel), 10)}
	if s.Threads > 0 {
		args = append(args, "-t", strconv.Itoa(s.Threads))
	}
	args = append(args, "--host", s.Host, "--port", strconv.Itoa(s.Port))
	if len(s.RPC) > 0 {
		args = append(args, "--rpc", strings.Join(s.RPC, ","))
	}
	if len(s.Split) > 1 {
		parts := make([]string, len(s.Split))
		for i, f := range s.Split {
			parts[i] = strconv.FormatFloat(float64(f), 'f', 4, 32)
		}
		args = append(args, "--tensor-split", strings.Join(parts, ","))
	}
	return append(args, s.Extra...)
}

// Addr is the HTTP address, host:port.
func (s Spec) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Process is a started llama-server.
type Process struct {
	spec   Spec
	cmd    *exec.Cmd
	argv   []string
	ticks  uint64
	exited chan struct{}

	mu       sync.Mutex
	tail     []string
	findings Findings
	state    *os.ProcessState
}

// PID is the process id, which is also its process group id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Addr is where its HTTP API listens.
func (p *Process) Addr() string { return p.spec.Addr() }

// Spec is what it was started with.
func (p *Process) Spec() Spec { return p.spec }

// Exited is closed once the process has exited and its output has been read.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Tail returns the last lines it printed.
func (p *Process) Tail() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tail...)
}

// Findings returns what its output revealed so far.
func (p *Process) Findings() Findings {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.findings
	f.Unreachable = append([]string(nil), f.Unreachable...)
	return f
}

// ExitStatus describes how the process ended, as a shell would: "exit status 1" or "killed
// by signal aborted (status 134)"; "running" before that.
func (p *Process) ExitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return "running"
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %s (status %d)", ws.Signal(), 128+int(ws.Signal()))
	}
	return fmt.Sprintf("exit status %d", p.state.ExitCode())
}

// readOutput feeds the output to the parser, the tail and the log file until the process and
// every holder of its output pipe are gone, then reaps the process.
func (p *Process) readOutput(r io.ReadCloser, logFile *os.File) {
	defer close(p.exited)
	defer r.Close()
	if logFile != nil {
		defer logFile.Close()
	}
	pr := &parser{emit: func(e Event) {
		if p.spec.OnEvent != nil {
			p.spec.OnEvent(e)
		}
	}, onLine: func(line string) {
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > tailLines {
			p.tail = p.tail[len(p.tail)-tailLines:]
		}
		p.mu.Unlock()
		if p.spec.Log != nil {
			p.spec.Log.Debug("llama-server output", "pid", p.PID(), "line", line)
		}
	}}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if logFile != nil {
				_, _ = logFile.Write(buf[:n])
			}
			pr.write(buf[:n])
			p.mu.Lock()
			p.findings = pr.findings
			p.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	pr.flush()
	_ = p.cmd.Wait()
	p.mu.Lock()
	p.findings = pr.findings
	p.state = p.cmd.ProcessState
	p.mu.Unlock()
}

// Stop ends the process and its group: SIGTERM, up to timeout for a clean exit, then SIGKILL.
// It returns once the process has exited and no member of its group is left.
func (p *Process) Stop(timeout time.Duration) {
	select {
	case <-p.exited:
	default:
		_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
		t := time.NewTimer(timeout)
		select {
		case <-p.exited:
			t.Stop()
		case <-t.C:
			p.Kill()
		}
	}
	p.reapGroup()
}

// Kill sends SIGKILL to the process group and waits for the process to exit.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
	}
	p.reapGroup()
}

// reapGroup kills whatever is left of the process group after its leader exited. Killing by
// group id is safe only while members remain: then the id cannot have been reused.
func (p *Process) reapGroup() {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(groupMembers(p.PID())) == 0 {
			return
		}
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}

// StartError is a llama-server that exited, or never became ready, during its start.
type StartError struct {
	// Status is how it ended ("exit status 134") or why it was given up on.
	Status string
	// Tail is the last lines it printed.
	Tail []string
	// Findings are what its output revealed.
	Findings Findings
	// TimedOut is set when it never became ready (and still runs).
	TimedOut bool
}

func (e *StartError) Error() string {
	msg := "llama-server " + e.Status + " during start"
	if len(e.Tail) > 0 {
		lines := e.Tail
		if len(lines) > 12 {
			lines = lines[len(lines)-12:]
		}
		msg += "; last log lines:\n" + strings.Join(lines, "\n")
	}
	return msg
}

// WaitReady polls GET /health until it answers 200. It fails with *StartError when the
// process exits first or timeout passes (the process is left running then), or with ctx's
// error.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, client *http.Client) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	url := "http://" + p.Addr() + "/health"
	for {
		reqCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return nil
		}
		select {
		case <-p.exited:
			return &StartError{Status: p.ExitStatus(), Tail: p.Tail(), Findings: p.Findings()}
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return &StartError{Status: fmt.Sprintf("did not answer GET /health with 200 within %s", timeout),
				Tail: p.Tail(), Findings: p.Findings(), TimedOut: true}
		case <-time.After(25 * time.Millisecond):
		}
	}
}
