package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/router/internal/decide"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// Inference is one chat or completion request as every public API hands it to the router.
type Inference struct {
	Model    string
	Messages []*commonv1.ChatMessage // a chat when set
	Prompt   string                  // a completion otherwise
	System   string
	Raw      bool
	Options  *commonv1.GenerationOptions
	Hint     commonv1.RouteHint
	Priority int32
	// OnPath, when set, is called each time a path starts serving the request (twice when
	// it falls back), before any of that path's events reach the sink: an HTTP API names
	// the path in its response headers from it.
	OnPath func(path commonv1.RoutePath, fallbackReason string)
}

func (in *Inference) chat() bool { return in.Messages != nil }

// Sink receives a request's events as they happen. Text and Progress may block (that is how
// a slow client slows the stream down); an error from them ends the request.
type Sink interface {
	Progress(*commonv1.LoadProgress) error
	Text(string) error
}

// event is one downstream stream message, whichever service sent it. Only the
// coordinator's messages carry load progress (see progressOf).
type event interface {
	GetChunk() *commonv1.TokenChunk
	GetDone() *commonv1.Done
}

func progressOf(ev event) *commonv1.LoadProgress {
	if p, ok := ev.(interface{ GetProgress() *commonv1.LoadProgress }); ok {
		return p.GetProgress()
	}
	return nil
}

// Run decides the path for in, runs it, and falls back to the other path when the first
// fails before any token reached the sink. It returns the terminal event and the decision.
func (s *Service) Run(ctx context.Context, in *Inference, sink Sink) (*commonv1.Done, *routerv1.Decision, error) {
	d := s.decide(in.Model, in.Options.GetContextSize(), in.Hint)
	if d.GetPath() == commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED {
		err := s.noPathError(in.Model, d)
		s.stats.failed(err)
		return nil, d, err
	}
	s.stats.inFlight.Add(1)
	defer s.stats.inFlight.Add(-1)

	if in.OnPath != nil {
		in.OnPath(d.GetPath(), "")
	}
	done, started, err := s.runOn(ctx, d.GetPath(), in, sink)
	if err != nil && !started && d.GetFallback() != commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED && fallbackable(err) {
		reason := fmt.Sprintf("%s failed before the first token: %s", pathWord(d.GetPath()), status.Convert(err).Message())
		s.stats.fallback(d.GetPath())
		s.log.Warn("falling back", "model", in.Model, "from", pathWord(d.GetPath()), "to", pathWord(d.GetFallback()), "err", err)
		if in.OnPath != nil {
			in.OnPath(d.GetFallback(), reason)
		}
		done, _, err = s.runOn(ctx, d.GetFallback(), in, sink)
		if err == nil {
			done.Route.FallbackReason = reason
		}
	}
	if err != nil {
		s.stats.failed(err)
		return nil, d, err
	}
	if done.Route == nil {
		done.Route = &commonv1.RouteTaken{}
	}
	done.Route.Requested = in.Hint
	s.stats.served(done.GetRoute().GetPath())
	return done, d, nil
}

// fallbackable says whether the other path may succeed where this one failed: not when the
// request itself is bad, and not when the caller has gone.
func fallbackable(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.Canceled, codes.DeadlineExceeded:
		return false
	}
	return true
}

// replicaAttempts bounds how many replicas of a path's service one request tries.
const replicaAttempts = 3

// runOn runs in on one path; started reports whether any text reached the sink. When the
// service replica the request reached dies before any text (the connection broke: no
// answer of the service's own), another replica gets the request; the connection's
// round-robin picks it.
func (s *Service) runOn(ctx context.Context, path commonv1.RoutePath, in *Inference, sink Sink) (*commonv1.Done, bool, error) {
	for attempt := 1; ; attempt++ {
		done, started, err := s.runOnReplica(ctx, path, in, sink)
		if err == nil || started || attempt >= replicaAttempts || ctx.Err() != nil || !replicaLost(err) {
			return done, started, err
		}
		s.stats.replicaRetries.Add(1)
		s.log.Warn("a service replica failed before the first token; trying another", "model", in.Model, "path", pathWord(path), "err", err)
		// A moment for the connection to take the broken replica out of its rotation.
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(time.Duration(attempt) * 25 * time.Millisecond):
		}
	}
}

// replicaLost says the call broke in transport — UNAVAILABLE without the reason every
// answer of a SOLLOL service carries — so the replica, not the request, is the problem.
func replicaLost(err error) bool {
	return status.Code(err) == codes.Unavailable && rpcerr.Reason(err) == ""
}

// runOnReplica runs in once on the path's service.
func (s *Service) runOnReplica(ctx context.Context, path commonv1.RoutePath, in *Inference, sink Sink) (*commonv1.Done, bool, error) {
	var (
		stream interface{ recv() (event, error) }
		err    error
	)
	if path == commonv1.RoutePath_ROUTE_PATH_POOL {
		stream, err = s.openPool(ctx, in)
	} else {
		stream, err = s.openCoordinator(ctx, in)
	}
	if err != nil {
		return nil, false, err
	}
	started := false
	for {
		ev, err := stream.recv()
		if errors.Is(err, io.EOF) {
			return nil, started, rpcerr.New(rpcerr.KindUnavailable, "STREAM_ENDED_EARLY",
				"the %s stream ended without its terminal event", pathWord(path))
		}
		if err != nil {
			return nil, started, err
		}
		switch {
		case ev.GetChunk() != nil:
			started = true
			if err := sink.Text(ev.GetChunk().GetContent()); err != nil {
				return nil, started, err
			}
		case progressOf(ev) != nil:
			if err := sink.Progress(progressOf(ev)); err != nil {
				return nil, started, err
			}
		case ev.GetDone() != nil:
			return ev.GetDone(), started, nil
		}
	}
}

// recvFunc adapts a generated client stream to the loop above.
type recvFunc func() (event, error)

func (f recvFunc) recv() (event, error) { return f() }

func (s *Service) openPool(ctx context.Context, in *Inference) (interface{ recv() (event, error) }, error) {
	conn, err := s.downstream.pool()
	if err != nil {
		return nil, err
	}
	client := ollamapoolv1.NewOllamaPoolServiceClient(conn)
	if in.chat() {
		st, err := client.Chat(ctx, &ollamapoolv1.ChatRequest{Model: in.Model, Messages: in.Messages, Options: in.Options, Priority: in.Priority})
		if err != nil {
			return nil, err
		}
		return recvFunc(func() (event, error) { return st.Recv() }), nil
	}
	st, err := client.Generate(ctx, &ollamapoolv1.GenerateRequest{Model: in.Model, Prompt: in.Prompt, System: in.System, Raw: in.Raw, Options: in.Options, Priority: in.Priority})
	if err != nil {
		return nil, err
	}
	return recvFunc(func() (event, error) { return st.Recv() }), nil
}

func (s *Service) openCoordinator(ctx context.Context, in *Inference) (interface{ recv() (event, error) }, error) {
	conn, err := s.downstream.coordinator()
	if err != nil {
		return nil, err
	}
	client := coordinatorv1.NewCoordinatorServiceClient(conn)
	if in.chat() {
		st, err := client.Chat(ctx, &coordinatorv1.ChatRequest{Model: in.Model, Messages: in.Messages, Options: in.Options, Priority: in.Priority})
		if err != nil {
			return nil, err
		}
		return recvFunc(func() (event, error) { return st.Recv() }), nil
	}
	st, err := client.Generate(ctx, &coordinatorv1.GenerateRequest{Model: in.Model, Prompt: in.Prompt, System: in.System, Raw: in.Raw, Options: in.Options, Priority: in.Priority})
	if err != nil {
		return nil, err
	}
	return recvFunc(func() (event, error) { return st.Recv() }), nil
}

// decide runs the decision engine on the live view.
func (s *Service) decide(model string, contextSize int32, hint commonv1.RouteHint) *routerv1.Decision {
	v := s.view.current()
	return decide.Decide(s.mode, v, decide.Request{
		Model: model, ContextSize: contextSize, Hint: hint,
		Size: decide.Estimate(v, model, contextSize),
	})
}

func pathWord(p commonv1.RoutePath) string {
	if p == commonv1.RoutePath_ROUTE_PATH_SHARD {
		return "sharding"
	}
	return "pool"
}

// noPathError is the immediate answer when nothing can serve: NOT_FOUND listing the models
// that exist when the model is on no node and sharding cannot take it, else
// FAILED_PRECONDITION saying what to configure.
func (s *Service) noPathError(model string, d *routerv1.Decision) error {
	known := map[string]bool{}
	found := false
	for _, b := range s.view.current().Backends {
		for _, m := range b.GetInstalledModels() {
			known[m.GetName()] = true
			found = found || inference.SameModel(m.GetName(), model)
		}
	}
	shardable := false
	for _, c := range d.GetCandidates() {
		shardable = shardable || (c.GetPath() == commonv1.RoutePath_ROUTE_PATH_SHARD && c.GetAvailable())
	}
	if !found && !shardable && len(known) > 0 {
		names := slices.Sorted(maps.Keys(known))
		return &rpcerr.Error{Kind: rpcerr.KindNotFound, Reason: "MODEL_NOT_FOUND", Metadata: map[string]string{"model": model},
			// Ollama's own wording first: its clients and users recognise it.
			Message: fmt.Sprintf("model '%s' not found; the mesh has: %s. %s", model, strings.Join(names, ", "), d.GetError())}
	}
	return &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "NO_PATH", Message: d.GetError()}
}
