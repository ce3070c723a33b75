package discovery_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sollol/mesh/services/doubles/rpcservertest"
)

// TestMain removes the rpc-server double built for this test binary, and fails the run if
// any goroutine outlives the tests: every probe, watch, writer and term must end with its
// service.
func TestMain(m *testing.M) {
	code := rpcservertest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}
