// Package discovery is the discovery service: it finds Ollama nodes and llama.cpp rpc-servers, verifies them, and keeps their entries in etcd true.
//
// Its RPCs answer UNIMPLEMENTED until the service's own issue fills them in; the server,
// health, registration in etcd and shutdown order are already the real ones.
package discovery

import (
	"flag"

	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "discovery"

// Config is the discovery's configuration.
type Config struct {
	// GRPC is where the service listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`
}

// RegisterFlags declares the service's flags, all prefixed "discovery.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50061")
}

// Deps are what the service uses from its process.
type Deps = grpcserver.Deps

// Service is a running discovery.
type Service struct {
	*grpcserver.Service
	discoveryv1.UnimplementedDiscoveryServiceServer
}

var _ discoveryv1.DiscoveryServiceServer = (*Service)(nil)

// New builds the service; it starts listening on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	s := &Service{Service: grpcserver.New(Name, cfg.GRPC, deps)}
	discoveryv1.RegisterDiscoveryServiceServer(s.Server(), s)
	return s, nil
}
