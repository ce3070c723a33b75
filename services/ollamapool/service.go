// Package ollamapool is the Ollama pool service: it picks the best Ollama node for each request and relays its token stream.
//
// Its RPCs answer UNIMPLEMENTED until the service's own issue fills them in; the server,
// health, registration in etcd and shutdown order are already the real ones.
package ollamapool

import (
	"flag"

	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/shared/grpcserver"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "ollamapool"

// Config is the Ollama pool's configuration.
type Config struct {
	// GRPC is where the service listens and how it registers.
	GRPC grpcserver.Config `yaml:"grpc"`
}

// RegisterFlags declares the service's flags, all prefixed "ollamapool.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GRPC.RegisterFlags(fs, Name+".", "127.0.0.1:50062")
}

// Deps are what the service uses from its process.
type Deps = grpcserver.Deps

// Service is a running Ollama pool.
type Service struct {
	*grpcserver.Service
	ollamapoolv1.UnimplementedOllamaPoolServiceServer
}

var _ ollamapoolv1.OllamaPoolServiceServer = (*Service)(nil)

// New builds the service; it starts listening on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	s := &Service{Service: grpcserver.New(Name, cfg.GRPC, deps)}
	ollamapoolv1.RegisterOllamaPoolServiceServer(s.Server(), s)
	return s, nil
}
