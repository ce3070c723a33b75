// Package grpcserver is the one place where the mesh builds gRPC servers: every service gets
// the same interceptors (metrics, request logging, panic recovery), health, reflection and
// message-size limits, and the same start and shutdown order.
package grpcserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/sollol/mesh/services/shared/grpclink"
	"github.com/sollol/mesh/services/shared/netutil"
	"github.com/sollol/mesh/services/shared/registry"
)

// Config is the listening side of one service.
type Config struct {
	// Addr is the host:port to listen on; port 0 picks a free one.
	Addr string `yaml:"addr"`
	// AdvertiseAddr is what other services dial; empty means Addr, with a wildcard host
	// replaced by this machine's first non-loopback address.
	AdvertiseAddr string `yaml:"advertise_addr"`
	// DrainTimeout bounds how long shutdown waits for in-flight RPCs and streams.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// RegistrationTTL is the lease TTL of this instance's registration in etcd.
	RegistrationTTL time.Duration `yaml:"registration_ttl"`
}

// Deps are the process-wide parts a service's server uses.
type Deps struct {
	Logger  *slog.Logger
	Metrics *Metrics
	// Etcd, when set, is where the instance registers so other services can find it.
	Etcd *clientv3.Client
	// Registry, when set, takes the service's own Prometheus metrics.
	Registry prometheus.Registerer
}

// Service is one mesh service's gRPC server with its lifecycle: listen, serve, report
// SERVING, register in etcd; and on stop the reverse order with a bounded drain.
type Service struct {
	name   string
	cfg    Config
	deps   Deps
	log    *slog.Logger
	server *grpc.Server
	health *health.Server

	lis          net.Listener
	registration *registry.ServiceRegistration
	serveErr     chan error
	draining     chan struct{}
	stopOnce     sync.Once
}

// New builds the server of the service called name (the etcd naming name, e.g.
// "ollamapool"). Register the service's handlers on Server() before Start.
func New(name string, cfg Config, deps Deps) *Service {
	log := deps.Logger.With("component", name)
	opts := append(grpclink.ServerOptions(),
		// Let clients keep idle connections alive with pings: the router holds long-lived
		// connections to every pool and coordinator replica.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	unary := []grpc.UnaryServerInterceptor{logUnary(log), recoverUnary(log)}
	stream := []grpc.StreamServerInterceptor{logStream(log), recoverStream(log)}
	if deps.Metrics != nil {
		unary = append([]grpc.UnaryServerInterceptor{deps.Metrics.unary}, unary...)
		stream = append([]grpc.StreamServerInterceptor{deps.Metrics.stream}, stream...)
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))

	s := &Service{
		name:     name,
		cfg:      cfg,
		deps:     deps,
		log:      log,
		server:   grpc.NewServer(opts...),
		health:   health.NewServer(),
		serveErr: make(chan error, 1),
		draining: make(chan struct{}),
	}
	healthpb.RegisterHealthServer(s.server, s.health)
	reflection.Register(s.server)
	// Not serving until Start has bound the port and registered.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

// Name is the service's name.
func (s *Service) Name() string { return s.name }

// Server is where handlers register; use it only before Start.
func (s *Service) Server() *grpc.Server { return s.server }

// Logger is the service's logger, tagged with its component name.
func (s *Service) Logger() *slog.Logger { return s.log }

// Addr is the bound address once started (useful with port 0).
func (s *Service) Addr() string {
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Err delivers an error if the server stops serving on its own after Start.
func (s *Service) Err() <-chan error { return s.serveErr }

// Start listens, serves, turns health to SERVING for every registered service, and registers
// the instance in etcd last, so no client is sent to it before it can answer.
func (s *Service) Start(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", s.name, s.cfg.Addr, err)
	}
	s.lis = lis
	go func() {
		if err := s.server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.serveErr <- fmt.Errorf("%s: serve: %w", s.name, err)
		}
	}()
	s.setServing(healthpb.HealthCheckResponse_SERVING)

	if s.deps.Etcd != nil {
		advertise, err := s.advertiseAddr()
		if err != nil {
			s.server.Stop()
			return err
		}
		ttl := s.cfg.RegistrationTTL
		if ttl <= 0 {
			ttl = 10 * time.Second
		}
		reg, err := registry.RegisterService(ctx, s.deps.Etcd, s.name, advertise, ttl, s.log)
		if err != nil {
			s.server.Stop()
			return err
		}
		s.registration = reg
	}
	s.log.Info("grpc server started", "addr", s.Addr())
	return nil
}

func (s *Service) advertiseAddr() (string, error) {
	if s.cfg.AdvertiseAddr != "" {
		return s.cfg.AdvertiseAddr, nil
	}
	addr, err := netutil.AdvertiseAddr(s.Addr())
	if err != nil {
		return "", fmt.Errorf("%s: advertise address: %w", s.name, err)
	}
	return addr, nil
}

func (s *Service) setServing(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	for name := range s.server.GetServiceInfo() {
		s.health.SetServingStatus(name, st)
	}
}

// Draining is closed when Stop begins. Streams that would otherwise run forever (watches)
// end on it so the drain does not wait for them; streams that finish on their own (token
// streams) should ignore it and complete.
func (s *Service) Draining() <-chan struct{} { return s.draining }

// Stop reports NOT_SERVING, deregisters from etcd so clients move away, lets in-flight RPCs
// finish within DrainTimeout (or ctx), then closes whatever is left. Later calls do nothing.
func (s *Service) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stop(ctx) })
	return nil
}

func (s *Service) stop(ctx context.Context) {
	close(s.draining)
	s.setServing(healthpb.HealthCheckResponse_NOT_SERVING)
	if s.registration != nil {
		s.registration.Stop()
	}
	drain := s.cfg.DrainTimeout
	if drain <= 0 {
		drain = 10 * time.Second
	}
	drainCtx, cancel := context.WithTimeout(ctx, drain)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		s.server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-drainCtx.Done():
		s.log.Warn("drain timed out; closing remaining streams", "timeout", drain)
		s.server.Stop()
		<-stopped
	}
	s.health.Shutdown()
	s.log.Info("grpc server stopped")
}

// RegisterFlags declares the flags of one service's listener, named after prefix (e.g.
// "router." gives --router.grpc-addr), with defaultAddr as the listen default.
func (c *Config) RegisterFlags(fs *flag.FlagSet, prefix, defaultAddr string) {
	fs.StringVar(&c.Addr, prefix+"grpc-addr", defaultAddr, "gRPC listen address of "+strings.TrimSuffix(prefix, "."))
	fs.StringVar(&c.AdvertiseAddr, prefix+"advertise-addr", "", "address other services dial to reach this one (default: the listen address, wildcard host replaced by this machine's address)")
	fs.DurationVar(&c.DrainTimeout, prefix+"drain-timeout", 10*time.Second, "how long in-flight RPCs may finish at shutdown")
	fs.DurationVar(&c.RegistrationTTL, prefix+"registration-ttl", 10*time.Second, "lease TTL of this instance's registration in etcd")
}
