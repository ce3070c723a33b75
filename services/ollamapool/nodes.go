package ollamapool

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool/internal/balance"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// WarmModel loads a model on the best NodeCount nodes that have it, so the first real
// request does not pay for the load.
func (s *Service) WarmModel(ctx context.Context, req *ollamapoolv1.WarmModelRequest) (*ollamapoolv1.WarmModelResponse, error) {
	if err := inference.Model("model", req.GetModel()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if req.GetKeepAlive() != nil && req.GetKeepAlive().CheckValid() != nil {
		return nil, rpcerr.ToStatus(rpcerr.InvalidArgument("keep_alive", "is not a valid duration"))
	}
	count := max(int(req.GetNodeCount()), 1)
	var keep *ollama.KeepAlive
	if req.GetKeepAlive() != nil {
		keep = &ollama.KeepAlive{D: req.GetKeepAlive().AsDuration()}
	}
	var nodes []*balance.Node
	for range count {
		var exclude []string
		for _, n := range nodes {
			exclude = append(exclude, n.ID)
		}
		// Warming must not wait behind real traffic: take free nodes only.
		n, err := s.pool.acquireNow(balance.Want{Model: req.GetModel(), Exclude: exclude})
		if err != nil {
			if len(nodes) == 0 {
				return nil, rpcerr.ToStatus(err)
			}
			break
		}
		nodes = append(nodes, n)
	}
	resp := &ollamapoolv1.WarmModelResponse{FailedNodes: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := s.client.Load(ctx, s.pool.addrOf(n), req.GetModel(), keep)
			var oerr *ollama.Error
			errors.As(err, &oerr)
			s.pool.release(n, outcome{err: oerr, duration: time.Since(start)})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				resp.FailedNodes[n.ID] = err.Error()
			} else {
				resp.WarmedNodes = append(resp.WarmedNodes, n.ID)
			}
		}()
	}
	wg.Wait()
	return resp, nil
}

// warmAtStart loads the configured models once nodes are known.
func (s *Service) warmAtStart(ctx context.Context) {
	for _, model := range s.cfg.WarmModels {
		resp, err := s.WarmModel(ctx, &ollamapoolv1.WarmModelRequest{Model: model, NodeCount: uint32(s.cfg.WarmNodes)})
		if err != nil {
			s.log.Warn("warm-up failed", "model", model, "err", err)
			continue
		}
		s.log.Info("model warmed", "model", model, "nodes", resp.GetWarmedNodes(), "failed", len(resp.GetFailedNodes()))
	}
}

// ListNodes reports every node with the pool's figures about it.
func (s *Service) ListNodes(_ context.Context, req *ollamapoolv1.ListNodesRequest) (*ollamapoolv1.ListNodesResponse, error) {
	now := time.Now()
	resp := &ollamapoolv1.ListNodesResponse{}
	for _, n := range s.pool.snapshot() {
		circuit := n.Breaker.State(now)
		if req.GetAvailableOnly() && (!n.Healthy() || circuit == ollamapoolv1.CircuitState_CIRCUIT_STATE_OPEN) {
			continue
		}
		resp.Nodes = append(resp.Nodes, &ollamapoolv1.Node{
			Backend:              n.Backend,
			InFlight:             uint32(n.InFlight),
			Circuit:              circuit,
			LatencyEwma:          durationpb.New(n.Latency),
			TimeToFirstTokenEwma: durationpb.New(n.TTFT),
			ErrorsByClass:        n.Errors,
			RequestsTotal:        n.Requests,
			Score:                s.pool.selector.Score(&n, "", 0),
		})
	}
	return resp, nil
}

// GetStats reports the pool's totals and per-node figures.
func (s *Service) GetStats(context.Context, *ollamapoolv1.GetStatsRequest) (*ollamapoolv1.GetStatsResponse, error) {
	now := time.Now()
	resp := &ollamapoolv1.GetStatsResponse{
		RequestsTotal:        s.counters.requests.Load(),
		RetriesTotal:         s.counters.retries.Load(),
		FailuresTotal:        s.counters.failures.Load(),
		QueueDepth:           uint32(s.pool.queueDepth()),
		QueueRejectionsTotal: s.counters.queueRejections.Load(),
		TokensRelayedTotal:   s.counters.tokens.Load(),
		InFlight:             uint32(max(s.counters.inFlight.Load(), 0)),
	}
	for _, n := range s.pool.snapshot() {
		resp.Nodes = append(resp.Nodes, &ollamapoolv1.NodeStats{
			NodeId:             n.ID,
			Address:            n.Addr(),
			RequestsTotal:      n.Requests,
			FailuresTotal:      n.Failures,
			TokensRelayedTotal: n.Tokens,
			InFlight:           uint32(n.InFlight),
			Circuit:            n.Breaker.State(now),
			Score:              s.pool.selector.Score(&n, "", 0),
		})
	}
	return resp, nil
}
