// Package e2e runs the built sollol binary as a user would and checks it from outside: ports,
// health, readiness, signals, exit codes and leftover processes.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
)

// sollolBin is the binary under test, built once for the package by TestMain.
var sollolBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sollol-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sollolBin = filepath.Join(dir, "sollol")
	build := exec.Command("go", "build", "-o", sollolBin, "github.com/sollol/mesh/services/sollol")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sollol:", err)
		os.Exit(1)
	}
	// rpcservertest.Main runs the tests and removes the rpc-server double it built; the
	// llama-server double is removed after.
	code := rpcservertest.Main(m)
	llamaservertest.Cleanup()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
