// Package ollamapool picks the best Ollama node for each request and relays its token
// stream: it follows discovery's view of the Ollama nodes in etcd, keeps its own figures per
// node (in flight, latency, time to first token, error classes, circuit), retries elsewhere
// before the first token, and queues by priority when every node is saturated.
package ollamapool

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool/internal/balance"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/lifecycle"
	"github.com/sollol/mesh/services/shared/registry"
)

// Name is the service's name in etcd naming, logs and metrics.
const Name = "ollamapool"

// Deps are what the service uses from its process. Etcd is required.
type Deps = grpcserver.Deps

// counters are the pool's totals, readable from any goroutine.
type counters struct {
	requests        atomic.Uint64
	retries         atomic.Uint64
	failures        atomic.Uint64
	queueRejections atomic.Uint64
	tokens          atomic.Uint64
	inFlight        atomic.Int64
}

// Service is a running pool replica.
type Service struct {
	*grpcserver.Service
	ollamapoolv1.UnimplementedOllamaPoolServiceServer

	cfg      Config
	log      *slog.Logger
	client   *ollama.Client
	pool     *pool
	counters *counters
	snapshot *registry.Snapshot[*commonv1.Backend]

	following *lifecycle.Background // the watch of discovery's backends
}

var _ ollamapoolv1.OllamaPoolServiceServer = (*Service)(nil)

// New validates the configuration and builds the pool; it starts on Start.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Etcd == nil {
		return nil, errors.New("ollamapool: an etcd client is required")
	}
	strategy, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	c := &counters{}
	s := &Service{
		Service:  grpcserver.New(Name, cfg.GRPC, deps),
		cfg:      cfg,
		client:   ollama.New(cfg.timeouts()),
		counters: c,
		pool:     newPool(balance.NewSelector(strategy, cfg.MaxInFlightPerNode, uint64(time.Now().UnixNano())), cfg.breaker(), cfg.QueueSize, c),
	}
	s.log = s.Logger()
	store := registry.NewStore(deps.Etcd, registry.BackendsPrefix, registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} }))
	s.snapshot = registry.NewSnapshot(store, s.log)
	if deps.Registry != nil {
		if err := deps.Registry.Register(&collector{s: s}); err != nil {
			return nil, err
		}
	}
	ollamapoolv1.RegisterOllamaPoolServiceServer(s.Server(), s)
	return s, nil
}

// Start follows the backends in etcd, then serves (registering in etcd last), then warms the
// configured models in the background.
func (s *Service) Start(ctx context.Context) error {
	if err := s.snapshot.Start(ctx); err != nil {
		return err
	}
	s.following = lifecycle.Go(s.follow)
	if err := s.Service.Start(ctx); err != nil {
		s.stopBackground()
		return err
	}
	if len(s.cfg.WarmModels) > 0 {
		go s.warmAtStart(s.following.Context())
	}
	return nil
}

// follow applies discovery's changes to the pool, and wakes the queue on a tick so circuits
// leaving their cooldown are noticed.
func (s *Service) follow(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		items, _, events, unsubscribe := s.snapshot.Subscribe(1024)
		s.pool.update(items)
		s.applyEvents(ctx, events, tick.C)
		// Back here the snapshot dropped a subscriber that fell behind; subscribe afresh.
		unsubscribe()
	}
}

func (s *Service) applyEvents(ctx context.Context, events <-chan registry.Event[*commonv1.Backend], tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				return
			}
			s.pool.update(s.snapshot.Items())
		case <-tick:
			s.pool.tick()
		}
	}
}

// Stop drains the streams (the gRPC server waits for them), then stops following etcd.
func (s *Service) Stop(ctx context.Context) error {
	err := s.Service.Stop(ctx)
	s.stopBackground()
	return err
}

func (s *Service) stopBackground() {
	s.following.Stop()
	s.snapshot.Stop()
	s.client.Close()
}

// collector exports the pool's figures to Prometheus at scrape time.
type collector struct{ s *Service }

var (
	descNodeInFlight = prometheus.NewDesc("sollol_ollamapool_node_in_flight", "Requests running on the node.", []string{"node"}, nil)
	descNodeRequests = prometheus.NewDesc("sollol_ollamapool_node_requests_total", "Requests the pool sent to the node.", []string{"node"}, nil)
	descNodeErrors   = prometheus.NewDesc("sollol_ollamapool_node_errors_total", "Failed requests by class.", []string{"node", "class"}, nil)
	descNodeTokens   = prometheus.NewDesc("sollol_ollamapool_node_tokens_total", "Text chunks relayed from the node.", []string{"node"}, nil)
	descNodeCircuit  = prometheus.NewDesc("sollol_ollamapool_node_circuit_state", "1 closed, 2 open, 3 half-open.", []string{"node"}, nil)
	descNodeTTFT     = prometheus.NewDesc("sollol_ollamapool_node_ttft_seconds", "EWMA of time to first token.", []string{"node"}, nil)
	descQueueDepth   = prometheus.NewDesc("sollol_ollamapool_queue_depth", "Requests waiting for a saturated pool.", nil, nil)
	descRetries      = prometheus.NewDesc("sollol_ollamapool_retries_total", "Requests retried on another node before the first token.", nil, nil)
	descRejections   = prometheus.NewDesc("sollol_ollamapool_queue_rejections_total", "Requests refused because the queue was full.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodeInFlight, descNodeRequests, descNodeErrors, descNodeTokens, descNodeCircuit, descNodeTTFT, descQueueDepth, descRetries, descRejections} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, n := range c.s.pool.snapshot() {
		ch <- prometheus.MustNewConstMetric(descNodeInFlight, prometheus.GaugeValue, float64(n.InFlight), n.ID)
		ch <- prometheus.MustNewConstMetric(descNodeRequests, prometheus.CounterValue, float64(n.Requests), n.ID)
		ch <- prometheus.MustNewConstMetric(descNodeTokens, prometheus.CounterValue, float64(n.Tokens), n.ID)
		ch <- prometheus.MustNewConstMetric(descNodeCircuit, prometheus.GaugeValue, float64(n.Breaker.State(now)), n.ID)
		ch <- prometheus.MustNewConstMetric(descNodeTTFT, prometheus.GaugeValue, n.TTFT.Seconds(), n.ID)
		for class, v := range n.Errors {
			ch <- prometheus.MustNewConstMetric(descNodeErrors, prometheus.CounterValue, float64(v), n.ID, class)
		}
	}
	ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(c.s.pool.queueDepth()))
	ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(c.s.counters.retries.Load()))
	ch <- prometheus.MustNewConstMetric(descRejections, prometheus.CounterValue, float64(c.s.counters.queueRejections.Load()))
}
