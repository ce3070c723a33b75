// Package router is the mesh's front door: it decides per request whether the Ollama pool or
// llama.cpp RPC sharding serves it, and speaks gRPC, REST (grpc-gateway), and later the
// Ollama and OpenAI HTTP APIs.
//
// Its RPCs answer UNIMPLEMENTED until the router's own issue fills them in; the gRPC server,
// the REST gateway over a real connection, health, registration and shutdown are real.
package router

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sollol/mesh/gen"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "router"

// Config is the router's configuration.
type Config struct {
	// GRPC is where the public gRPC API listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`
}

// RegisterFlags declares the router's flags, all prefixed "router.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50051")
}

// Deps are what the router uses from its process.
type Deps = grpcserver.Deps

// Service is a running router.
type Service struct {
	*grpcserver.Service
	routerv1.UnimplementedRouterServiceServer

	gateway     *runtime.ServeMux
	gatewayConn *grpc.ClientConn
}

var _ routerv1.RouterServiceServer = (*Service)(nil)

// New builds the router; it starts listening on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	s := &Service{
		Service: grpcserver.New(Name, cfg.GRPC, deps),
		gateway: runtime.NewServeMux(),
	}
	routerv1.RegisterRouterServiceServer(s.Server(), s)
	return s, nil
}

// Start serves gRPC, then connects the REST gateway to it over a real client connection
// (the in-process gateway handler cannot stream).
func (s *Service) Start(ctx context.Context) error {
	if err := s.Service.Start(ctx); err != nil {
		return err
	}
	conn, err := grpc.NewClient(dialable(s.Addr()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcserver.MaxMessageBytes)))
	if err != nil {
		return errors.Join(fmt.Errorf("router: gateway connection: %w", err), s.Service.Stop(ctx))
	}
	if err := routerv1.RegisterRouterServiceHandler(ctx, s.gateway, conn); err != nil {
		_ = conn.Close()
		return errors.Join(fmt.Errorf("router: register gateway: %w", err), s.Service.Stop(ctx))
	}
	s.gatewayConn = conn
	return nil
}

// Stop stops the gRPC server (draining streams) and then the gateway's connection.
func (s *Service) Stop(ctx context.Context) error {
	err := s.Service.Stop(ctx)
	if s.gatewayConn != nil {
		err = errors.Join(err, s.gatewayConn.Close())
	}
	return err
}

// HTTPHandler serves the REST API under /sollol/v1/ and its OpenAPI document at
// /sollol/v1/openapi.json.
func (s *Service) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sollol/v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(gen.RouterOpenAPI)
	})
	mux.Handle("/", s.gateway)
	return mux
}

// dialable turns a listen address with a wildcard host into one a local client can dial.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
