package discovery_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

const mib = 1 << 20

// These tests run the rpc-server double, or the real llama.cpp rpc-server when
// SOLLOL_RPC_SERVER names its binary.

func TestVerifiesRPCServerAndRejectsAPlainTCPListener(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{Devices: []rpcserver.DeviceMemory{{Free: 3000 * mib, Total: 4096 * mib}}})
	plain := silentListener(t)
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.RPCBackends = config.StringList{rpc.Addr(), plain}
	}))

	b := r.waitBackend(t, rpc.Addr(), "verified", healthIs(healthy))
	require.Equal(t, kindRPC, b.GetKind())
	require.NotEmpty(t, b.GetProtocolVersion())
	require.NotEmpty(t, b.GetCapacity().GetDevices())
	require.Positive(t, b.GetCapacity().GetTotalBytes())
	if !rpc.Real() {
		require.Equal(t, ggmlrpc.ProtocolVersion.String(), b.GetProtocolVersion())
		require.EqualValues(t, 4096*mib, b.GetCapacity().GetTotalBytes())
		require.EqualValues(t, 3000*mib, b.GetCapacity().GetFreeBytes())
		require.Equal(t, "RPC0", b.GetCapacity().GetDevices()[0].GetName())
	}

	// A port that accepts connections but does not speak ggml-rpc is listed (it was
	// configured) but down, with the reason.
	fake := r.waitBackend(t, plain, "rejected", healthIs(down))
	require.Contains(t, fake.GetLastError(), "not an rpc-server")
	for _, h := range r.backends(t, true) {
		require.NotEqual(t, plain, h.GetAddress())
	}
}

func TestFlagsAnIncompatibleProtocolVersion(t *testing.T) {
	if rpcservertest.Real() {
		t.Skip("a real rpc-server's protocol version cannot be changed; this case needs the double")
	}
	old := ggmlrpc.Version{Major: ggmlrpc.ProtocolVersion.Major - 1, Minor: 0, Patch: 0}
	rpc := rpcservertest.Start(t, rpcservertest.Options{ProtocolVersion: old})
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.RPCBackends = config.StringList{rpc.Addr()}
	}))

	b := r.waitBackend(t, rpc.Addr(), "incompatible", healthIs(incompatible))
	require.Equal(t, old.String(), b.GetProtocolVersion())
	require.Contains(t, b.GetLastError(), old.String(), "the error names the server's version")
	require.Contains(t, b.GetLastError(), ggmlrpc.ProtocolVersion.String(), "and the mesh's")
	require.Empty(t, r.backends(t, true), "an incompatible backend is not healthy")
}

func TestKilledBackendLeavesTheHealthySetAndComesBack(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.RPCBackends = config.StringList{rpc.Addr()}
	}))
	r.waitBackend(t, rpc.Addr(), "healthy", healthIs(healthy))

	rpc.Kill()
	killed := time.Now()
	require.Eventually(t, func() bool { return len(r.backends(t, true)) == 0 }, 20*time.Second, 50*time.Millisecond,
		"a dead backend must leave the healthy set")
	t.Logf("left the healthy set %s after the kill (probe interval 200ms, down after 2 failures)", time.Since(killed).Round(time.Millisecond))

	rpc.Restart()
	r.waitBackend(t, rpc.Addr(), "back after restart", healthIs(healthy))
}

// silentListener accepts connections and never answers, like a port some other program has.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

// An rpc-server serves one client at a time: while a coordinator holds it, probes get no
// answer. It must stay healthy, keep its last known memory, and survive the abandoned probes
// (a probe that closes cleanly instead of resetting kills the real server with SIGPIPE).
func TestBusyRPCServerStaysHealthyAndSurvivesProbes(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	cluster := etcdtest.Start(t)
	r := startDiscovery(t, cluster, testConfig(t, func(c *discovery.Config) {
		c.RPCBackends = config.StringList{rpc.Addr()}
		c.ProbeTimeout = 300 * time.Millisecond
	}))
	before := r.waitBackend(t, rpc.Addr(), "healthy", healthIs(healthy))

	holder, err := ggmlrpc.Dial(context.Background(), rpc.Addr())
	require.NoError(t, err, "the stand-in coordinator connects")
	busy := r.waitBackend(t, rpc.Addr(), "probed while busy", func(b *commonv1.Backend) bool {
		return strings.Contains(b.GetLastError(), "did not answer")
	})
	require.Equal(t, healthy, busy.GetHealth())
	require.Equal(t, before.GetCapacity().GetTotalBytes(), busy.GetCapacity().GetTotalBytes(), "last known memory is kept")
	require.NoError(t, holder.Close())

	r.waitBackend(t, rpc.Addr(), "answering again", func(b *commonv1.Backend) bool {
		return b.GetHealth() == healthy && b.GetLastError() == ""
	})
	require.False(t, rpc.Exited(), "abandoned probes must not kill the rpc-server:\n%s", rpc.Output())
}
