package ggmlrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// peer is a TCP listener whose connections are handled by fn. This module cannot import the
// rpc-server double (services/doubles imports it), so the protocol-speaking peer of these
// tests is fakeServer below; the double's own tests probe the double with this package.
type peer struct {
	addr  string
	conns atomic.Int32
}

func listen(t *testing.T, fn func(net.Conn)) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &peer{addr: ln.Addr().String()}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// fakeServer answers HELLO (in the layout of its version) and the device queries, and closes
// the connection on anything else, like the real server.
type fakeServer struct {
	version ggmlrpc.Version
	devices []ggmlrpc.Device
}

func (f fakeServer) serve(c net.Conn) {
	cmd, size, err := ggmlrpc.ReadCommandHeader(c)
	if err != nil || cmd != ggmlrpc.CmdHello {
		return
	}
	want := uint64(ggmlrpc.HelloRequestSize)
	if !f.version.HasConnCaps() {
		want = 0
	}
	if size != want {
		return
	}
	if _, err := ggmlrpc.ReadPayload(c, size, size); err != nil {
		return
	}
	if ggmlrpc.WriteResponse(c, ggmlrpc.EncodeHelloResponse(f.version)) != nil {
		return
	}
	for {
		cmd, size, err := ggmlrpc.ReadCommandHeader(c)
		if err != nil {
			return
		}
		l, ok := ggmlrpc.LayoutOf(cmd)
		if !ok || size != uint64(l.RequestSize) {
			return
		}
		p, err := ggmlrpc.ReadPayload(c, size, size)
		if err != nil {
			return
		}
		var resp []byte
		if cmd == ggmlrpc.CmdDeviceCount {
			resp = ggmlrpc.EncodeUint32(uint32(len(f.devices)))
		} else {
			dev, _ := ggmlrpc.DecodeUint32(p)
			if int(dev) >= len(f.devices) {
				return
			}
			d := f.devices[dev]
			switch cmd {
			case ggmlrpc.CmdGetDeviceMemory:
				resp = ggmlrpc.EncodeDeviceMemory(d.Free, d.Total)
			case ggmlrpc.CmdGetAlignment:
				resp = ggmlrpc.EncodeUint64(d.Alignment)
			case ggmlrpc.CmdGetMaxSize:
				resp = ggmlrpc.EncodeUint64(d.MaxSize)
			default:
				return
			}
		}
		if ggmlrpc.WriteResponse(c, resp) != nil {
			return
		}
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestProbeReportsDevices(t *testing.T) {
	devs := []ggmlrpc.Device{
		{Index: 0, Free: 3 << 30, Total: 4 << 30, Alignment: 32, MaxSize: ^uint64(0)},
		{Index: 1, Free: 1 << 20, Total: 8 << 30, Alignment: 128, MaxSize: 1 << 32},
	}
	p := listen(t, fakeServer{version: ggmlrpc.ProtocolVersion, devices: devs}.serve)

	info, err := ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), p.addr)
	require.NoError(t, err)
	require.Equal(t, p.addr, info.Addr)
	require.Equal(t, ggmlrpc.ProtocolVersion, info.ProtocolVersion)
	require.Equal(t, devs, info.Devices)
	require.Equal(t, uint64(3<<30+1<<20), info.FreeMemory())
}

func TestProbeAcceptsWhatLlamaServerAccepts(t *testing.T) {
	want := ggmlrpc.Version{Major: 5, Minor: 1, Patch: 0}
	for _, tc := range []struct {
		server ggmlrpc.Version
		ok     bool
	}{
		{ggmlrpc.Version{Major: 5, Minor: 1, Patch: 7}, true},  // patch is not compared
		{ggmlrpc.Version{Major: 5, Minor: 0, Patch: 0}, true},  // older minor is fine
		{ggmlrpc.Version{Major: 5, Minor: 2, Patch: 0}, false}, // newer minor is not
		{ggmlrpc.Version{Major: 6, Minor: 0, Patch: 0}, false},
		{ggmlrpc.Version{Major: 4, Minor: 0, Patch: 0}, false},
	} {
		t.Run(tc.server.String(), func(t *testing.T) {
			p := listen(t, fakeServer{version: tc.server, devices: []ggmlrpc.Device{{Total: 1}}}.serve)
			info, err := ggmlrpc.Client{Want: want}.Probe(ctxTimeout(t, 5*time.Second), p.addr)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, tc.server, info.ProtocolVersion)
				return
			}
			var vm *ggmlrpc.VersionMismatchError
			require.ErrorAs(t, err, &vm)
			require.Equal(t, ggmlrpc.VersionMismatchError{Got: tc.server, Want: want}, *vm)
			require.NotErrorIs(t, err, ggmlrpc.ErrNotRPCServer)
		})
	}
}

func TestProbeReportsLegacyServerAsVersionMismatch(t *testing.T) {
	// Protocol 1–3 servers close the connection on the 24-byte HELLO; the client retries
	// with the old layout to learn the version.
	legacy := ggmlrpc.Version{Major: 3, Minor: 6, Patch: 1}
	p := listen(t, fakeServer{version: legacy, devices: []ggmlrpc.Device{{Total: 1}}}.serve)

	_, err := ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), p.addr)
	var vm *ggmlrpc.VersionMismatchError
	require.ErrorAs(t, err, &vm)
	require.Equal(t, legacy, vm.Got)
	require.Equal(t, ggmlrpc.ProtocolVersion, vm.Want)
	require.EqualValues(t, 2, p.conns.Load())
}

func TestProbeSilentPeerIsNotRPCServerByDeadline(t *testing.T) {
	p := listen(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })

	start := time.Now()
	_, err := ggmlrpc.Probe(ctxTimeout(t, 200*time.Millisecond), p.addr)
	require.ErrorIs(t, err, ggmlrpc.ErrNotRPCServer)
	require.ErrorIs(t, err, ggmlrpc.ErrNoReply)
	// Not a timing goal: only that the probe gave up instead of waiting for the peer.
	require.Less(t, time.Since(start), 10*time.Second)
}

func TestProbeWithoutDeadlineUsesClientTimeout(t *testing.T) {
	p := listen(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })

	_, err := ggmlrpc.Client{Timeout: 100 * time.Millisecond}.Probe(context.Background(), p.addr)
	require.ErrorIs(t, err, ggmlrpc.ErrNoReply)
}

func TestProbeGarbageIsNotRPCServer(t *testing.T) {
	p := listen(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		_, _ = io.Copy(io.Discard, c)
	})

	_, err := ggmlrpc.Probe(ctxTimeout(t, 2*time.Second), p.addr)
	require.ErrorIs(t, err, ggmlrpc.ErrNotRPCServer)
	require.NotErrorIs(t, err, ggmlrpc.ErrNoReply)
	require.EqualValues(t, 1, p.conns.Load(), "a reply that is not a close needs no second try")
}

func TestProbeWrongHelloSizeIsNotRPCServer(t *testing.T) {
	p := listen(t, func(c net.Conn) {
		_, _, _ = ggmlrpc.ReadCommandHeader(c)
		_ = ggmlrpc.WriteResponse(c, make([]byte, 16))
	})

	_, err := ggmlrpc.Probe(ctxTimeout(t, 2*time.Second), p.addr)
	require.ErrorIs(t, err, ggmlrpc.ErrNotRPCServer)
}

func TestProbeCloseMidHandshakeIsNotRPCServer(t *testing.T) {
	for name, fn := range map[string]func(net.Conn){
		"before reply": func(c net.Conn) { _, _, _ = ggmlrpc.ReadCommandHeader(c) },
		"mid reply": func(c net.Conn) {
			_, _, _ = ggmlrpc.ReadCommandHeader(c)
			_, _ = c.Write(ggmlrpc.EncodeUint64(ggmlrpc.HelloResponseSize))
			_, _ = c.Write([]byte{5, 1})
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := listen(t, fn)
			_, err := ggmlrpc.Probe(ctxTimeout(t, 2*time.Second), p.addr)
			require.ErrorIs(t, err, ggmlrpc.ErrNotRPCServer)
			require.NotErrorIs(t, err, ggmlrpc.ErrNoReply)
			var vm *ggmlrpc.VersionMismatchError
			require.False(t, errors.As(err, &vm))
		})
	}
}

func TestProbeBoundsReplySizes(t *testing.T) {
	// A peer that passes HELLO and then announces an absurd payload: refused, not allocated.
	p := listen(t, func(c net.Conn) {
		_, size, _ := ggmlrpc.ReadCommandHeader(c)
		_, _ = ggmlrpc.ReadPayload(c, size, size)
		_ = ggmlrpc.WriteResponse(c, ggmlrpc.EncodeHelloResponse(ggmlrpc.ProtocolVersion))
		_, _, _ = ggmlrpc.ReadCommandHeader(c)
		_, _ = c.Write(ggmlrpc.EncodeUint64(1 << 62))
		_, _ = io.Copy(io.Discard, c)
	})

	_, err := ggmlrpc.Probe(ctxTimeout(t, 2*time.Second), p.addr)
	require.ErrorIs(t, err, ggmlrpc.ErrProtocol)
	var se *ggmlrpc.SizeError
	require.ErrorAs(t, err, &se)
	require.Equal(t, uint64(1<<62), se.Got)
}

func TestProbeRejectsAbsurdDeviceCount(t *testing.T) {
	devs := make([]ggmlrpc.Device, ggmlrpc.MaxDevices+1)
	p := listen(t, fakeServer{version: ggmlrpc.ProtocolVersion, devices: devs}.serve)
	_, err := ggmlrpc.Probe(ctxTimeout(t, 2*time.Second), p.addr)
	require.ErrorIs(t, err, ggmlrpc.ErrProtocol)
}

func TestProbeDialErrorPassesThrough(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	_, err = ggmlrpc.Probe(ctxTimeout(t, 2*time.Second), addr)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.NotErrorIs(t, err, ggmlrpc.ErrNotRPCServer)
}

func TestProbeCancelledContextPassesThrough(t *testing.T) {
	p := listen(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)

	_, err := ggmlrpc.Probe(ctx, p.addr)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ggmlrpc.ErrNotRPCServer)
}
