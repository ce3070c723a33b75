package llamaserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// CrashMarker in a prompt or message makes the double abort (exit status 134) after it has
// streamed two tokens of that request: a llama-server dying in the middle of a stream.
const CrashMarker = "SOLLOL_DOUBLE_CRASH"

// Exit statuses of the real llama-server that the double reproduces.
const (
	// ExitAbort is what a shell reports for a process killed by SIGABRT (GGML_ABORT).
	ExitAbort = 134
	// ExitFailure is llama-server's return code for a failed start (bad model, port taken).
	ExitFailure = 1
)

// Options configures a Server; the fields follow llama-server's flags.
type Options struct {
	// Model is the GGUF file (--model). Required.
	Model string
	// RPC are the rpc-server endpoints, host:port (--rpc).
	RPC []string
	// GPULayers is -ngl; the double offloads every layer whatever its value.
	GPULayers int
	// CtxSize is the context of all slots together (-c); 0 means the model's trained context.
	CtxSize int
	// Parallel is the number of slots (-np); 0 or less means 4, as the real server's "auto".
	Parallel int
	// Threads is -t; accepted and ignored.
	Threads int
	// Host and Port are where HTTP listens (--host, --port); defaults 127.0.0.1 and 8080.
	Host string
	Port int
	// TensorSplit is the share of the weights per rpc device (--tensor-split); empty means
	// in proportion to the devices' free memory.
	TensorSplit []float64
	// Alias is the model name reported by the API (--alias); default the file name.
	Alias string

	// LoadTime is how long loading the model takes (double only).
	LoadTime time.Duration
	// TokenInterval is the pause before each generated token (double only).
	TokenInterval time.Duration
	// CrashAfter aborts the server this long after it became ready; 0 never (double only).
	CrashAfter time.Duration

	// Log receives the log lines (the real server writes them to stderr). Nil discards them.
	Log io.Writer
}

// ExitError is how Run ends when the real llama-server would exit with a non-zero status.
type ExitError struct {
	Code   int
	Reason string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("llama-server double: exit %d: %s", e.Code, e.Reason)
}

// Server is a running double.
type Server struct {
	opts    Options
	log     *logger
	model   *modelInfo
	backend *backends
	nCtx    int
	nSlot   int
	slots   chan struct{}
	ln      net.Listener
	srv     *http.Server
	ready   atomic.Bool
	seq     atomic.Uint64

	fatalOnce sync.Once
	fatal     chan *ExitError
}

// Run starts the server and blocks until ctx ends (a clean stop, nil) or the server dies the
// way the real one would (*ExitError with its exit status).
func Run(ctx context.Context, opts Options) error {
	s, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	return s.Wait(ctx)
}

// Start connects the rpc backends and starts HTTP, then loads the model in the background
// (GET /health answers 503 meanwhile). It fails, as the real server exits, when a backend is
// unreachable or the port is taken. Wait must be called to learn how the server ends.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = 8080
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	s := &Server{opts: opts, log: &logger{w: opts.Log}, fatal: make(chan *ExitError, 1)}
	s.log.banner(opts)
	if opts.Model == "" {
		s.log.printf("error: --model is required\n")
		return nil, &ExitError{Code: ExitFailure, Reason: "error: --model is required"}
	}

	// The real server registers the rpc backends while it parses its arguments, before HTTP
	// starts: an unreachable backend aborts it with nothing listening.
	b, err := connectBackends(ctx, opts.RPC, s.log)
	if err != nil {
		return nil, err
	}
	s.backend = b

	addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.close()
		s.log.printf("main: couldn't bind HTTP server socket, hostname: %s, port: %d\n", opts.Host, opts.Port)
		s.log.printf("main: exiting due to HTTP server error\n")
		return nil, &ExitError{Code: ExitFailure, Reason: err.Error()}
	}
	s.ln = ln
	s.log.printf("main: HTTP server is listening, hostname: %s, port: %d, http threads: %d\n", opts.Host, opts.Port, opts.Parallel+2)
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	go b.watch(s.die)
	go s.loadAndServe(ctx, addr)
	return s, nil
}

// loadAndServe loads the model and then reports the server ready, as llama-server's main does
// after its HTTP thread is up.
func (s *Server) loadAndServe(ctx context.Context, addr string) {
	s.log.printf("main: loading model\n")
	if err := s.load(ctx); err != nil {
		var e *ExitError
		if errors.As(err, &e) {
			s.die(e)
		}
		return
	}
	s.ready.Store(true)
	s.log.printf("main: model loaded\n")
	s.log.printf("main: server is listening on http://%s - starting the main loop\n", addr)
	s.log.printf("srv  update_slots: all slots are idle\n")
	if s.opts.CrashAfter > 0 {
		t := time.AfterFunc(s.opts.CrashAfter, func() { s.die(abortf("crash on demand (--double-crash-after)")) })
		context.AfterFunc(ctx, func() { t.Stop() })
	}
}

// Ready reports whether the model is loaded.
func (s *Server) Ready() bool { return s.ready.Load() }

// Wait blocks until ctx ends (nil: a clean stop, as on SIGTERM) or the server dies (an
// *ExitError with the real server's exit status), and releases everything.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		s.log.printf("srv    operator(): operator(): cleaning up before exit...\n")
		s.shutdown()
		return nil
	case e := <-s.fatal:
		s.shutdown()
		return e
	}
}

// die ends the server the way the real one aborts: the first cause wins.
func (s *Server) die(e *ExitError) {
	s.fatalOnce.Do(func() {
		s.log.printf("%s\n", e.Reason)
		s.fatal <- e
	})
}

// abortf builds the GGML_ABORT exit of the real server, with its "file:line: message" form.
func abortf(format string, args ...any) *ExitError {
	return &ExitError{Code: ExitAbort, Reason: "/llama.cpp/ggml/src/ggml-rpc/ggml-rpc.cpp:570: " + fmt.Sprintf(format, args...)}
}

func (s *Server) shutdown() {
	if s.srv != nil {
		// Close, not Shutdown: a dying process cuts its streams.
		_ = s.srv.Close()
	}
	s.backend.close()
}

// Addr is where HTTP listens.
func (s *Server) Addr() string { return s.ln.Addr().String() }
