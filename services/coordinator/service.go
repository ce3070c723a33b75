// Package coordinator is the coordinator-manager service: it runs llama-server coordinators
// that shard a model over llama.cpp rpc-servers — start, wait, cache, evict, restart — and
// relays chat and completion streams through them.
//
// Exactly one coordinator runs per model across every replica: the replica holding the model's
// etcd lock owns it and records it under registry.CoordinatorsPrefix; other replicas forward
// requests for that model to the owner, which therefore sees every request it must drain
// before it evicts or stops the coordinator.
package coordinator

import (
	"context"
	"errors"
	"fmt"

	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator/internal/manager"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/netutil"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "coordinator"

// Deps are what the service uses from its process. Etcd is required.
type Deps = grpcserver.Deps

// Service is a running coordinator-manager replica.
type Service struct {
	*grpcserver.Service
	coordinatorv1.UnimplementedCoordinatorServiceServer

	cfg     Config
	mgr     *manager.Manager
	forward *forwarder
}

var _ coordinatorv1.CoordinatorServiceServer = (*Service)(nil)

// New validates the configuration and builds the service; it starts working on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Etcd == nil {
		return nil, errors.New("coordinator: an etcd client is required")
	}
	mcfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	s := &Service{Service: grpcserver.New(Name, cfg.GRPC, deps), cfg: cfg, forward: newForwarder()}
	s.mgr = manager.New(mcfg, deps.Etcd, s.Logger())
	if deps.Registry != nil {
		if err := deps.Registry.Register(&collector{s: s}); err != nil {
			return nil, err
		}
	}
	coordinatorv1.RegisterCoordinatorServiceServer(s.Server(), s)
	return s, nil
}

// Start cleans up after a previous run (stale llama-server processes, records and locks),
// mirrors backends and coordinators from etcd, serves the API (registering in etcd last), and
// then starts the pre-warm models.
func (s *Service) Start(ctx context.Context) error {
	if err := s.mgr.Start(ctx); err != nil {
		return err
	}
	if err := s.Service.Start(ctx); err != nil {
		s.mgr.Stop()
		return err
	}
	addr := s.cfg.GRPC.AdvertiseAddr
	if addr == "" {
		a, err := netutil.AdvertiseAddr(s.Addr())
		if err != nil {
			_ = s.Service.Stop(ctx)
			s.mgr.Stop()
			return fmt.Errorf("coordinator: advertise address: %w", err)
		}
		addr = a
	}
	s.mgr.SetAddress(addr)
	s.mgr.Prewarm(s.cfg.Prewarm)
	return nil
}

// Stop stops serving first (deregistering, then letting in-flight streams finish), then
// stops every coordinator and withdraws their records and locks.
func (s *Service) Stop(ctx context.Context) error {
	err := s.Service.Stop(ctx)
	s.mgr.Stop()
	s.forward.close()
	return err
}

// Instance is this replica's id, as coordinator records name their owner.
func (s *Service) Instance() string { return s.mgr.Instance() }
