package discovery_test

import (
	"os"
	"testing"

	"github.com/sollol/mesh/services/doubles/rpcservertest"
)

// TestMain removes the rpc-server double built for this test binary.
func TestMain(m *testing.M) {
	os.Exit(rpcservertest.Main(m))
}
