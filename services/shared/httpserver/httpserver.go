// Package httpserver runs a process's HTTP listener as a lifecycle service: /readyz,
// /metrics and, in a router process, the public REST, Ollama and OpenAI APIs.
package httpserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Config is where the HTTP listener binds.
type Config struct {
	// Addr is host:port; port 0 picks a free one.
	Addr string `yaml:"addr"`
	// ShutdownTimeout bounds how long in-flight requests (open streams) may finish at stop.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// RegisterFlags declares the HTTP flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "http-addr", "127.0.0.1:8000", "HTTP listen address: /readyz, /metrics, and the router's REST, Ollama and OpenAI APIs")
	fs.DurationVar(&c.ShutdownTimeout, "http-shutdown-timeout", 10*time.Second, "how long open HTTP requests may finish at shutdown")
}

// Server is an HTTP listener with an explicit start and a bounded, graceful stop.
type Server struct {
	cfg    Config
	log    *slog.Logger
	server *http.Server
	lis    net.Listener
	errc   chan error
}

// New returns a server for handler; it listens only on Start.
func New(cfg Config, handler http.Handler, log *slog.Logger) *Server {
	return &Server{
		cfg: cfg,
		log: log.With("component", "http"),
		server: &http.Server{
			Handler: handler,
			// Bodies may stream for minutes (token streams), so only the header read is bounded.
			ReadHeaderTimeout: 10 * time.Second,
		},
		errc: make(chan error, 1),
	}
}

// Name implements lifecycle.Service.
func (s *Server) Name() string { return "http" }

// Addr is the bound address once started.
func (s *Server) Addr() string {
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Err implements lifecycle.Failer.
func (s *Server) Err() <-chan error { return s.errc }

// Start binds the listener and serves in the background.
func (s *Server) Start(context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", s.cfg.Addr, err)
	}
	s.lis = lis
	go func() {
		if err := s.server.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("http: serve: %w", err)
		}
	}()
	s.log.Info("http server started", "addr", s.Addr())
	return nil
}

// Stop stops accepting, lets open requests finish within ShutdownTimeout (or ctx), then
// closes the rest.
func (s *Server) Stop(ctx context.Context) error {
	timeout := s.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	shutdownCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.server.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("http drain timed out; closing remaining connections", "err", err)
		return s.server.Close()
	}
	return nil
}
