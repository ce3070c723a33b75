package grpcserver_test

import (
	"testing"

	"go.uber.org/goleak"
)

// A stopped server leaves no goroutine behind: no stream, no registration keep-alive.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
