// Package discovery finds Ollama nodes and llama.cpp rpc-servers, verifies each one (an open
// port is not enough), tracks its health and capacity, and keeps one etcd key per backend
// true. Every other service routes on what it writes.
//
// Every replica serves the API from an etcd snapshot and accepts self-registrations; one
// replica, elected through etcd, probes and scans, so scans are never duplicated.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	"github.com/sollol/mesh/services/discovery/internal/probe"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/lifecycle"
	"github.com/sollol/mesh/services/shared/registry"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "discovery"

// electionPrefix is where discovery replicas elect the one that probes and scans.
const electionPrefix = registry.Root + "election/discovery"

// Deps are what the service uses from its process. Etcd is required.
type Deps = grpcserver.Deps

// Service is a running discovery replica.
type Service struct {
	*grpcserver.Service
	discoveryv1.UnimplementedDiscoveryServiceServer

	cfg      Config
	plan     *plan
	deps     Deps
	log      *slog.Logger
	prober   *probe.Prober
	local    *localHost
	store    *registry.Store[*commonv1.Backend]
	snapshot *registry.Snapshot[*commonv1.Backend]
	counters counters
	isLeader atomic.Bool

	campaign *lifecycle.Background // the election for the probing role
}

var _ discoveryv1.DiscoveryServiceServer = (*Service)(nil)

// New validates the configuration and builds the service; it starts working on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Etcd == nil {
		return nil, errors.New("discovery: an etcd client is required")
	}
	p, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	s := &Service{
		Service: grpcserver.New(Name, cfg.GRPC, deps),
		cfg:     cfg,
		plan:    p,
		deps:    deps,
		prober:  probe.New(cfg.ProbeTimeout),
		local:   newLocalHost(),
		store:   registry.NewStore(deps.Etcd, registry.BackendsPrefix, registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} })),
	}
	s.log = s.Logger()
	s.snapshot = registry.NewSnapshot(s.store, s.log)
	if deps.Registry != nil {
		if err := deps.Registry.Register(&collector{s: s}); err != nil {
			return nil, err
		}
	}
	discoveryv1.RegisterDiscoveryServiceServer(s.Server(), s)
	return s, nil
}

// Start mirrors the backends from etcd, joins the election for the probing role, and then
// serves the API (the gRPC server starts and registers last).
func (s *Service) Start(ctx context.Context) error {
	if err := s.snapshot.Start(ctx); err != nil {
		return err
	}
	s.campaign = lifecycle.Go(s.campaignLoop)
	if err := s.Service.Start(ctx); err != nil {
		s.stopBackground()
		return err
	}
	return nil
}

// Stop stops serving first (deregistering from etcd), then hands the probing role on.
func (s *Service) Stop(ctx context.Context) error {
	err := s.Service.Stop(ctx)
	s.stopBackground()
	return err
}

func (s *Service) stopBackground() {
	s.campaign.Stop()
	s.snapshot.Stop()
	s.prober.Close()
}

// IsLeader reports whether this replica currently probes and scans.
func (s *Service) IsLeader() bool { return s.isLeader.Load() }

// Counters reports how many probes, scans and etcd writes this replica has made.
func (s *Service) Counters() (probes, scans, writes int64) {
	return s.counters.probes.Load(), s.counters.scans.Load(), s.counters.writes.Load()
}

// campaignLoop competes for leadership and, while leader, runs the tracker. When the etcd
// session is lost (an outage longer than the TTL) the tracker keeps probing on its own, so
// health stays current; once etcd answers again that term ends and the replica campaigns
// anew, and the new term's tracker rewrites everything it knows.
func (s *Service) campaignLoop(ctx context.Context) {
	id := instanceID()
	var orphan *term // the lost term's tracker, still probing through the outage
	defer func() {
		if orphan != nil {
			orphan.end()
		}
	}()
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.deps.Etcd, concurrency.WithTTL(ttlSeconds(s.cfg.LeaseTTL)), concurrency.WithContext(ctx))
		if err != nil {
			s.log.Warn("discovery election: no etcd session, retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if orphan != nil {
			// etcd is back: the election decides again who probes.
			orphan.end()
			orphan = nil
		}
		election := concurrency.NewElection(sess, electionPrefix)
		if err := election.Campaign(ctx, id); err != nil {
			sess.Orphan()
			if ctx.Err() == nil {
				s.log.Warn("discovery election: campaign failed, retrying", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		t := s.startTerm(ctx, id)
		select {
		case <-sess.Done():
			s.log.Warn("discovery leadership lost with the etcd session; probing on until etcd answers")
			orphan = t
		case <-ctx.Done():
			t.end()
			resignCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_ = election.Resign(resignCtx)
			cancel()
		}
		sess.Orphan()
	}
}

// term is one leadership term's running tracker.
type term struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (t *term) end() {
	t.cancel()
	<-t.done
}

func (s *Service) startTerm(ctx context.Context, id string) *term {
	termCtx, cancel := context.WithCancel(ctx)
	t := &term{cancel: cancel, done: make(chan struct{})}
	s.isLeader.Store(true)
	s.log.Info("probing and scanning as the discovery leader", "instance", id)
	tr := &tracker{
		plan:     s.plan,
		cfg:      &s.cfg,
		prober:   s.prober,
		local:    s.local,
		store:    s.store,
		snapshot: s.snapshot,
		resolver: net.DefaultResolver,
		dialer:   &net.Dialer{},
		log:      s.log,
		counters: &s.counters,
	}
	go func() {
		defer close(t.done)
		defer s.isLeader.Store(false)
		if err := tr.run(termCtx); err != nil && termCtx.Err() == nil {
			s.log.Warn("discovery tracker stopped", "err", err)
		}
	}()
	return t
}

func instanceID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
}

func ttlSeconds(d time.Duration) int { return max(int(d/time.Second), 1) }

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// SnapshotItems returns the backends as this replica's etcd mirror has them.
func (s *Service) SnapshotItems() map[string]*commonv1.Backend { return s.snapshot.Items() }
