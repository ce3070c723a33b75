package netutil_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echoEnv, when set in the test binary's environment, makes it the echo process of
// BenchmarkCrossProcessWake: it dials that address and sends back every byte it reads.
const echoEnv = "SOLLOL_WAKE_ECHO_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(echoEnv); addr != "" {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			os.Exit(1)
		}
		_, _ = io.Copy(conn, conn) // until the benchmark closes the connection
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkCrossProcessWake measures a 1-byte round trip over loopback TCP to another
// process, back to back and with the CPUs left idle for 1 ms between round trips: the
// difference is what waking an idle CPU costs on this machine, which every added process
// boundary of the mesh pays on a quiet stream (BENCHMARKS.md).
//
//	go test ./services/shared/netutil -run '^$' -bench CrossProcessWake -benchtime 1x
func BenchmarkCrossProcessWake(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer lis.Close()
	echo := exec.Command(os.Args[0], "-test.run=^$")
	echo.Env = append(os.Environ(), echoEnv+"="+lis.Addr().String())
	require.NoError(b, echo.Start())
	defer func() { _ = echo.Wait() }()
	conn, err := lis.Accept()
	require.NoError(b, err)
	defer conn.Close() // ends the echo process

	roundTrips := func(n int, pause time.Duration) []time.Duration {
		out := make([]time.Duration, 0, n)
		buf := []byte{1}
		for range n {
			time.Sleep(pause)
			start := time.Now()
			_, err := conn.Write(buf)
			require.NoError(b, err)
			_, err = io.ReadFull(conn, buf)
			require.NoError(b, err)
			out = append(out, time.Since(start))
		}
		slices.Sort(out)
		return out
	}
	for range b.N {
		for _, c := range []struct {
			name  string
			pause time.Duration
		}{{"busy", 0}, {"idle", time.Millisecond}} {
			rtt := roundTrips(1000, c.pause)
			b.ReportMetric(float64(rtt[len(rtt)/2].Microseconds()), fmt.Sprintf("%s-rtt-p50-µs", c.name))
			b.ReportMetric(float64(rtt[len(rtt)*99/100].Microseconds()), fmt.Sprintf("%s-rtt-p99-µs", c.name))
		}
	}
}
