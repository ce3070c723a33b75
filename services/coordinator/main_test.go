package coordinator_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
)

// TestMain removes the doubles built for this test binary and fails the run if any goroutine
// outlives the tests. Started with childEnv set, the binary is a coordinator-manager process
// instead (see runChild), so tests can kill a manager with SIGKILL.
func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	code := rpcservertest.Main(m)
	llamaservertest.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}
