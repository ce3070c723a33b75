package llamaserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

// device is one rpc device as llama-server registers it: RPC<i>[host:port].
type device struct {
	name        string // e.g. "RPC0[127.0.0.1:50052]"
	endpoint    string
	free, total uint64
}

// backends are the connections to the --rpc servers, held for the life of the server.
type backends struct {
	devices []device
	conns   []net.Conn

	mu     sync.Mutex
	closed bool
}

// connectBackends dials every endpoint in order, completes the HELLO handshake and reads its
// devices' memory, as llama-server does while registering --rpc servers. A connection refused
// or a failed handshake is the real server's GGML_ABORT. A busy server is waited for without
// a timeout (the real client has none); ctx ends the wait.
func connectBackends(ctx context.Context, endpoints []string, log *logger) (*backends, error) {
	b := &backends{}
	for _, ep := range endpoints {
		c, devs, err := connectOne(ctx, ep, len(b.devices))
		if err != nil {
			b.close()
			var e *ExitError
			if errors.As(err, &e) {
				log.printf("%s\n", e.Reason)
			}
			return nil, err
		}
		b.conns = append(b.conns, c)
		b.devices = append(b.devices, devs...)
	}
	for _, d := range b.devices {
		log.printf("llama_model_load_from_file_impl: using device %s (%s) (unknown id) - %d MiB free\n", d.name, d.name, d.free>>20)
	}
	return b, nil
}

func connectOne(ctx context.Context, endpoint string, firstIndex int) (net.Conn, []device, error) {
	if _, _, err := net.SplitHostPort(endpoint); err != nil {
		return nil, nil, abortf("Failed to parse endpoint: %s", endpoint)
	}
	var d net.Dialer
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := d.DialContext(dialCtx, "tcp", endpoint)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, abortf("Failed to connect to %s", endpoint)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func() (net.Conn, []device, error) {
		abort(c)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, abortf("Remote RPC server crashed or returned malformed response")
	}
	if err := ggmlrpc.WriteCommand(c, ggmlrpc.CmdHello, ggmlrpc.EncodeHelloRequest()); err != nil {
		return fail()
	}
	resp, err := ggmlrpc.ReadResponse(c, ggmlrpc.HelloResponseSize)
	if err != nil {
		return fail()
	}
	v, err := ggmlrpc.DecodeHelloResponse(resp)
	if err != nil || !ggmlrpc.ProtocolVersion.Accepts(v) {
		abort(c)
		return nil, nil, &ExitError{Code: ExitAbort, Reason: fmt.Sprintf("RPC server version mismatch: %d.%d.%d\n"+
			"/llama.cpp/ggml/src/ggml-rpc/ggml-rpc.cpp:570: RPC handshake failed for %s", v.Major, v.Minor, v.Patch, endpoint)}
	}
	n, err := call32(c, ggmlrpc.CmdDeviceCount, nil)
	if err != nil || n > ggmlrpc.MaxDevices {
		return fail()
	}
	devs := make([]device, n)
	for i := range devs {
		if err := ggmlrpc.WriteCommand(c, ggmlrpc.CmdGetDeviceMemory, ggmlrpc.EncodeUint32(uint32(i))); err != nil {
			return fail()
		}
		b, err := ggmlrpc.ReadResponse(c, ggmlrpc.DeviceMemoryRespSize)
		if err != nil {
			return fail()
		}
		free, total, _ := ggmlrpc.DecodeDeviceMemory(b)
		devs[i] = device{name: fmt.Sprintf("RPC%d[%s]", firstIndex+i, endpoint), endpoint: endpoint, free: free, total: total}
	}
	_ = c.SetDeadline(time.Time{})
	return c, devs, nil
}

func call32(c net.Conn, cmd ggmlrpc.Command, payload []byte) (uint32, error) {
	if err := ggmlrpc.WriteCommand(c, cmd, payload); err != nil {
		return 0, err
	}
	b, err := ggmlrpc.ReadResponse(c, ggmlrpc.DeviceCountResponseSize)
	if err != nil {
		return 0, err
	}
	return ggmlrpc.DecodeUint32(b)
}

// abort resets a connection instead of closing it: a real rpc-server that later answers a
// request on a normally closed connection dies of SIGPIPE.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// watch waits on every idle connection: an rpc-server never sends anything unasked, so a read
// that returns means it went away, and the real server would abort on its next command.
func (b *backends) watch(die func(*ExitError)) {
	if b == nil {
		return
	}
	for _, c := range b.conns {
		go func() {
			_, _ = c.Read(make([]byte, 1))
			if !b.isClosed() {
				die(abortf("Remote RPC server crashed or returned malformed response"))
			}
		}()
	}
}

func (b *backends) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// close drops the connections; the rpc-servers free what this client held and serve the next.
func (b *backends) close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	for _, c := range b.conns {
		// Every request was answered, so a normal close is safe.
		_ = c.Close()
	}
}
