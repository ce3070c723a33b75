package ggmlrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Defaults of a zero Client.
const (
	// DefaultTimeout bounds a Dial, Probe or call whose context has no deadline, so that a
	// silent peer can never hold a prober forever.
	DefaultTimeout = 5 * time.Second
	// MaxDevices is the largest device count a probe believes; more is a protocol error.
	MaxDevices = 256
	// DefaultMaxResponse bounds a variable-size response (GET_TENSOR) read by Conn.Call.
	DefaultMaxResponse = 64 << 20
)

// Client dials and probes rpc-servers. The zero value speaks ProtocolVersion with
// DefaultTimeout.
type Client struct {
	// Want is the protocol version the client speaks, and the one a server must be
	// compatible with (Version.Accepts). Zero means ProtocolVersion. Set it to the version of
	// the llama-server that will use the servers, so a probe rejects what it would reject.
	Want Version
	// Timeout bounds each operation whose context has no deadline. Zero means DefaultTimeout.
	Timeout time.Duration
}

func (c Client) want() Version {
	if c.Want.IsZero() {
		return ProtocolVersion
	}
	return c.Want
}

func (c Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Info is what a probe learned about an rpc-server.
type Info struct {
	// Addr is the probed address as given.
	Addr string
	// ProtocolVersion is the version the server reported in HELLO.
	ProtocolVersion Version
	// Devices are the server's devices in index order. The protocol carries no device names:
	// llama-server names them RPC0, RPC1, … itself, in the order it adds servers.
	Devices []Device
}

// FreeMemory is the sum of the devices' free memory.
func (i *Info) FreeMemory() uint64 {
	var n uint64
	for _, d := range i.Devices {
		n += d.Free
	}
	return n
}

// Device is one device of an rpc-server.
type Device struct {
	Index int
	// Free and Total are the device's memory in bytes as the server reports it (a CPU device
	// reports the machine's available and total RAM).
	Free, Total uint64
	// Alignment is the buffer alignment of the device's default buffer type (32 for CPU).
	Alignment uint64
	// MaxSize is the largest buffer the device can allocate (2^64-1 for CPU: no limit).
	MaxSize uint64
}

// Probe connects to addr, completes the HELLO handshake and asks for every device's memory,
// alignment and maximum buffer size, then closes the connection. See Client.Probe.
func Probe(ctx context.Context, addr string) (*Info, error) {
	return Client{}.Probe(ctx, addr)
}

// Probe connects to addr, completes the HELLO handshake and asks for every device's memory,
// alignment and maximum buffer size, then closes the connection. The whole probe ends by the
// context's deadline, or after c's Timeout when it has none.
//
// Errors: a dial error wrapped as it is; the context's error when it is cancelled;
// ErrNotRPCServer (with ErrNoReply when the peer was silent) when the handshake fails;
// *VersionMismatchError when the server's version is not usable; ErrProtocol when a later
// reply is malformed.
func (c Client) Probe(ctx context.Context, addr string) (_ *Info, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout())
		defer cancel()
	}
	conn, err := c.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			conn.Abort() // a request may be outstanding: see Abort
		} else {
			conn.Close()
		}
	}()

	n, err := conn.DeviceCount(ctx)
	if err != nil {
		return nil, err
	}
	info := &Info{Addr: addr, ProtocolVersion: conn.Version(), Devices: make([]Device, n)}
	for i := range info.Devices {
		d := &info.Devices[i]
		d.Index = i
		if d.Free, d.Total, err = conn.DeviceMemory(ctx, i); err != nil {
			return nil, err
		}
		if d.Alignment, err = conn.Alignment(ctx, i); err != nil {
			return nil, err
		}
		if d.MaxSize, err = conn.MaxSize(ctx, i); err != nil {
			return nil, err
		}
	}
	return info, nil
}

// Dial connects to addr and completes the HELLO handshake. See Client.Dial.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	return Client{}.Dial(ctx, addr)
}

// Dial connects to addr and completes the HELLO handshake by the context's deadline (or c's
// Timeout). When a server closes the connection on a HELLO of c's layout without a word, Dial
// tries the other layout once on a new connection, so that a server of protocol 1–3 (or 4+,
// for a legacy Want) is reported as a *VersionMismatchError rather than as ErrNotRPCServer.
func (c Client) Dial(ctx context.Context, addr string) (*Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout())
		defer cancel()
	}
	want := c.want()
	conn, v, closed, err := c.dialHello(ctx, addr, want.HasConnCaps())
	if closed {
		// Only the version matters here; the first error stands whatever happens.
		if alt, v2, _, err2 := c.dialHello(ctx, addr, !want.HasConnCaps()); err2 == nil {
			alt.Close()
			return nil, &VersionMismatchError{Got: v2, Want: want}
		}
	}
	if err != nil {
		return nil, err
	}
	if !want.Accepts(v) {
		conn.Close()
		return nil, &VersionMismatchError{Got: v, Want: want}
	}
	return conn, nil
}

// dialHello dials and sends one HELLO of the given layout. closed reports that the peer closed
// the connection (or reset it) before sending a single byte of reply.
func (c Client) dialHello(ctx context.Context, addr string, connCaps bool) (conn *Conn, v Version, closed bool, err error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if cerr := ctx.Err(); errors.Is(cerr, context.Canceled) {
			return nil, v, false, fmt.Errorf("ggmlrpc: dial %s: %w", addr, cerr)
		}
		return nil, v, false, fmt.Errorf("ggmlrpc: dial %s: %w", addr, err)
	}
	cn := &Conn{nc: nc, addr: addr, timeout: c.timeout(), MaxResponse: DefaultMaxResponse}
	defer func() {
		if err != nil {
			cn.Abort()
		}
	}()
	stop := cn.begin(ctx)
	defer stop()

	req := EncodeHelloRequest()
	if !connCaps {
		req = nil
	}
	r := &countingReader{r: nc}
	payload, err := func() ([]byte, error) {
		if err := WriteCommand(nc, CmdHello, req); err != nil {
			return nil, err
		}
		size, err := ReadResponseSize(r)
		if err != nil {
			return nil, err
		}
		if size != HelloResponseSize && size != LegacyHelloResponseSize {
			return nil, fmt.Errorf("HELLO reply announces %d bytes", size)
		}
		return ReadPayload(r, size, size)
	}()
	if err != nil {
		closed = r.n == 0 && isClosed(err)
		return nil, v, closed, cn.fail(ctx, ErrNotRPCServer, "HELLO", r.n, err)
	}
	v, err = DecodeHelloResponse(payload)
	if err != nil {
		return nil, v, false, fmt.Errorf("%w: %s: %w", ErrNotRPCServer, addr, err)
	}
	cn.version = v
	return cn, v, false, nil
}

// Conn is a connection to an rpc-server after a successful handshake. It is not safe for
// concurrent use: the protocol has no request ids, so calls must not interleave.
type Conn struct {
	nc      net.Conn
	addr    string
	version Version
	timeout time.Duration

	// MaxResponse bounds variable-size responses read by Call (GET_TENSOR).
	MaxResponse uint64
}

// Version is the protocol version the server reported.
func (c *Conn) Version() Version { return c.version }

// Close closes the connection; the server then frees every buffer the connection allocated.
// Use it only when every request has been answered; otherwise use Abort.
func (c *Conn) Close() error { return c.nc.Close() }

// Abort closes the connection with a TCP reset instead of an orderly shutdown. Use it to give
// up on a connection with a request still unanswered: the real rpc-server, which serves one
// connection at a time, may only later get to a request that was queued behind a busy client;
// if the client had closed normally by then, the server's reply hits a closed socket and the
// server dies of SIGPIPE (observed with protocol 5.1.0). After a reset it finds the connection
// dead before replying and goes on serving.
func (c *Conn) Abort() error {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.nc.Close()
}

// Call sends cmd with payload and, for commands that have a response (LayoutOf), reads and
// returns it. A fixed-size response of another size, a closed connection or a timeout is an
// ErrProtocol error; the connection is unusable afterwards.
func (c *Conn) Call(ctx context.Context, cmd Command, payload []byte) ([]byte, error) {
	layout, ok := LayoutOf(cmd)
	if !ok {
		return nil, fmt.Errorf("ggmlrpc: unknown command %d", uint8(cmd))
	}
	stop := c.begin(ctx)
	defer stop()
	if err := WriteCommand(c.nc, cmd, payload); err != nil {
		return nil, c.fail(ctx, ErrProtocol, cmd.String(), 0, err)
	}
	if !layout.HasResponse {
		return nil, nil
	}
	r := &countingReader{r: c.nc}
	var (
		resp []byte
		err  error
	)
	if layout.ResponseSize == VariableSize {
		resp, err = ReadResponseLimit(r, c.MaxResponse)
	} else {
		resp, err = ReadResponse(r, layout.ResponseSize)
	}
	if err != nil {
		return nil, c.fail(ctx, ErrProtocol, cmd.String(), r.n, err)
	}
	return resp, nil
}

// DeviceCount asks how many devices the server has.
func (c *Conn) DeviceCount(ctx context.Context) (int, error) {
	b, err := c.Call(ctx, CmdDeviceCount, nil)
	if err != nil {
		return 0, err
	}
	n, _ := DecodeUint32(b) // Call checked the size
	if n > MaxDevices {
		return 0, fmt.Errorf("%w: %s reports %d devices", ErrProtocol, c.addr, n)
	}
	return int(n), nil
}

// DeviceMemory asks for a device's free and total memory in bytes.
func (c *Conn) DeviceMemory(ctx context.Context, device int) (free, total uint64, err error) {
	b, err := c.Call(ctx, CmdGetDeviceMemory, EncodeUint32(uint32(device)))
	if err != nil {
		return 0, 0, err
	}
	return DecodeDeviceMemory(b)
}

// Alignment asks for the alignment of a device's default buffer type.
func (c *Conn) Alignment(ctx context.Context, device int) (uint64, error) {
	b, err := c.Call(ctx, CmdGetAlignment, EncodeUint32(uint32(device)))
	if err != nil {
		return 0, err
	}
	return DecodeUint64(b)
}

// MaxSize asks for the largest buffer a device can allocate.
func (c *Conn) MaxSize(ctx context.Context, device int) (uint64, error) {
	b, err := c.Call(ctx, CmdGetMaxSize, EncodeUint32(uint32(device)))
	if err != nil {
		return 0, err
	}
	return DecodeUint64(b)
}

// begin bounds the next exchange by ctx's deadline (or the Conn's timeout) and makes a
// cancellation of ctx interrupt blocked reads and writes. The returned func undoes the latter.
func (c *Conn) begin(ctx context.Context) (stop func() bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(c.timeout)
	}
	_ = c.nc.SetDeadline(dl)
	return context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
}

// fail classifies err from an exchange named op. read is how many reply bytes had arrived.
func (c *Conn) fail(ctx context.Context, class error, op string, read int, err error) error {
	if cerr := ctx.Err(); errors.Is(cerr, context.Canceled) {
		return fmt.Errorf("ggmlrpc: %s %s: %w", op, c.addr, cerr)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) && read == 0 {
		return fmt.Errorf("%w: %w: %s %s: %w", class, ErrNoReply, op, c.addr, err)
	}
	return fmt.Errorf("%w: %s %s: %w", class, op, c.addr, err)
}

// isClosed reports whether err means the peer closed or reset the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || isConnReset(err)
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
