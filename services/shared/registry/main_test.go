package registry_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every publisher, snapshot and registration must stop its goroutines when stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
