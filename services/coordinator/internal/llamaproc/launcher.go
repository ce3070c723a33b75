package llamaproc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// Launcher starts llama-server processes.
//
// With KillWithManager every process is started from one OS thread that lives as long as the
// launcher, with the kernel's parent-death signal set: should the manager die without
// stopping its coordinators (SIGKILL, a crash), the kernel kills them. The signal follows the
// thread that forked, not the process, hence the dedicated thread.
type Launcher struct {
	killWithManager bool
	reqs            chan func()
	done            chan struct{}
}

// NewLauncher starts the launcher's thread; Close ends it.
func NewLauncher(killWithManager bool) *Launcher {
	l := &Launcher{killWithManager: killWithManager, reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		// Never unlocked: when this goroutine returns, the thread ends with it, which is the
		// parent death of any process still running.
		runtime.LockOSThread()
		defer close(l.done)
		for f := range l.reqs {
			f()
		}
	}()
	return l
}

// Close ends the launcher's thread. Stop every process first: with KillWithManager the
// kernel kills the survivors.
func (l *Launcher) Close() {
	close(l.reqs)
	<-l.done
}

// Start starts spec's process; its output is read in the background.
func (l *Launcher) Start(spec Spec) (*Process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	var logFile *os.File
	if spec.LogPath != "" {
		if logFile, err = os.Create(spec.LogPath); err != nil {
			r.Close()
			w.Close()
			return nil, fmt.Errorf("llama-server log %s: %w", spec.LogPath, err)
		}
	}
	argv := spec.Args()
	cmd := exec.Command(spec.Binary, argv...)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = sysProcAttr(l.killWithManager)
	done := make(chan error, 1)
	l.reqs <- func() { done <- cmd.Start() }
	err = <-done
	w.Close() // the child holds its own copy; the read end sees EOF when it is gone
	if err != nil {
		r.Close()
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", spec.Binary, err)
	}
	p := &Process{spec: spec, cmd: cmd, argv: append([]string{spec.Binary}, argv...), exited: make(chan struct{})}
	p.ticks, _ = startTicks(cmd.Process.Pid)
	go p.readOutput(r, logFile)
	return p, nil
}

// Record is what the state file keeps to find this process again after a manager crash.
func (p *Process) Record(model string) ProcRecord {
	return ProcRecord{Model: model, PID: p.PID(), StartTicks: p.ticks, Argv: p.argv}
}
