// Package llamaservertest runs llama-server processes for tests: the real llama.cpp binary when
// SOLLOL_LLAMA_SERVER names it, otherwise the project's double (services/doubles/cmd/
// llama-server), built once per test binary.
//
//	func TestMain(m *testing.M) { os.Exit(llamaservertest.Main(m)) } // removes the built double
//
//	bin, real := llamaservertest.Binary(t)          // for a manager that starts it itself
//	p := llamaservertest.Start(t, llamaservertest.Options{Model: path, RPC: []string{addr}})
//	resp, err := http.Get(p.URL() + "/health")
//
// Each process listens on its own free 127.0.0.1 port, runs in its own process group, and is
// ready when GET /health answers 200. t.Cleanup stops it and checks that it has exited, and
// logs its output if the test failed. Settings only the double has (LoadTime,
// TokenInterval, CrashAfter) are left out, with a log line, when the real binary runs: tests
// that depend on them should check Real.
package llamaservertest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// EnvBinary names the real llama-server binary to run instead of the double.
const EnvBinary = "SOLLOL_LLAMA_SERVER"

// Real reports whether SOLLOL_LLAMA_SERVER selects the real binary.
func Real() bool { return os.Getenv(EnvBinary) != "" }

// Binary returns the binary to run and whether it is the real one, building the double if
// needed. It fails the test when the double cannot be built or SOLLOL_LLAMA_SERVER is not an
// executable.
func Binary(t testing.TB) (path string, real bool) {
	t.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			t.Fatalf("llamaservertest: %s=%s is not an executable file", EnvBinary, p)
		}
		return p, true
	}
	p, err := buildDouble()
	if err != nil {
		t.Fatalf("llamaservertest: %v", err)
	}
	return p, false
}

var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// buildDouble builds cmd/llama-server once per test binary into a temporary folder.
func buildDouble() (string, error) {
	built.once.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			built.err = errors.New("cannot locate the doubles module")
			return
		}
		module := filepath.Dir(filepath.Dir(file)) // services/doubles
		dir, err := os.MkdirTemp("", "sollol-llama-server-double-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out := filepath.Join(dir, "llama-server")
		cmd := exec.Command(goBin, "build", "-o", out, "./cmd/llama-server")
		cmd.Dir = module
		if b, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("build the llama-server double: %w\n%s", err, b)
			return
		}
		built.path = out
	})
	return built.path, built.err
}

// Main runs the tests and then removes the double built for them; use it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	Cleanup()
	return code
}

// Cleanup removes the double built for this test binary, for a TestMain that runs the tests
// through another helper's Main.
func Cleanup() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// DoubleOptions are the settings only the double has.
type DoubleOptions struct {
	// LoadTime is how long the model load takes.
	LoadTime time.Duration
	// TokenInterval is the pause before each generated token.
	TokenInterval time.Duration
	// CrashAfter aborts the server this long after it became ready.
	CrashAfter time.Duration
}

// Args returns the command-line flags for the double's settings, or nothing when the real
// binary runs (real reports which), so a manager can pass them as extra arguments.
func (d DoubleOptions) Args(real bool) []string {
	if real {
		return nil
	}
	var args []string
	if d.LoadTime > 0 {
		args = append(args, "--double-load-time", d.LoadTime.String())
	}
	if d.TokenInterval > 0 {
		args = append(args, "--double-token-interval", d.TokenInterval.String())
	}
	if d.CrashAfter > 0 {
		args = append(args, "--double-crash-after", d.CrashAfter.String())
	}
	return args
}

// CommandLine returns llama-server's arguments for a model over rpc backends, in the form the
// coordinator-manager uses.
func CommandLine(model string, rpc []string, ctx, parallel, port int) []string {
	args := []string{"--model", model, "-ngl", "99", "-c", strconv.Itoa(ctx), "-np", strconv.Itoa(parallel),
		"-t", "1", "--host", "127.0.0.1", "--port", strconv.Itoa(port)}
	if len(rpc) > 0 {
		joined := rpc[0]
		for _, r := range rpc[1:] {
			joined += "," + r
		}
		args = append(args, "--rpc", joined)
	}
	return args
}
