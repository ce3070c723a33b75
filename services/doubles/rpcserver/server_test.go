package rpcserver_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, opts rpcserver.Options) *rpcserver.Server {
	t.Helper()
	s, err := rpcserver.Start(context.Background(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestProbeSeesConfiguredDevices(t *testing.T) {
	s := start(t, rpcserver.Options{Devices: []rpcserver.DeviceMemory{
		{Free: 3 << 30, Total: 4 << 30},
		{Free: 512 << 20, Total: 1 << 30},
	}})

	info, err := ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), s.Addr())
	require.NoError(t, err)
	require.Equal(t, ggmlrpc.ProtocolVersion, info.ProtocolVersion)
	require.Equal(t, []ggmlrpc.Device{
		{Index: 0, Free: 3 << 30, Total: 4 << 30, Alignment: 32, MaxSize: ^uint64(0)},
		{Index: 1, Free: 512 << 20, Total: 1 << 30, Alignment: 32, MaxSize: ^uint64(0)},
	}, info.Devices)

	require.NoError(t, s.SetFreeMemory(1, 100<<20))
	require.Error(t, s.SetFreeMemory(2, 1))
	info, err = ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), s.Addr())
	require.NoError(t, err)
	require.Equal(t, uint64(100<<20), info.Devices[1].Free)

	st := s.Stats()
	require.Equal(t, 2, st.Connections)
	require.Equal(t, 2, st.Commands[ggmlrpc.CmdHello])
	require.Equal(t, 4, st.Commands[ggmlrpc.CmdGetDeviceMemory]) // two devices, two probes
}

func TestOtherProtocolVersionIsAMismatch(t *testing.T) {
	for _, v := range []ggmlrpc.Version{{Major: 6}, {Major: 3, Minor: 6, Patch: 1}} {
		t.Run(v.String(), func(t *testing.T) {
			s := start(t, rpcserver.Options{ProtocolVersion: v})
			_, err := ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), s.Addr())
			var vm *ggmlrpc.VersionMismatchError
			require.ErrorAs(t, err, &vm)
			require.Equal(t, ggmlrpc.VersionMismatchError{Got: v, Want: ggmlrpc.ProtocolVersion}, *vm)
		})
	}
}

// rawConn speaks the framing by hand, to see exactly when the double closes.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	return c
}

func requireClosed(t *testing.T, c net.Conn) {
	t.Helper()
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF, "the server should close without a reply")
}

func hello(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdHello, ggmlrpc.EncodeHelloRequest()))
	_, err := ggmlrpc.ReadResponse(c, ggmlrpc.HelloResponseSize)
	require.NoError(t, err)
}

func TestClosesLikeTheRealServer(t *testing.T) {
	s := start(t, rpcserver.Options{})
	for name, tc := range map[string]func(c net.Conn){
		"first command not HELLO": func(c net.Conn) {
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdDeviceCount, nil))
		},
		"HELLO of the old layout": func(c net.Conn) {
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdHello, nil))
		},
		"second HELLO": func(c net.Conn) {
			hello(t, c)
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdHello, ggmlrpc.EncodeHelloRequest()))
		},
		"unknown command": func(c net.Conn) {
			hello(t, c)
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdCount, nil))
		},
		"wrong request size": func(c net.Conn) {
			hello(t, c)
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdGetDeviceMemory, []byte{0, 0}))
		},
		"device out of range": func(c net.Conn) {
			hello(t, c)
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdGetDeviceMemory, ggmlrpc.EncodeUint32(1)))
		},
		"unknown buffer": func(c net.Conn) {
			hello(t, c)
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdBufferGetBase, ggmlrpc.EncodeUint64(42)))
		},
		"recompute without a graph": func(c net.Conn) {
			hello(t, c)
			require.NoError(t, ggmlrpc.WriteCommand(c, ggmlrpc.CmdGraphRecompute, ggmlrpc.EncodeUint32(0)))
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := rawConn(t, s.Addr())
			tc(c)
			requireClosed(t, c)
		})
	}
}

func TestServesOneConnectionAtATime(t *testing.T) {
	s := start(t, rpcserver.Options{})
	busy := rawConn(t, s.Addr())
	hello(t, busy)

	_, err := ggmlrpc.Probe(ctxTimeout(t, 200*time.Millisecond), s.Addr())
	require.ErrorIs(t, err, ggmlrpc.ErrNoReply, "a busy rpc-server does not answer")
	require.ErrorIs(t, err, ggmlrpc.ErrNotRPCServer)

	require.NoError(t, busy.Close())
	_, err = ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), s.Addr())
	require.NoError(t, err)
}

func TestConcurrentOptionServesInParallel(t *testing.T) {
	s := start(t, rpcserver.Options{Concurrent: true})
	busy := rawConn(t, s.Addr())
	hello(t, busy)
	_, err := ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), s.Addr())
	require.NoError(t, err)
}

func TestCloseEndsActiveConnections(t *testing.T) {
	s, err := rpcserver.Start(context.Background(), rpcserver.Options{})
	require.NoError(t, err)
	c := rawConn(t, s.Addr())
	hello(t, c)
	require.NoError(t, s.Close())
	requireClosed(t, c)
	require.NoError(t, s.Close(), "Close is idempotent")
}

func TestContextEndStopsServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := rpcserver.Start(ctx, rpcserver.Options{})
	require.NoError(t, err)
	cancel()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", s.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, s.Close())
}

// TestModelLoadCommands runs the commands llama-server sends while loading a model and checks
// the answers a CPU rpc-server gives (package rpcservertest checks the same against whichever
// binary it runs).
func TestModelLoadCommands(t *testing.T) {
	s := start(t, rpcserver.Options{Devices: []rpcserver.DeviceMemory{{Free: 1 << 30, Total: 2 << 30}}})
	ctx := ctxTimeout(t, 10*time.Second)
	conn, err := ggmlrpc.Dial(ctx, s.Addr())
	require.NoError(t, err)
	defer conn.Close()

	// ALLOC_BUFFER takes memory from the reported free memory.
	resp, err := conn.Call(ctx, ggmlrpc.CmdAllocBuffer, binary.LittleEndian.AppendUint64(ggmlrpc.EncodeUint32(0), 4096))
	require.NoError(t, err)
	handle, size := binary.LittleEndian.Uint64(resp), binary.LittleEndian.Uint64(resp[8:])
	require.NotZero(t, handle)
	require.EqualValues(t, 4096, size)
	free, _, err := conn.DeviceMemory(ctx, 0)
	require.NoError(t, err)
	require.EqualValues(t, 1<<30-4096, free)

	resp, err = conn.Call(ctx, ggmlrpc.CmdBufferGetBase, ggmlrpc.EncodeUint64(handle))
	require.NoError(t, err)
	base, _ := ggmlrpc.DecodeUint64(resp)
	require.Zero(t, base%32, "aligned")

	// A 4×4 f32 tensor at base+64.
	tensor := ggmlrpc.Tensor{ID: 0xabc, Type: 0, Buffer: handle, Ne: [4]uint32{4, 4, 1, 1},
		Nb: [4]uint32{4, 16, 64, 64}, Data: base + 64}
	tb, err := tensor.AppendBinary(nil)
	require.NoError(t, err)

	_, err = conn.Call(ctx, ggmlrpc.CmdInitTensor, tb)
	require.NoError(t, err)

	allocReq := append(ggmlrpc.EncodeUint32(0), tb...)
	allocReq = append(allocReq, make([]byte, ggmlrpc.TensorSize*ggmlrpc.MaxSrc)...)
	resp, err = conn.Call(ctx, ggmlrpc.CmdGetAllocSize, allocReq)
	require.NoError(t, err)
	require.Equal(t, ggmlrpc.EncodeUint64(64), resp)

	resp, err = conn.Call(ctx, ggmlrpc.CmdSetTensorHash, append(append([]byte{}, tb...), make([]byte, 16)...))
	require.NoError(t, err)
	require.Equal(t, []byte{0}, resp, "no cache: the client must send the data")

	data := bytes.Repeat([]byte{1, 2, 3, 4}, 16)
	setReq := append(append(append([]byte{}, tb...), ggmlrpc.EncodeUint64(0)...), data...)
	_, err = conn.Call(ctx, ggmlrpc.CmdSetTensor, setReq)
	require.NoError(t, err)

	getReq := append(append(append([]byte{}, tb...), ggmlrpc.EncodeUint64(8)...), ggmlrpc.EncodeUint64(16)...)
	resp, err = conn.Call(ctx, ggmlrpc.CmdGetTensor, getReq)
	require.NoError(t, err)
	require.Equal(t, data[8:24], resp)

	// MEMSET_TENSOR the first 8 bytes, then read them back.
	memsetReq := append(append(append(append([]byte{}, tb...), ggmlrpc.EncodeUint64(0)...), ggmlrpc.EncodeUint64(8)...), 0xee)
	_, err = conn.Call(ctx, ggmlrpc.CmdMemsetTensor, memsetReq)
	require.NoError(t, err)
	getReq = append(append(append([]byte{}, tb...), ggmlrpc.EncodeUint64(0)...), ggmlrpc.EncodeUint64(12)...)
	resp, err = conn.Call(ctx, ggmlrpc.CmdGetTensor, getReq)
	require.NoError(t, err)
	require.Equal(t, append(bytes.Repeat([]byte{0xee}, 8), 1, 2, 3, 4), resp)

	// COPY_TENSOR to a second tensor at base+1024.
	dst := tensor
	dst.ID, dst.Data = 0xdef, base+1024
	db, err := dst.AppendBinary(nil)
	require.NoError(t, err)
	resp, err = conn.Call(ctx, ggmlrpc.CmdCopyTensor, append(append([]byte{}, tb...), db...))
	require.NoError(t, err)
	require.Equal(t, []byte{1}, resp)
	resp, err = conn.Call(ctx, ggmlrpc.CmdGetTensor, append(append(append([]byte{}, db...), ggmlrpc.EncodeUint64(0)...), ggmlrpc.EncodeUint64(64)...))
	require.NoError(t, err)
	require.Equal(t, append(bytes.Repeat([]byte{0xee}, 8), data[8:]...), resp)

	// GRAPH_COMPUTE of one node (dst = copy of tensor), then GRAPH_RECOMPUTE.
	node := dst
	node.Op, node.Src[0] = 1, tensor.ID
	nb, err := node.AppendBinary(nil)
	require.NoError(t, err)
	graph := ggmlrpc.EncodeUint32(0)
	graph = binary.LittleEndian.AppendUint32(graph, 1)
	graph = binary.LittleEndian.AppendUint64(graph, node.ID)
	graph = binary.LittleEndian.AppendUint32(graph, 2)
	graph = append(append(graph, nb...), tb...)
	_, err = conn.Call(ctx, ggmlrpc.CmdGraphCompute, graph)
	require.NoError(t, err)
	_, err = conn.Call(ctx, ggmlrpc.CmdGraphRecompute, ggmlrpc.EncodeUint32(0))
	require.NoError(t, err)

	// BUFFER_CLEAR, then everything reads as the clear value.
	_, err = conn.Call(ctx, ggmlrpc.CmdBufferClear, append(ggmlrpc.EncodeUint64(handle), 7))
	require.NoError(t, err)
	resp, err = conn.Call(ctx, ggmlrpc.CmdGetTensor, getReq)
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte{7}, 12), resp)

	// A buffer larger than the free memory fails like an allocation failure: null pointer.
	resp, err = conn.Call(ctx, ggmlrpc.CmdAllocBuffer, binary.LittleEndian.AppendUint64(ggmlrpc.EncodeUint32(0), 2<<30))
	require.NoError(t, err)
	require.Equal(t, make([]byte, 16), resp)

	_, err = conn.Call(ctx, ggmlrpc.CmdFreeBuffer, ggmlrpc.EncodeUint64(handle))
	require.NoError(t, err)
	free, _, err = conn.DeviceMemory(ctx, 0)
	require.NoError(t, err)
	require.EqualValues(t, 1<<30, free)
}

func TestBuffersAreFreedWhenTheClientLeaves(t *testing.T) {
	s := start(t, rpcserver.Options{Devices: []rpcserver.DeviceMemory{{Free: 1 << 30, Total: 1 << 30}}})
	ctx := ctxTimeout(t, 10*time.Second)
	conn, err := ggmlrpc.Dial(ctx, s.Addr())
	require.NoError(t, err)
	_, err = conn.Call(ctx, ggmlrpc.CmdAllocBuffer, binary.LittleEndian.AppendUint64(ggmlrpc.EncodeUint32(0), 256<<20))
	require.NoError(t, err)
	require.EqualValues(t, 768<<20, s.Devices()[0].Free)
	require.NoError(t, conn.Close())

	require.Eventually(t, func() bool { return s.Devices()[0].Free == 1<<30 }, 5*time.Second, 5*time.Millisecond)
}

func TestTensorOutsideItsBufferClosesTheConnection(t *testing.T) {
	s := start(t, rpcserver.Options{})
	ctx := ctxTimeout(t, 10*time.Second)
	conn, err := ggmlrpc.Dial(ctx, s.Addr())
	require.NoError(t, err)
	defer conn.Close()
	resp, err := conn.Call(ctx, ggmlrpc.CmdAllocBuffer, binary.LittleEndian.AppendUint64(ggmlrpc.EncodeUint32(0), 64))
	require.NoError(t, err)
	handle := binary.LittleEndian.Uint64(resp)
	resp, err = conn.Call(ctx, ggmlrpc.CmdBufferGetBase, ggmlrpc.EncodeUint64(handle))
	require.NoError(t, err)
	base, _ := ggmlrpc.DecodeUint64(resp)

	big := ggmlrpc.Tensor{Type: 0, Buffer: handle, Ne: [4]uint32{32, 1, 1, 1}, Nb: [4]uint32{4, 128, 128, 128}, Data: base}
	tb, err := big.AppendBinary(nil)
	require.NoError(t, err)
	_, err = conn.Call(ctx, ggmlrpc.CmdGetTensor, append(append(append([]byte{}, tb...), ggmlrpc.EncodeUint64(0)...), ggmlrpc.EncodeUint64(4)...))
	require.ErrorIs(t, err, ggmlrpc.ErrProtocol)
}

func TestCrashOnBrokenPipe(t *testing.T) {
	s := start(t, rpcserver.Options{CrashOnBrokenPipe: true})
	busy := rawConn(t, s.Addr())
	hello(t, busy)

	// A client sends HELLO while the server is busy, then closes normally before the reply.
	quitter := rawConn(t, s.Addr())
	require.NoError(t, ggmlrpc.WriteCommand(quitter, ggmlrpc.CmdHello, ggmlrpc.EncodeHelloRequest()))
	time.Sleep(50 * time.Millisecond) // let the request arrive before the close
	require.NoError(t, quitter.Close())
	require.NoError(t, busy.Close())

	select {
	case <-s.Crashed():
	case <-time.After(5 * time.Second):
		t.Fatal("the double did not die like the real server")
	}
	_, err := ggmlrpc.Probe(ctxTimeout(t, 2*time.Second), s.Addr())
	require.Error(t, err)
}

func TestAbandonedProbeDoesNotCrashTheServer(t *testing.T) {
	s := start(t, rpcserver.Options{CrashOnBrokenPipe: true})
	busy := rawConn(t, s.Addr())
	hello(t, busy)

	_, err := ggmlrpc.Probe(ctxTimeout(t, 200*time.Millisecond), s.Addr())
	require.ErrorIs(t, err, ggmlrpc.ErrNoReply)
	require.NoError(t, busy.Close())

	_, err = ggmlrpc.Probe(ctxTimeout(t, 5*time.Second), s.Addr())
	require.NoError(t, err)
	select {
	case <-s.Crashed():
		t.Fatal("the abandoned probe crashed the server")
	default:
	}
}
