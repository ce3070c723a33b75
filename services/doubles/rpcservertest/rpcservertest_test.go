package rpcservertest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

// Every test here runs against the double, or against the real binary when
// SOLLOL_RPC_SERVER names one; with the real one, only structural facts are asserted.
func TestMain(m *testing.M) {
	code := rpcservertest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestProbeSeesTheServer(t *testing.T) {
	devs := []rpcserver.DeviceMemory{{Free: 1536 << 20, Total: 2048 << 20}, {Free: 256 << 20, Total: 512 << 20}}
	p := rpcservertest.Start(t, rpcservertest.Options{Devices: devs})

	info, err := ggmlrpc.Probe(ctxTimeout(t, 10*time.Second), p.Addr())
	require.NoError(t, err)
	require.Equal(t, ggmlrpc.ProtocolVersion.Major, info.ProtocolVersion.Major)
	require.NotEmpty(t, info.Devices)
	for i, d := range info.Devices {
		require.Equal(t, i, d.Index)
		require.NotZero(t, d.Total)
		require.LessOrEqual(t, d.Free, d.Total)
		require.NotZero(t, d.Alignment)
		require.Zero(t, d.Alignment&(d.Alignment-1), "alignment is a power of two")
		require.NotZero(t, d.MaxSize)
	}
	if p.Real() {
		return
	}
	require.Equal(t, ggmlrpc.ProtocolVersion, info.ProtocolVersion)
	require.Len(t, info.Devices, 2)
	for i, d := range devs {
		require.Equal(t, d.Free, info.Devices[i].Free)
		require.Equal(t, d.Total, info.Devices[i].Total)
	}
	require.Contains(t, p.Output(), "Starting RPC server v"+ggmlrpc.ProtocolVersion.String())
	require.Contains(t, p.Output(), "Accepted client connection")
}

func TestKillStopAndRestart(t *testing.T) {
	p := rpcservertest.Start(t, rpcservertest.Options{})
	addr, pid := p.Addr(), p.PID()

	p.Kill()
	require.True(t, p.Exited())
	_, err := ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), addr)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "a dead server is a dial error, not ErrNotRPCServer")

	p.Restart()
	require.Equal(t, addr, p.Addr())
	require.NotEqual(t, pid, p.PID())
	_, err = ggmlrpc.Probe(ctxTimeout(t, 10*time.Second), addr)
	require.NoError(t, err)

	p.Stop()
	require.True(t, p.Exited())
	_, err = ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), addr)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	if !p.Real() {
		require.Equal(t, 2, strings.Count(p.Output(), "Starting RPC server"))
	}
}

func TestBusyServerDoesNotAnswer(t *testing.T) {
	// Both the real server and the double serve one client at a time.
	p := rpcservertest.Start(t, rpcservertest.Options{})
	ctx := ctxTimeout(t, 10*time.Second)
	busy, err := ggmlrpc.Dial(ctx, p.Addr())
	require.NoError(t, err)

	_, err = ggmlrpc.Probe(ctxTimeout(t, 300*time.Millisecond), p.Addr())
	require.ErrorIs(t, err, ggmlrpc.ErrNoReply)

	// The abandoned probe waited in the backlog; it gave up with a reset, which the server
	// survives when it gets to it (a normal close would kill it: see below).
	require.NoError(t, busy.Close())
	_, err = ggmlrpc.Probe(ctxTimeout(t, 10*time.Second), p.Addr())
	require.NoError(t, err)
	require.False(t, p.Exited())
}

func TestClientClosingBeforeTheReplyKillsTheServer(t *testing.T) {
	// Documents a hazard of the real server, which the double reproduces: a request answered
	// after its client closed normally kills the server (SIGPIPE).
	p := rpcservertest.Start(t, rpcservertest.Options{})
	ctx := ctxTimeout(t, 10*time.Second)
	busy, err := ggmlrpc.Dial(ctx, p.Addr())
	require.NoError(t, err)
	quitter, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	require.NoError(t, ggmlrpc.WriteCommand(quitter, ggmlrpc.CmdHello, ggmlrpc.EncodeHelloRequest()))
	time.Sleep(50 * time.Millisecond) // let the request arrive before the close
	require.NoError(t, quitter.Close())
	require.NoError(t, busy.Close())

	require.Eventually(t, p.Exited, 10*time.Second, 10*time.Millisecond)
}

func TestVersionMismatch(t *testing.T) {
	if rpcservertest.Real() {
		t.Skip("the real binary's version cannot be changed")
	}
	other := ggmlrpc.Version{Major: ggmlrpc.ProtocolVersion.Major + 1}
	p := rpcservertest.Start(t, rpcservertest.Options{ProtocolVersion: other})

	_, err := ggmlrpc.Probe(ctxTimeout(t, 10*time.Second), p.Addr())
	var vm *ggmlrpc.VersionMismatchError
	require.ErrorAs(t, err, &vm)
	require.Equal(t, other, vm.Got)
	require.Equal(t, ggmlrpc.ProtocolVersion, vm.Want)
}

func TestNotHelloFirstClosesTheConnection(t *testing.T) {
	p := rpcservertest.Start(t, rpcservertest.Options{})
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdDeviceCount, nil))
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n)
	require.Error(t, err)

	_, err = ggmlrpc.Probe(ctxTimeout(t, 10*time.Second), p.Addr())
	require.NoError(t, err, "the server goes on serving")
}

// TestBufferCommands checks the commands a model load uses, with answers a CPU rpc-server gives.
func TestBufferCommands(t *testing.T) {
	p := rpcservertest.Start(t, rpcservertest.Options{})
	ctx := ctxTimeout(t, 20*time.Second)
	conn, err := ggmlrpc.Dial(ctx, p.Addr())
	require.NoError(t, err)
	defer conn.Close()
	le := binary.LittleEndian

	resp, err := conn.Call(ctx, ggmlrpc.CmdAllocBuffer, le.AppendUint64(ggmlrpc.EncodeUint32(0), 4096))
	require.NoError(t, err)
	handle := le.Uint64(resp)
	require.NotZero(t, handle)
	require.EqualValues(t, 4096, le.Uint64(resp[8:]))
	resp, err = conn.Call(ctx, ggmlrpc.CmdBufferGetBase, ggmlrpc.EncodeUint64(handle))
	require.NoError(t, err)
	base := le.Uint64(resp)

	src := ggmlrpc.Tensor{ID: 0x1000, Type: 0, Buffer: handle, Ne: [4]uint32{4, 4, 1, 1}, Nb: [4]uint32{4, 16, 64, 64}, Data: base}
	dst := src
	dst.ID, dst.Data = 0x2000, base+1024
	sb, err := src.AppendBinary(nil)
	require.NoError(t, err)
	db, err := dst.AppendBinary(nil)
	require.NoError(t, err)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	get := func(tb []byte, off, n uint64) []byte {
		resp, err := conn.Call(ctx, ggmlrpc.CmdGetTensor, cat(tb, ggmlrpc.EncodeUint64(off), ggmlrpc.EncodeUint64(n)))
		require.NoError(t, err)
		return resp
	}

	_, err = conn.Call(ctx, ggmlrpc.CmdBufferClear, append(ggmlrpc.EncodeUint64(handle), 0))
	require.NoError(t, err)
	_, err = conn.Call(ctx, ggmlrpc.CmdInitTensor, sb)
	require.NoError(t, err)

	data := bytes.Repeat([]byte{0, 0, 0x80, 0x3f}, 16) // 1.0f × 16
	_, err = conn.Call(ctx, ggmlrpc.CmdSetTensor, cat(sb, ggmlrpc.EncodeUint64(0), data))
	require.NoError(t, err)
	require.Equal(t, data, get(sb, 0, 64))

	resp, err = conn.Call(ctx, ggmlrpc.CmdCopyTensor, cat(sb, db))
	require.NoError(t, err)
	require.Equal(t, []byte{1}, resp)
	require.Equal(t, data, get(db, 0, 64))

	_, err = conn.Call(ctx, ggmlrpc.CmdMemsetTensor, cat(db, ggmlrpc.EncodeUint64(4), ggmlrpc.EncodeUint64(8), []byte{0xff}))
	require.NoError(t, err)
	require.Equal(t, cat(data[:4], bytes.Repeat([]byte{0xff}, 8), data[12:]), get(db, 0, 64))

	allocReq := cat(ggmlrpc.EncodeUint32(0), sb, make([]byte, ggmlrpc.TensorSize*ggmlrpc.MaxSrc))
	resp, err = conn.Call(ctx, ggmlrpc.CmdGetAllocSize, allocReq)
	require.NoError(t, err)
	require.Equal(t, ggmlrpc.EncodeUint64(64), resp)

	resp, err = conn.Call(ctx, ggmlrpc.CmdSetTensorHash, cat(sb, make([]byte, 16)))
	require.NoError(t, err)
	require.Equal(t, []byte{0}, resp)

	// A one-node graph, dst = DUP(src) (GGML_OP_DUP is 1). The real server computes it, the
	// double does not; both must go on answering afterwards.
	node := dst
	node.Op, node.Src[0] = 1, src.ID
	nb, err := node.AppendBinary(nil)
	require.NoError(t, err)
	graph := cat(ggmlrpc.EncodeUint32(0), ggmlrpc.EncodeUint32(1), ggmlrpc.EncodeUint64(node.ID), ggmlrpc.EncodeUint32(2), nb, sb)
	_, err = conn.Call(ctx, ggmlrpc.CmdGraphCompute, graph)
	require.NoError(t, err)
	_, err = conn.Call(ctx, ggmlrpc.CmdGraphRecompute, ggmlrpc.EncodeUint32(0))
	require.NoError(t, err)

	_, err = conn.Call(ctx, ggmlrpc.CmdFreeBuffer, ggmlrpc.EncodeUint64(handle))
	require.NoError(t, err)
	n, err := conn.DeviceCount(ctx)
	require.NoError(t, err)
	require.Positive(t, n, "still answering after the buffer is gone")
}
