package router

import (
	"context"
	"slices"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/router/internal/decide"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// Validate checks an inference request the same way for every API; errors name the field
// in the API's own words (the gRPC field names).
func Validate(in *Inference) error {
	if err := inference.Model("model", in.Model); err != nil {
		return err
	}
	if in.chat() {
		if err := inference.Messages("messages", in.Messages); err != nil {
			return err
		}
	} else if err := inference.Prompt("prompt", in.Prompt); err != nil {
		return err
	}
	if err := inference.Options("options", in.Options); err != nil {
		return err
	}
	if _, ok := commonv1.RouteHint_name[int32(in.Hint)]; !ok {
		return rpcerr.InvalidArgument("hint", "must be ROUTE_HINT_AUTO, ROUTE_HINT_POOL or ROUTE_HINT_SHARD, got %d", in.Hint)
	}
	p, err := inference.Priority("priority", in.Priority)
	in.Priority = p
	return err
}

// streamSink sends events on a gRPC stream.
type streamSink struct {
	progress func(*commonv1.LoadProgress) error
	text     func(string) error
}

func (s streamSink) Progress(p *commonv1.LoadProgress) error { return s.progress(p) }
func (s streamSink) Text(t string) error                     { return s.text(t) }

// Chat streams a chat answer over the chosen path.
func (s *Service) Chat(req *routerv1.ChatRequest, stream routerv1.RouterService_ChatServer) error {
	in := &Inference{Model: req.GetModel(), Messages: req.GetMessages(), Options: req.GetOptions(), Hint: req.GetHint(), Priority: req.GetPriority()}
	if in.Messages == nil {
		in.Messages = []*commonv1.ChatMessage{} // a chat with no messages is still a chat
	}
	if err := Validate(in); err != nil {
		return rpcerr.ToStatus(err)
	}
	done, _, err := s.Run(stream.Context(), in, streamSink{
		progress: func(p *commonv1.LoadProgress) error {
			return stream.Send(&routerv1.ChatResponse{Event: &routerv1.ChatResponse_Progress{Progress: p}})
		},
		text: func(t string) error {
			return stream.Send(&routerv1.ChatResponse{Event: &routerv1.ChatResponse_Chunk{Chunk: &commonv1.TokenChunk{Content: t}}})
		},
	})
	if err != nil {
		return rpcerr.ToStatus(err)
	}
	return stream.Send(&routerv1.ChatResponse{Event: &routerv1.ChatResponse_Done{Done: done}})
}

// Generate streams a completion over the chosen path.
func (s *Service) Generate(req *routerv1.GenerateRequest, stream routerv1.RouterService_GenerateServer) error {
	in := &Inference{Model: req.GetModel(), Prompt: req.GetPrompt(), System: req.GetSystem(), Raw: req.GetRaw(),
		Options: req.GetOptions(), Hint: req.GetHint(), Priority: req.GetPriority()}
	if err := Validate(in); err != nil {
		return rpcerr.ToStatus(err)
	}
	if in.Prompt == "" {
		return rpcerr.ToStatus(rpcerr.InvalidArgument("prompt", "is required"))
	}
	done, _, err := s.Run(stream.Context(), in, streamSink{
		progress: func(p *commonv1.LoadProgress) error {
			return stream.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Progress{Progress: p}})
		},
		text: func(t string) error {
			return stream.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Chunk{Chunk: &commonv1.TokenChunk{Content: t}}})
		},
	})
	if err != nil {
		return rpcerr.ToStatus(err)
	}
	return stream.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Done{Done: done}})
}

// Embed is served by the pool: a coordinator has no embedding endpoint, so a request that
// can only be sharded is refused with that reason.
func (s *Service) Embed(ctx context.Context, req *routerv1.EmbedRequest) (*routerv1.EmbedResponse, error) {
	resp, err := s.embed(ctx, req)
	return resp, rpcerr.ToStatus(err)
}

func (s *Service) embed(ctx context.Context, req *routerv1.EmbedRequest) (*routerv1.EmbedResponse, error) {
	if err := inference.Model("model", req.GetModel()); err != nil {
		return nil, err
	}
	if req.GetHint() == commonv1.RouteHint_ROUTE_HINT_SHARD {
		return nil, rpcerr.InvalidArgument("hint", "embeddings are served by the Ollama pool only; sharding has no embedding endpoint")
	}
	d := s.decide(req.GetModel(), 0, commonv1.RouteHint_ROUTE_HINT_POOL)
	if d.GetPath() != commonv1.RoutePath_ROUTE_PATH_POOL {
		return nil, &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "NO_PATH", Message: "embeddings need the Ollama pool: " + d.GetError()}
	}
	conn, err := s.downstream.pool()
	if err != nil {
		return nil, err
	}
	resp, err := ollamapoolv1.NewOllamaPoolServiceClient(conn).Embed(ctx, &ollamapoolv1.EmbedRequest{
		Model: req.GetModel(), Inputs: req.GetInputs(), Truncate: req.GetTruncate(), Dimensions: req.Dimensions, Priority: req.GetPriority(),
	})
	if err != nil {
		s.stats.failed(err)
		return nil, err
	}
	s.stats.served(commonv1.RoutePath_ROUTE_PATH_POOL)
	route := resp.GetRoute()
	if route != nil {
		route.Requested = req.GetHint()
	}
	return &routerv1.EmbedResponse{Embeddings: resp.GetEmbeddings(), Route: route, Usage: resp.GetUsage()}, nil
}

// Route explains the decision for a hypothetical request without running it.
func (s *Service) Route(_ context.Context, req *routerv1.RouteRequest) (*routerv1.RouteResponse, error) {
	if err := inference.Model("model", req.GetModel()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if req.GetContextSize() < 0 || req.GetContextSize() > inference.MaxContextSize {
		return nil, rpcerr.ToStatus(rpcerr.InvalidArgument("context_size", "must be between 0 and %d, got %d", inference.MaxContextSize, req.GetContextSize()))
	}
	return &routerv1.RouteResponse{Decision: s.decide(req.GetModel(), req.GetContextSize(), req.GetHint())}, nil
}

// ListModels lists every model an Ollama node has or the coordinator-manager can shard,
// with where it can run.
func (s *Service) ListModels(context.Context, *routerv1.ListModelsRequest) (*routerv1.ListModelsResponse, error) {
	v := s.view.current()
	names := map[string]string{} // normalized → as listed
	for _, b := range v.Backends {
		for _, m := range b.GetInstalledModels() {
			names[inference.NormalizeModel(m.GetName())] = m.GetName()
		}
	}
	for _, m := range s.ShardModels() {
		if key := inference.NormalizeModel(m.GetName()); names[key] == "" {
			names[key] = m.GetName()
		}
	}
	resp := &routerv1.ListModelsResponse{}
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range names {
			if !yield(k) {
				return
			}
		}
	}) {
		name := names[key]
		size := decide.Estimate(v, name, 0)
		d := decide.Decide(s.mode, v, decide.Request{Model: name, Size: size})
		m := &routerv1.Model{Name: name, Size: size.Proto()}
		for _, c := range d.GetCandidates() {
			switch c.GetPath() {
			case commonv1.RoutePath_ROUTE_PATH_POOL:
				m.PoolNodes = c.GetBackends()
			case commonv1.RoutePath_ROUTE_PATH_SHARD:
				m.Shardable = c.GetAvailable()
			}
		}
		resp.Models = append(resp.Models, m)
	}
	return resp, nil
}

// GetStats reports the router's counters and what it sees of each part; a missing part is a
// zero, never an error.
func (s *Service) GetStats(context.Context, *routerv1.GetStatsRequest) (*routerv1.GetStatsResponse, error) {
	v := s.view.current()
	td, ms := s.mode.Effective(v)
	resp := &routerv1.GetStatsResponse{
		Requests:       &routerv1.PathCounts{Pool: s.stats.pool.Load(), Shard: s.stats.shard.Load()},
		Fallbacks:      &routerv1.FallbackCounts{PoolToShard: s.stats.poolToShard.Load(), ShardToPool: s.stats.shardPool.Load()},
		ErrorsByCode:   s.stats.errorCounts(),
		InFlight:       uint32(max(s.stats.inFlight.Load(), 0)),
		ReplicaRetries: s.stats.replicaRetries.Load(),
		Mode:           &routerv1.Mode{TaskDistribution: td, ModelSharding: ms},
	}
	if td {
		p := &routerv1.PoolAvailability{Instances: uint32(v.PoolInstances)}
		for _, b := range v.Backends {
			if b.GetKind() == commonv1.BackendKind_BACKEND_KIND_OLLAMA {
				p.NodesPresent++
				if usable(b) {
					p.NodesHealthy++
				}
			}
		}
		resp.Pool = p
	}
	if ms {
		resp.Coordinator = &routerv1.CoordinatorAvailability{Instances: uint32(v.CoordinatorInstances)}
		r := &routerv1.RpcAvailability{}
		for _, b := range v.Backends {
			if b.GetKind() == commonv1.BackendKind_BACKEND_KIND_RPC {
				r.BackendsPresent++
				if usable(b) {
					r.BackendsHealthy++
					r.FreeBytes += b.GetCapacity().GetFreeBytes()
				}
			}
		}
		resp.Rpc = r
	}
	return resp, nil
}

func usable(b *commonv1.Backend) bool {
	h := b.GetHealth()
	return h == commonv1.HealthState_HEALTH_STATE_HEALTHY || h == commonv1.HealthState_HEALTH_STATE_DEGRADED
}
