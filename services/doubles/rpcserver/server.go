// Package rpcserver is an in-process test double of llama.cpp's rpc-server. It speaks the real
// wire protocol (package ggmlrpc, version 5.1.0) on a TCP listener, reports configurable
// devices and memory, and keeps the real server's observable habits: HELLO must come first,
// any malformed or unservable request closes the connection without a reply, connections are
// served one at a time, and a connection's buffers are freed when it closes.
//
// # What is faithful and what is a stub
//
// Faithful to the real server with a CPU device (same checks, same replies):
// HELLO, DEVICE_COUNT, GET_DEVICE_MEMORY (reports the configured memory, less what open
// connections have allocated), GET_ALIGNMENT (32 by default), GET_MAX_SIZE (2^64-1 by default),
// ALLOC_BUFFER, BUFFER_GET_BASE, FREE_BUFFER, BUFFER_CLEAR, SET_TENSOR, GET_TENSOR,
// MEMSET_TENSOR, COPY_TENSOR (bytes really are stored, copied and read back), INIT_TENSOR,
// GET_ALLOC_SIZE (ggml_nbytes, as for a CPU buffer) and SET_TENSOR_HASH (answers "not cached",
// as a server started without -c always does).
//
// Stubs, well-formed but meaningless: GRAPH_COMPUTE validates the graph's framing, device and
// node references like the real server, then computes nothing — output tensors keep whatever
// bytes they had; GRAPH_RECOMPUTE likewise. A llama-server could load a model into the double
// but would get garbage out of it.
//
// Deliberate differences: where the real server aborts the whole process (a tensor outside
// its buffer, a failed graph computation) the double closes the connection; ALLOC_BUFFER fails
// (remote pointer 0, as on an allocation failure) when the size exceeds the reported free
// memory; requests and replies above Options.MaxPayload close the connection where the real
// server would try to allocate them; the listen backlog is the system's, not 1.
package rpcserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"

	"github.com/sollol/mesh/services/shared/ggmlrpc"
)

// DeviceMemory is the memory one device reports, in bytes.
type DeviceMemory struct {
	Free, Total uint64
}

// Defaults of Options.
const (
	DefaultAddr       = "127.0.0.1:0"
	DefaultMemory     = 1 << 30
	DefaultAlignment  = 32 // TENSOR_ALIGNMENT of the CPU buffer type
	DefaultMaxPayload = 256 << 20
)

// Options configures a Server. The zero value is a one-device server with DefaultMemory on a
// free loopback port.
type Options struct {
	// Addr is the listen address; default DefaultAddr.
	Addr string
	// Devices are the devices and their memory; default one device with DefaultMemory free of
	// DefaultMemory.
	Devices []DeviceMemory
	// ProtocolVersion overrides the version HELLO reports (and, for a major below 4, HELLO's
	// layout). Only HELLO changes; every other command keeps the 5.x layout. Zero means
	// ggmlrpc.ProtocolVersion.
	ProtocolVersion ggmlrpc.Version
	// Alignment is what GET_ALIGNMENT reports; default DefaultAlignment.
	Alignment uint64
	// MaxSize is what GET_MAX_SIZE reports; default math.MaxUint64 (no limit, as for CPU).
	MaxSize uint64
	// Concurrent serves connections in parallel. The real server serves one at a time (a
	// second client waits, unanswered, until the first leaves); leave this off to keep that.
	Concurrent bool
	// MaxPayload bounds a request or GET_TENSOR reply the double will handle; default
	// DefaultMaxPayload.
	MaxPayload uint64
	// CrashOnBrokenPipe makes the double shut down, as if it had died, when a reply of its
	// hits a connection the client has already closed — as the real server does: it dies of
	// SIGPIPE. Crashed reports it. Off by default; the rpc-server command turns it on.
	CrashOnBrokenPipe bool
	// Logf receives the lines the real server prints (connections accepted and closed,
	// rejected requests). Nil discards them.
	Logf func(format string, args ...any)
}

// Stats counts what a Server has seen.
type Stats struct {
	// Connections is the number of connections accepted so far.
	Connections int
	// Active is the number of connections being served now.
	Active int
	// Commands counts the commands received, HELLO included, by command.
	Commands map[ggmlrpc.Command]int
}

// Server is a running double. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	ln   net.Listener
	wg   sync.WaitGroup

	crashed chan struct{}

	mu      sync.Mutex
	devices []deviceState
	conns   map[net.Conn]struct{}
	closed  bool
	stats   Stats
	handle  uint64 // last buffer handle given out
	addr    uint64 // next free fake address
}

type deviceState struct {
	mem       DeviceMemory
	allocated uint64
}

// Start listens on opts.Addr and serves until Close or until ctx is done.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if len(opts.Devices) == 0 {
		opts.Devices = []DeviceMemory{{Free: DefaultMemory, Total: DefaultMemory}}
	}
	if opts.ProtocolVersion.IsZero() {
		opts.ProtocolVersion = ggmlrpc.ProtocolVersion
	}
	if opts.Alignment == 0 {
		opts.Alignment = DefaultAlignment
	}
	if opts.Alignment&(opts.Alignment-1) != 0 {
		return nil, fmt.Errorf("rpcserver: alignment %d is not a power of two", opts.Alignment)
	}
	if opts.MaxSize == 0 {
		opts.MaxSize = math.MaxUint64
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("rpcserver: listen: %w", err)
	}
	s := &Server{
		opts:    opts,
		ln:      ln,
		crashed: make(chan struct{}),
		conns:   map[net.Conn]struct{}{},
		stats:   Stats{Commands: map[ggmlrpc.Command]int{}},
		handle:  0x5000_0000,
		addr:    0x7f00_0000_0000,
	}
	for _, d := range opts.Devices {
		s.devices = append(s.devices, deviceState{mem: d})
	}
	s.wg.Add(1)
	go s.acceptLoop()
	// Close is idempotent, so the registration may outlive an explicit Close.
	context.AfterFunc(ctx, func() { _ = s.Close() })
	return s, nil
}

// Addr is the address the server listens on, host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening, closes every connection and waits until all of the server's
// goroutines have returned. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Crashed is closed when the server has shut itself down the way the real one dies
// (Options.CrashOnBrokenPipe). Close must still be called.
func (s *Server) Crashed() <-chan struct{} { return s.crashed }

// crash stops serving like a dead process: listener and connections closed at once. It runs on
// a serving goroutine, so unlike Close it does not wait for them.
func (s *Server) crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.crashed:
		return
	default:
	}
	close(s.crashed)
	s.closed = true
	_ = s.ln.Close()
	for c := range s.conns {
		_ = c.Close()
	}
}

// SetFreeMemory changes the free memory device reports (before subtracting what open
// connections have allocated on it).
func (s *Server) SetFreeMemory(device int, free uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if device < 0 || device >= len(s.devices) {
		return fmt.Errorf("rpcserver: no device %d", device)
	}
	s.devices[device].mem.Free = free
	return nil
}

// Devices returns the memory each device reports now.
func (s *Server) Devices() []DeviceMemory {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceMemory, len(s.devices))
	for i := range s.devices {
		out[i] = s.reportedLocked(i)
	}
	return out
}

// Stats returns a copy of the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Commands = make(map[ggmlrpc.Command]int, len(s.stats.Commands))
	for k, v := range s.stats.Commands {
		st.Commands[k] = v
	}
	return st
}

func (s *Server) reportedLocked(device int) DeviceMemory {
	d := s.devices[device]
	m := d.mem
	if d.allocated >= m.Free {
		m.Free = 0
	} else {
		m.Free -= d.allocated
	}
	return m
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.opts.Logf("Failed to accept client connection: %v", err)
			}
			return
		}
		if !s.track(c) {
			_ = c.Close()
			return
		}
		if s.opts.Concurrent {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		} else {
			s.serve(c)
		}
	}
}

// track registers an accepted connection so Close can reach it; false when closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.stats.Connections++
	s.stats.Active++
	return true
}

func (s *Server) serve(c net.Conn) {
	s.opts.Logf("Accepted client connection")
	sess := newSession(s, c)
	sess.run()
	sess.release()
	_ = c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.stats.Active--
	s.mu.Unlock()
	s.opts.Logf("Client connection closed")
}

func (s *Server) count(cmd ggmlrpc.Command) {
	s.mu.Lock()
	s.stats.Commands[cmd]++
	s.mu.Unlock()
}

// alloc reserves size bytes on device; ok is false when they exceed its free memory.
func (s *Server) alloc(device int, size uint64) (b *buffer, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if size > s.reportedLocked(device).Free {
		return nil, false
	}
	s.devices[device].allocated += size
	s.handle += 0x100
	a := s.opts.Alignment
	base := (s.addr + a - 1) &^ (a - 1)
	s.addr = base + size + a // a gap keeps buffers from touching
	return newBuffer(device, s.handle, base, size), true
}

func (s *Server) free(b *buffer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devices[b.device].allocated -= b.size
}
