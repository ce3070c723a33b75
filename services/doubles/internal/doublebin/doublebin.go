// Package doublebin is the one place that decides which program a test runs in place of a
// llama.cpp binary: the real one when an environment variable names it, otherwise the
// project's double, built once per test binary from this module's cmd/ folder.
package doublebin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Double is one double program: its cmd/<Name> package and the variable naming the real one.
type Double struct {
	Name   string // e.g. "rpc-server": built from ./cmd/rpc-server
	EnvVar string // e.g. "SOLLOL_RPC_SERVER"

	once sync.Once
	dir  string
	path string
	err  error
}

// Real reports whether the environment selects the real binary.
func (d *Double) Real() bool { return os.Getenv(d.EnvVar) != "" }

// Binary returns the program to run and whether it is the real one, building the double if
// needed. It fails the test when the double cannot be built or the variable does not name an
// executable.
func (d *Double) Binary(t testing.TB) (path string, real bool) {
	t.Helper()
	if p := os.Getenv(d.EnvVar); p != "" {
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			t.Fatalf("%s=%s is not an executable file", d.EnvVar, p)
		}
		return p, true
	}
	p, err := d.build()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p, false
}

func (d *Double) build() (string, error) {
	d.once.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			d.err = errors.New("cannot locate the doubles module")
			return
		}
		module := filepath.Dir(filepath.Dir(filepath.Dir(file))) // services/doubles
		dir, err := os.MkdirTemp("", "sollol-"+d.Name+"-double-")
		if err != nil {
			d.err = err
			return
		}
		d.dir = dir
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out := filepath.Join(dir, d.Name)
		cmd := exec.Command(goBin, "build", "-o", out, "./cmd/"+d.Name)
		cmd.Dir = module
		if b, err := cmd.CombinedOutput(); err != nil {
			d.err = fmt.Errorf("build the %s double: %w\n%s", d.Name, err, b)
			return
		}
		d.path = out
	})
	return d.path, d.err
}

// Cleanup removes the double built for this test binary.
func (d *Double) Cleanup() {
	if d.dir != "" {
		_ = os.RemoveAll(d.dir)
	}
}
