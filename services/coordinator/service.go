// Package coordinator is the coordinator-manager service: it runs llama-server coordinators that shard a model over llama.cpp rpc-servers: start, wait, cache, evict, restart.
//
// Its RPCs answer UNIMPLEMENTED until the service's own issue fills them in; the server,
// health, registration in etcd and shutdown order are already the real ones.
package coordinator

import (
	"flag"

	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "coordinator"

// Config is the coordinator-manager's configuration.
type Config struct {
	// GRPC is where the service listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`
}

// RegisterFlags declares the service's flags, all prefixed "coordinator.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50063")
}

// Deps are what the service uses from its process.
type Deps = grpcserver.Deps

// Service is a running coordinator-manager.
type Service struct {
	*grpcserver.Service
	coordinatorv1.UnimplementedCoordinatorServiceServer
}

var _ coordinatorv1.CoordinatorServiceServer = (*Service)(nil)

// New builds the service; it starts listening on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	s := &Service{Service: grpcserver.New(Name, cfg.GRPC, deps)}
	coordinatorv1.RegisterCoordinatorServiceServer(s.Server(), s)
	return s, nil
}
