package coordinator

import (
	"context"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator/internal/manager"
	"github.com/sollol/mesh/services/coordinator/internal/relay"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// maxParallel bounds the slots a request may ask a coordinator to start with.
const maxParallel = 1024

// EnsureCoordinator makes the model's coordinator READY, streaming load progress meanwhile.
func (s *Service) EnsureCoordinator(req *coordinatorv1.EnsureCoordinatorRequest, stream coordinatorv1.CoordinatorService_EnsureCoordinatorServer) error {
	if err := validateModel(req.GetModel()); err != nil {
		return rpcerr.ToStatus(err)
	}
	if req.GetContextSize() > maxContext {
		return rpcerr.ToStatus(rpcerr.InvalidArgument("context_size", "must be at most %d, got %d", maxContext, req.GetContextSize()))
	}
	if req.GetParallel() > maxParallel {
		return rpcerr.ToStatus(rpcerr.InvalidArgument("parallel", "must be at most %d, got %d", maxParallel, req.GetParallel()))
	}
	ctx := stream.Context()
	want := manager.Want{Model: req.GetModel(), SlotContext: req.GetContextSize(), ContextField: "context_size",
		Parallel: req.GetParallel(), NoForward: isForwarded(ctx)}
	progress := func(p *commonv1.LoadProgress) error {
		return stream.Send(&coordinatorv1.EnsureCoordinatorResponse{Event: &coordinatorv1.EnsureCoordinatorResponse_Progress{Progress: p}})
	}
	for hops := 0; ; hops++ {
		lease, owner, err := s.mgr.Acquire(ctx, want, progress)
		if err != nil {
			return rpcerr.ToStatus(err)
		}
		if owner != "" {
			sent, err := s.forwardStream(ctx, owner, func(cli coordinatorv1.CoordinatorServiceClient) (bool, error) {
				fs, err := cli.EnsureCoordinator(forwardedCtx(ctx), req)
				if err != nil {
					return false, err
				}
				return relayStream(fs.Recv, stream.Send)
			})
			if err != nil && ownerMoved(err) && !sent && hops < maxForwards {
				continue
			}
			return rpcerr.ToStatus(err)
		}
		c := lease.Coordinator()
		lease.Release()
		return stream.Send(&coordinatorv1.EnsureCoordinatorResponse{Event: &coordinatorv1.EnsureCoordinatorResponse_Ready{Ready: c}})
	}
}

// forwardStream runs a call against the owner replica at addr.
func (s *Service) forwardStream(_ context.Context, addr string, call func(coordinatorv1.CoordinatorServiceClient) (bool, error)) (bool, error) {
	cli, err := s.forward.client(addr)
	if err != nil {
		return false, rpcerr.New(rpcerr.KindUnavailable, "OWNER_UNREACHABLE", "cannot reach the owner replica at %s: %v", addr, err)
	}
	return call(cli)
}

// Chat runs a chat completion on the model's coordinator: load progress during a cold
// start, then the tokens as they arrive, then one done event.
func (s *Service) Chat(req *coordinatorv1.ChatRequest, stream coordinatorv1.CoordinatorService_ChatServer) error {
	for _, err := range []error{validateModel(req.GetModel()), validateMessages(req.GetMessages()),
		validateOptions(req.GetOptions()), validatePriority(req.GetPriority())} {
		if err != nil {
			return rpcerr.ToStatus(err)
		}
	}
	ctx := stream.Context()
	out := sink{
		progress: func(p *commonv1.LoadProgress) error {
			return stream.Send(&coordinatorv1.ChatResponse{Event: &coordinatorv1.ChatResponse_Progress{Progress: p}})
		},
		chunk: func(text string) error {
			return stream.Send(&coordinatorv1.ChatResponse{Event: &coordinatorv1.ChatResponse_Chunk{Chunk: &commonv1.TokenChunk{Content: text}}})
		},
		done: func(d *commonv1.Done) error {
			return stream.Send(&coordinatorv1.ChatResponse{Event: &coordinatorv1.ChatResponse_Done{Done: d}})
		},
		forward: func(addr string) (bool, error) {
			return s.forwardStream(ctx, addr, func(cli coordinatorv1.CoordinatorServiceClient) (bool, error) {
				fs, err := cli.Chat(forwardedCtx(ctx), req)
				if err != nil {
					return false, err
				}
				return relayStream(fs.Recv, stream.Send)
			})
		},
	}
	r := relay.ChatRequest{Model: req.GetModel(), Messages: req.GetMessages(), Options: req.GetOptions()}
	return rpcerr.ToStatus(s.generate(ctx, wantOf(ctx, req.GetModel(), req.GetOptions(), req.GetPriority()), out,
		func(ctx context.Context, l *manager.Lease, onText func(string) error) (*relay.Result, error) {
			return s.mgr.Relay().Chat(ctx, l.Dial, r, onText)
		}))
}

// Generate runs a completion of one prompt; raw prompts go to /completion unchanged, others
// through the model's chat template. An empty prompt only loads the model.
func (s *Service) Generate(req *coordinatorv1.GenerateRequest, stream coordinatorv1.CoordinatorService_GenerateServer) error {
	for _, err := range []error{validateModel(req.GetModel()), validateOptions(req.GetOptions()), validatePriority(req.GetPriority())} {
		if err != nil {
			return rpcerr.ToStatus(err)
		}
	}
	ctx := stream.Context()
	out := sink{
		progress: func(p *commonv1.LoadProgress) error {
			return stream.Send(&coordinatorv1.GenerateResponse{Event: &coordinatorv1.GenerateResponse_Progress{Progress: p}})
		},
		chunk: func(text string) error {
			return stream.Send(&coordinatorv1.GenerateResponse{Event: &coordinatorv1.GenerateResponse_Chunk{Chunk: &commonv1.TokenChunk{Content: text}}})
		},
		done: func(d *commonv1.Done) error {
			return stream.Send(&coordinatorv1.GenerateResponse{Event: &coordinatorv1.GenerateResponse_Done{Done: d}})
		},
		forward: func(addr string) (bool, error) {
			return s.forwardStream(ctx, addr, func(cli coordinatorv1.CoordinatorServiceClient) (bool, error) {
				fs, err := cli.Generate(forwardedCtx(ctx), req)
				if err != nil {
					return false, err
				}
				return relayStream(fs.Recv, stream.Send)
			})
		},
	}
	want := wantOf(ctx, req.GetModel(), req.GetOptions(), req.GetPriority())
	if req.GetPrompt() == "" {
		return rpcerr.ToStatus(s.loadOnly(ctx, want, out))
	}
	do := func(ctx context.Context, l *manager.Lease, onText func(string) error) (*relay.Result, error) {
		if req.GetRaw() {
			return s.mgr.Relay().Complete(ctx, l.Dial, relay.CompletionRequest{Model: req.GetModel(), Prompt: req.GetPrompt(), Options: req.GetOptions()}, onText)
		}
		var msgs []*commonv1.ChatMessage
		if req.GetSystem() != "" {
			msgs = append(msgs, &commonv1.ChatMessage{Role: commonv1.Role_ROLE_SYSTEM, Content: req.GetSystem()})
		}
		msgs = append(msgs, &commonv1.ChatMessage{Role: commonv1.Role_ROLE_USER, Content: req.GetPrompt()})
		return s.mgr.Relay().Chat(ctx, l.Dial, relay.ChatRequest{Model: req.GetModel(), Messages: msgs, Options: req.GetOptions()}, onText)
	}
	return rpcerr.ToStatus(s.generate(ctx, want, out, do))
}

func wantOf(ctx context.Context, model string, o *commonv1.GenerationOptions, priority int32) manager.Want {
	if priority == 0 {
		priority = inference.DefaultPriority
	}
	return manager.Want{Model: model, SlotContext: slotContextOf(o), ContextField: "options.context_size",
		KeepAlive: keepAliveOf(o), NoForward: isForwarded(ctx), Priority: priority}
}

// ListCoordinators lists this replica's coordinators.
func (s *Service) ListCoordinators(context.Context, *coordinatorv1.ListCoordinatorsRequest) (*coordinatorv1.ListCoordinatorsResponse, error) {
	return &coordinatorv1.ListCoordinatorsResponse{Coordinators: s.mgr.List()}, nil
}

// StopCoordinator stops the model's coordinator, on whichever replica owns it.
func (s *Service) StopCoordinator(ctx context.Context, req *coordinatorv1.StopCoordinatorRequest) (*coordinatorv1.StopCoordinatorResponse, error) {
	if err := validateModel(req.GetModel()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	c, owner, err := s.mgr.StopModel(ctx, req.GetModel(), req.GetDrain())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if owner != "" && !isForwarded(ctx) {
		cli, err := s.forward.client(owner)
		if err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		return cli.StopCoordinator(forwardedCtx(ctx), req)
	}
	if c == nil {
		return nil, rpcerr.ToStatus(rpcerr.New(rpcerr.KindNotFound, "COORDINATOR_NOT_FOUND", "model %s has no coordinator on this replica", req.GetModel()))
	}
	return &coordinatorv1.StopCoordinatorResponse{Coordinator: c}, nil
}

// GetStats reports this replica's counters.
func (s *Service) GetStats(context.Context, *coordinatorv1.GetStatsRequest) (*coordinatorv1.GetStatsResponse, error) {
	return s.mgr.Stats(), nil
}

// ListModels is the model catalogue: what this replica can resolve, sized from GGUF metadata.
func (s *Service) ListModels(context.Context, *coordinatorv1.ListModelsRequest) (*coordinatorv1.ListModelsResponse, error) {
	return &coordinatorv1.ListModelsResponse{Models: s.mgr.Catalogue()}, nil
}
