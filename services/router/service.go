// Package router is the mesh's front door: it decides per request whether the Ollama pool or
// llama.cpp RPC sharding serves it, falls back between them before the first token, and
// speaks gRPC, REST (grpc-gateway), and the Ollama and OpenAI HTTP APIs.
package router

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	"log/slog"

	"github.com/sollol/mesh/gen"
	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/router/internal/decide"
	"github.com/sollol/mesh/services/shared/grpclink"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "router"

// Config is the router's configuration.
type Config struct {
	// GRPC is where the public gRPC API listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`
	// TaskDistribution and ModelSharding are the SynapticLlamas switches: on, off, or auto
	// (on exactly when discovery has found backends of that kind).
	TaskDistribution string `yaml:"task_distribution"`
	ModelSharding    string `yaml:"model_sharding"`
	// Fallback lets a request move to the other path when its path fails before the first
	// token.
	Fallback bool `yaml:"fallback"`
	// MaxBodyBytes bounds an HTTP request body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// CatalogueInterval is how often the coordinator-manager's model catalogue (GGUF sizes)
	// is fetched again.
	CatalogueInterval time.Duration `yaml:"catalogue_interval"`
}

// RegisterFlags declares the router's flags, all prefixed "router.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50051")
	fs.StringVar(&c.TaskDistribution, Name+".task-distribution", "auto", "the Ollama pool path: on, off, or auto (on when Ollama nodes are found)")
	fs.StringVar(&c.ModelSharding, Name+".model-sharding", "auto", "the llama.cpp RPC sharding path: on, off, or auto (on when rpc-servers are found)")
	fs.BoolVar(&c.Fallback, Name+".fallback", true, "move to the other path when the chosen one fails before the first token")
	fs.Int64Var(&c.MaxBodyBytes, Name+".max-body-bytes", 32<<20, "largest HTTP request body accepted")
	fs.DurationVar(&c.CatalogueInterval, Name+".catalogue-interval", 30*time.Second, "how often the model catalogue (GGUF sizes from the coordinator-manager) is refreshed")
}

func (c *Config) mode() (decide.Mode, error) {
	td, err := decide.ParseSwitch("router.task-distribution", c.TaskDistribution)
	if err != nil {
		return decide.Mode{}, err
	}
	ms, err := decide.ParseSwitch("router.model-sharding", c.ModelSharding)
	if err != nil {
		return decide.Mode{}, err
	}
	return decide.Mode{TaskDistribution: td, ModelSharding: ms, Fallback: c.Fallback}, nil
}

// Deps are what the router uses from its process. Etcd is required.
type Deps = grpcserver.Deps

// Service is a running router.
type Service struct {
	*grpcserver.Service
	routerv1.UnimplementedRouterServiceServer

	cfg        Config
	mode       decide.Mode
	log        *slog.Logger
	view       *liveView
	downstream *downstream
	catalogue  *catalogue
	stats      *stats
	started    time.Time

	gateway     *runtime.ServeMux
	gatewayConn *grpc.ClientConn
}

var _ routerv1.RouterServiceServer = (*Service)(nil)

// New builds the router; it starts listening on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Etcd == nil {
		return nil, errors.New("router: an etcd client is required")
	}
	mode, err := cfg.mode()
	if err != nil {
		return nil, err
	}
	if cfg.CatalogueInterval <= 0 {
		return nil, fmt.Errorf("router.catalogue-interval: must be positive, got %v", cfg.CatalogueInterval)
	}
	s := &Service{
		Service:    grpcserver.New(Name, cfg.GRPC, deps),
		cfg:        cfg,
		mode:       mode,
		downstream: &downstream{etcd: deps.Etcd},
		stats:      newStats(),
		gateway:    runtime.NewServeMux(),
	}
	s.log = s.Logger()
	s.catalogue = &catalogue{
		fetch:    s.fetchCatalogue,
		present:  func() bool { return s.view.coordinatorInstances() > 0 },
		interval: cfg.CatalogueInterval,
		log:      s.log,
	}
	s.view = newLiveView(deps.Etcd, s.log, s.catalogue)
	if deps.Registry != nil {
		if err := deps.Registry.Register(&collector{s: s}); err != nil {
			return nil, err
		}
	}
	routerv1.RegisterRouterServiceServer(s.Server(), s)
	return s, nil
}

// Start mirrors the live view, serves gRPC, then connects the REST gateway to it over a real
// client connection (the in-process gateway handler cannot stream).
func (s *Service) Start(ctx context.Context) error {
	if err := s.view.start(ctx); err != nil {
		return err
	}
	if err := s.Service.Start(ctx); err != nil {
		s.view.stop()
		return err
	}
	conn, err := grpc.NewClient(dialable(s.Addr()), grpclink.DialOptions()...)
	if err != nil {
		return errors.Join(fmt.Errorf("router: gateway connection: %w", err), s.Stop(ctx))
	}
	s.gatewayConn = conn
	if err := routerv1.RegisterRouterServiceHandler(ctx, s.gateway, conn); err != nil {
		return errors.Join(fmt.Errorf("router: register gateway: %w", err), s.Stop(ctx))
	}
	s.catalogue.start()
	s.started = time.Now()
	return nil
}

// Stop stops the gRPC server (draining streams), then the gateway's and downstream
// connections and the live view.
func (s *Service) Stop(ctx context.Context) error {
	err := s.Service.Stop(ctx)
	if s.gatewayConn != nil {
		err = errors.Join(err, s.gatewayConn.Close())
	}
	s.catalogue.stop()
	s.downstream.close()
	s.view.stop()
	return err
}

// PoolConnected reports whether this router ever opened a connection to the pool; in
// pure-RPC mode it never does.
func (s *Service) PoolConnected() bool { return s.downstream.poolConnected() }

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

// Decide explains how a request for model would be routed now, without running it.
func (s *Service) Decide(model string, contextSize int32, hint commonv1.RouteHint) *routerv1.Decision {
	return s.decide(model, contextSize, hint)
}

// EmbedInputs embeds through the pool; the HTTP APIs call it with their own request shapes.
func (s *Service) EmbedInputs(ctx context.Context, req *routerv1.EmbedRequest) (*routerv1.EmbedResponse, error) {
	return s.embed(ctx, req)
}

// Backends is discovery's current view of every backend, from the router's etcd mirror.
func (s *Service) Backends() []*commonv1.Backend { return s.view.current().Backends }

// fetchCatalogue asks a coordinator-manager replica for its model catalogue.
func (s *Service) fetchCatalogue(ctx context.Context) ([]*coordinatorv1.ModelInfo, error) {
	conn, err := s.downstream.coordinator()
	if err != nil {
		return nil, err
	}
	resp, err := coordinatorv1.NewCoordinatorServiceClient(conn).ListModels(ctx, &coordinatorv1.ListModelsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetModels(), nil
}

// ShardModels lists the models the coordinator-manager can shard, as the last catalogue
// fetch saw them; none while no manager is registered.
func (s *Service) ShardModels() []*commonv1.InstalledModel {
	if s.view.coordinatorInstances() == 0 {
		return nil
	}
	return s.catalogue.installed()
}
