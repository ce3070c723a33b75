package rpcserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"syscall"

	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

var le = binary.LittleEndian

// session is one client connection, like the real server's per-connection rpc_server: the
// buffers it allocates are its own and are freed when it ends.
type session struct {
	s       *Server
	conn    net.Conn
	r       *bufio.Reader
	buffers map[uint64]*buffer // by handle
	graphs  map[uint32]bool    // devices with a stored graph, for GRAPH_RECOMPUTE
}

func newSession(s *Server, c net.Conn) *session {
	return &session{
		s: s, conn: c, r: bufio.NewReader(c),
		buffers: map[uint64]*buffer{}, graphs: map[uint32]bool{},
	}
}

// release frees the session's buffers, as the real server does when a client leaves.
func (ss *session) release() {
	for h, b := range ss.buffers {
		ss.s.free(b)
		delete(ss.buffers, h)
	}
}

func (ss *session) logf(format string, args ...any) { ss.s.opts.Logf(format, args...) }

// run serves the connection until the client leaves or sends something the real server would
// not serve; in both cases it returns and the caller closes the connection.
func (ss *session) run() {
	if !ss.hello() {
		return
	}
	for {
		cmd, size, err := ggmlrpc.ReadCommandHeader(ss.r)
		if err != nil {
			return
		}
		ss.s.count(cmd)
		layout, ok := ggmlrpc.LayoutOf(cmd)
		if !ok {
			ss.logf("Unknown command: %d", cmd)
			return
		}
		if cmd == ggmlrpc.CmdHello {
			return // HELLO is only valid as the first command
		}
		if layout.RequestSize != ggmlrpc.VariableSize && size != uint64(layout.RequestSize) {
			return
		}
		payload, err := ggmlrpc.ReadPayload(ss.r, size, ss.s.opts.MaxPayload)
		if err != nil {
			if size > ss.s.opts.MaxPayload {
				ss.logf("[%s] request of %d bytes exceeds the double's limit", cmd, size)
			}
			return
		}
		resp, ok := ss.handle(cmd, payload)
		if !ok {
			return
		}
		if layout.HasResponse && !ss.reply(resp) {
			return
		}
	}
}

// hello serves the mandatory first command.
func (ss *session) hello() bool {
	v := ss.s.opts.ProtocolVersion
	cmd, size, err := ggmlrpc.ReadCommandHeader(ss.r)
	if err != nil {
		return false
	}
	ss.s.count(cmd)
	if cmd != ggmlrpc.CmdHello {
		ss.logf("Expected HELLO command, update client")
		return false
	}
	want := uint64(ggmlrpc.HelloRequestSize)
	if !v.HasConnCaps() {
		want = 0
	}
	if size != want {
		ss.logf("HELLO request size mismatch (%d vs %d) — client needs upgrade to protocol v%d.x", size, want, v.Major)
		return false
	}
	if _, err := ggmlrpc.ReadPayload(ss.r, size, size); err != nil {
		return false
	}
	return ss.reply(ggmlrpc.EncodeHelloResponse(v))
}

// reply sends a response the way the real server does, size and payload in two writes. When
// the client has closed its end normally, the first write draws a reset and the second fails
// with EPIPE, which kills the real server by SIGPIPE (emulated with Options.CrashOnBrokenPipe).
// A client that reset the connection itself makes the first write fail with ECONNRESET, which
// raises no signal: the real server just drops the connection.
func (ss *session) reply(payload []byte) bool {
	_, err := ss.conn.Write(ggmlrpc.EncodeUint64(uint64(len(payload))))
	if err == nil && len(payload) > 0 {
		_, err = ss.conn.Write(payload)
	}
	if err != nil && ss.s.opts.CrashOnBrokenPipe && isBrokenPipe(err) {
		ss.logf("rpc-server double: reply to a closed connection; the real server dies of SIGPIPE here")
		ss.s.crash()
	}
	return err == nil
}

func isBrokenPipe(err error) bool { return errors.Is(err, syscall.EPIPE) }

// handle serves one request; ok false closes the connection without a reply.
func (ss *session) handle(cmd ggmlrpc.Command, p []byte) (resp []byte, ok bool) {
	switch cmd {
	case ggmlrpc.CmdDeviceCount:
		return ggmlrpc.EncodeUint32(uint32(len(ss.s.devices))), true
	case ggmlrpc.CmdGetDeviceMemory:
		dev, ok := ss.device(p)
		if !ok {
			return nil, false
		}
		ss.s.mu.Lock()
		m := ss.s.reportedLocked(dev)
		ss.s.mu.Unlock()
		return ggmlrpc.EncodeDeviceMemory(m.Free, m.Total), true
	case ggmlrpc.CmdGetAlignment:
		if _, ok := ss.device(p); !ok {
			return nil, false
		}
		return ggmlrpc.EncodeUint64(ss.s.opts.Alignment), true
	case ggmlrpc.CmdGetMaxSize:
		if _, ok := ss.device(p); !ok {
			return nil, false
		}
		return ggmlrpc.EncodeUint64(ss.s.opts.MaxSize), true
	case ggmlrpc.CmdAllocBuffer:
		return ss.allocBuffer(p)
	case ggmlrpc.CmdBufferGetBase:
		b, ok := ss.buffers[le.Uint64(p)]
		if !ok {
			ss.logf("[buffer_get_base] buffer not found")
			return nil, false
		}
		return ggmlrpc.EncodeUint64(b.base), true
	case ggmlrpc.CmdFreeBuffer:
		b, ok := ss.buffers[le.Uint64(p)]
		if !ok {
			ss.logf("[free_buffer] buffer not found")
			return nil, false
		}
		ss.s.free(b)
		delete(ss.buffers, b.handle)
		return nil, true
	case ggmlrpc.CmdBufferClear:
		b, ok := ss.buffers[le.Uint64(p)]
		if !ok {
			ss.logf("[buffer_clear] buffer not found")
			return nil, false
		}
		b.clear(p[8])
		return nil, true
	case ggmlrpc.CmdSetTensorHash:
		// A server started without a cache (-c) never has the data: "not cached", try SET_TENSOR.
		return []byte{0}, true
	case ggmlrpc.CmdSetTensor:
		return nil, ss.setTensor(p)
	case ggmlrpc.CmdGetTensor:
		return ss.getTensor(p)
	case ggmlrpc.CmdMemsetTensor:
		return nil, ss.memsetTensor(p)
	case ggmlrpc.CmdCopyTensor:
		return ss.copyTensor(p)
	case ggmlrpc.CmdInitTensor:
		t, _ := ggmlrpc.DecodeTensor(p)
		_, ok := ss.deserialize(&t)
		return nil, ok // a CPU buffer has nothing to initialise
	case ggmlrpc.CmdGetAllocSize:
		return ss.getAllocSize(p)
	case ggmlrpc.CmdGraphCompute:
		return nil, ss.graphCompute(p)
	case ggmlrpc.CmdGraphRecompute:
		dev, ok := ss.device(p)
		if !ok || !ss.graphs[uint32(dev)] {
			return nil, false
		}
		return nil, true // stub: nothing is computed
	}
	return nil, false
}

// device reads a uint32 device index and checks that it exists.
func (ss *session) device(p []byte) (int, bool) {
	dev := le.Uint32(p)
	return int(dev), int(dev) < len(ss.s.devices)
}

func (ss *session) allocBuffer(p []byte) ([]byte, bool) {
	dev, ok := ss.device(p)
	if !ok {
		return nil, false
	}
	size := le.Uint64(p[4:])
	b, ok := ss.s.alloc(dev, size)
	if !ok {
		// The real server answers an allocation failure with a null buffer, not an error.
		return make([]byte, 16), true
	}
	ss.buffers[b.handle] = b
	return le.AppendUint64(le.AppendUint64(nil, b.handle), b.size), true
}

// deserialize resolves a tensor's buffer like the real server's deserialize_tensor: an invalid
// type fails, an unknown buffer handle resolves to no buffer, and a tensor that does not fit in
// its buffer fails (the real server aborts there).
func (ss *session) deserialize(t *ggmlrpc.Tensor) (*buffer, bool) {
	if !validType(t) {
		ss.logf("[deserialize_tensor] invalid tensor type received: %d", t.Type)
		return nil, false
	}
	b := ss.buffers[t.Buffer]
	if b == nil {
		return nil, true
	}
	n := nbytes(t)
	if t.Data+n < t.Data || !b.contains(t.Data, n) {
		ss.logf("[deserialize_tensor] tensor %q outside its buffer (the real server aborts here)", t.NameString())
		return nil, false
	}
	return b, true
}

// region checks the real server's bounds for SET_TENSOR and GET_TENSOR: data+offset inside
// [base, base+size) and size bytes from there inside too. It returns the buffer offset.
func region(b *buffer, data, offset, size uint64) (uint64, bool) {
	start := data + offset
	p0, p1 := b.base, b.base+b.size
	if start < p0 || start >= p1 || size > p1-start {
		return 0, false
	}
	return start - p0, true
}

func (ss *session) setTensor(p []byte) bool {
	if len(p) < ggmlrpc.SetTensorHeaderSize {
		return false
	}
	t, _ := ggmlrpc.DecodeTensor(p)
	offset := le.Uint64(p[ggmlrpc.TensorSize:])
	data := p[ggmlrpc.SetTensorHeaderSize:]
	b, ok := ss.deserialize(&t)
	if !ok || b == nil {
		ss.logf("[set_tensor] error deserializing tensor")
		return false
	}
	off, ok := region(b, t.Data, offset, uint64(len(data)))
	if !ok {
		ss.logf("[set_tensor] tensor data region out of buffer bounds")
		return false
	}
	b.write(off, data)
	return true
}

func (ss *session) getTensor(p []byte) ([]byte, bool) {
	t, _ := ggmlrpc.DecodeTensor(p)
	offset := le.Uint64(p[ggmlrpc.TensorSize:])
	size := le.Uint64(p[ggmlrpc.TensorSize+8:])
	b, ok := ss.deserialize(&t)
	if !ok || b == nil {
		ss.logf("[get_tensor] error deserializing tensor")
		return nil, false
	}
	off, ok := region(b, t.Data, offset, size)
	if !ok {
		ss.logf("[get_tensor] requested tensor region out of buffer bounds")
		return nil, false
	}
	if size > ss.s.opts.MaxPayload {
		ss.logf("[get_tensor] reply of %d bytes exceeds the double's limit", size)
		return nil, false
	}
	return b.read(off, size), true
}

func (ss *session) memsetTensor(p []byte) bool {
	t, _ := ggmlrpc.DecodeTensor(p)
	offset := le.Uint64(p[ggmlrpc.TensorSize:])
	size := le.Uint64(p[ggmlrpc.TensorSize+8:])
	value := p[ggmlrpc.TensorSize+16]
	b, ok := ss.deserialize(&t)
	if !ok || b == nil {
		ss.logf("[memset_tensor] error deserializing tensor")
		return false
	}
	if n := nbytes(&t); offset > n || size > n-offset {
		ss.logf("[memset_tensor] tensor region out of tensor bounds")
		return false
	}
	if t.Data < b.base {
		return false
	}
	dataOff := t.Data - b.base
	if dataOff > b.size || offset > b.size-dataOff || size > b.size-dataOff-offset {
		ss.logf("[memset_tensor] tensor region out of buffer bounds")
		return false
	}
	b.set(dataOff+offset, size, value)
	return true
}

func (ss *session) copyTensor(p []byte) ([]byte, bool) {
	src, _ := ggmlrpc.DecodeTensor(p)
	dst, _ := ggmlrpc.DecodeTensor(p[ggmlrpc.TensorSize:])
	sb, ok1 := ss.deserialize(&src)
	db, ok2 := ss.deserialize(&dst)
	if !ok1 || !ok2 || sb == nil || db == nil {
		ss.logf("[copy_tensor] error deserializing tensors")
		return nil, false
	}
	n := nbytes(&src)
	if dst.Data+n < dst.Data || dst.Data+n > db.base+db.size {
		ss.logf("[copy_tensor] out-of-bounds write")
		return nil, false
	}
	// Both buffers are host memory, so the copy succeeds (result 1), chunk by chunk.
	so, do := src.Data-sb.base, dst.Data-db.base
	for done := uint64(0); done < n; {
		k := min(n-done, pageSize)
		db.write(do+done, sb.read(so+done, k))
		done += k
	}
	return []byte{1}, true
}

func (ss *session) getAllocSize(p []byte) ([]byte, bool) {
	if _, ok := ss.device(p); !ok {
		return nil, false
	}
	t, _ := ggmlrpc.DecodeTensor(p[4:])
	if _, ok := ss.deserialize(&t); !ok {
		return nil, false
	}
	for i := range ggmlrpc.MaxSrc {
		s, _ := ggmlrpc.DecodeTensor(p[4+ggmlrpc.TensorSize*(i+1):])
		// The real server ignores a source it cannot deserialize, but aborts on one outside
		// its buffer.
		if s.ID == 0 || !validType(&s) {
			continue
		}
		if _, ok := ss.deserialize(&s); !ok {
			return nil, false
		}
	}
	// A CPU buffer type allocates exactly ggml_nbytes.
	return ggmlrpc.EncodeUint64(nbytes(&t)), true
}
