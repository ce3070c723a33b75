package ollamapool

import (
	"context"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// Chat streams a chat answer from the best node.
func (s *Service) Chat(req *ollamapoolv1.ChatRequest, stream ollamapoolv1.OllamaPoolService_ChatServer) error {
	priority, err := validateCommon(req.GetModel(), req.GetOptions(), req.GetPriority())
	if err == nil {
		err = inference.Messages("messages", req.GetMessages())
	}
	if err != nil {
		return rpcerr.ToStatus(err)
	}
	body := &ollama.ChatRequest{
		Model:     req.GetModel(),
		Messages:  messages(req.GetMessages()),
		Stream:    true,
		Format:    req.GetOptions().GetFormat(),
		Options:   options(req.GetOptions()),
		KeepAlive: keepAlive(req.GetOptions()),
	}
	return s.stream(stream.Context(), streamRequest{
		model: req.GetModel(), priority: priority, exclude: req.GetExcludeNodes(), prefer: req.GetPreferNode(),
		path: "/api/chat", body: body,
	}, func(text string) error {
		return stream.Send(&ollamapoolv1.ChatResponse{Event: &ollamapoolv1.ChatResponse_Chunk{Chunk: &commonv1.TokenChunk{Content: text}}})
	}, func(d *commonv1.Done) error {
		return stream.Send(&ollamapoolv1.ChatResponse{Event: &ollamapoolv1.ChatResponse_Done{Done: d}})
	})
}

// Generate streams a completion from the best node.
func (s *Service) Generate(req *ollamapoolv1.GenerateRequest, stream ollamapoolv1.OllamaPoolService_GenerateServer) error {
	priority, err := validateCommon(req.GetModel(), req.GetOptions(), req.GetPriority())
	if err == nil {
		err = inference.Prompt("prompt", req.GetPrompt())
	}
	if err == nil && req.GetPrompt() == "" {
		err = rpcerr.InvalidArgument("prompt", "is required")
	}
	if err != nil {
		return rpcerr.ToStatus(err)
	}
	body := &ollama.GenerateRequest{
		Model:     req.GetModel(),
		Prompt:    req.GetPrompt(),
		System:    req.GetSystem(),
		Raw:       req.GetRaw(),
		Stream:    true,
		Format:    req.GetOptions().GetFormat(),
		Options:   options(req.GetOptions()),
		KeepAlive: keepAlive(req.GetOptions()),
	}
	return s.stream(stream.Context(), streamRequest{
		model: req.GetModel(), priority: priority, exclude: req.GetExcludeNodes(), prefer: req.GetPreferNode(),
		path: "/api/generate", body: body,
	}, func(text string) error {
		return stream.Send(&ollamapoolv1.GenerateResponse{Event: &ollamapoolv1.GenerateResponse_Chunk{Chunk: &commonv1.TokenChunk{Content: text}}})
	}, func(d *commonv1.Done) error {
		return stream.Send(&ollamapoolv1.GenerateResponse{Event: &ollamapoolv1.GenerateResponse_Done{Done: d}})
	})
}

// stream runs one streamed request and ends it with exactly one terminal event: the Done
// message, or the error.
func (s *Service) stream(ctx context.Context, r streamRequest, sendText func(string) error, sendDone func(*commonv1.Done) error) error {
	s.counters.requests.Add(1)
	s.counters.inFlight.Add(1)
	defer s.counters.inFlight.Add(-1)
	d, err := s.relay(ctx, r, sendText)
	if err != nil {
		return rpcerr.ToStatus(err)
	}
	return sendDone(d)
}

func validateCommon(model string, opts *commonv1.GenerationOptions, priority int32) (int32, error) {
	if err := inference.Model("model", model); err != nil {
		return 0, err
	}
	if err := inference.Options("options", opts); err != nil {
		return 0, err
	}
	return inference.Priority("priority", priority)
}

func messages(in []*commonv1.ChatMessage) []ollama.Message {
	out := make([]ollama.Message, len(in))
	for i, m := range in {
		out[i] = ollama.Message{
			Role:    strings.ToLower(strings.TrimPrefix(m.GetRole().String(), "ROLE_")),
			Content: m.GetContent(),
			Images:  m.GetImages(),
		}
	}
	return out
}

func options(o *commonv1.GenerationOptions) *ollama.Options {
	if o == nil {
		return nil
	}
	return &ollama.Options{
		Temperature:   o.Temperature,
		TopP:          o.TopP,
		TopK:          o.TopK,
		MinP:          o.MinP,
		RepeatPenalty: o.RepeatPenalty,
		Seed:          o.Seed,
		Stop:          o.GetStop(),
		NumPredict:    o.MaxTokens,
		NumCtx:        o.ContextSize,
	}
}

func keepAlive(o *commonv1.GenerationOptions) *ollama.KeepAlive {
	if o.GetKeepAlive() == nil {
		return nil
	}
	return &ollama.KeepAlive{D: o.GetKeepAlive().AsDuration()}
}
