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
	"strconv"
	"testing"
	"time"

	"github.com/sollol/mesh/services/doubles/internal/doublebin"
)

// EnvBinary names the real llama-server binary to run instead of the double.
const EnvBinary = "SOLLOL_LLAMA_SERVER"

// double is the llama-server this package runs: the real one when SOLLOL_LLAMA_SERVER names it.
var double = &doublebin.Double{Name: "llama-server", EnvVar: EnvBinary}

// Real reports whether SOLLOL_LLAMA_SERVER selects the real binary.
func Real() bool { return double.Real() }

// Binary returns the binary to run and whether it is the real one, building the double if
// needed. It fails the test when the double cannot be built or SOLLOL_LLAMA_SERVER is not an
// executable.
func Binary(t testing.TB) (path string, real bool) {
	t.Helper()
	return double.Binary(t)
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
	double.Cleanup()
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
