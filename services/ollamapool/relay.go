package ollamapool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/ollamapool/internal/balance"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// streamRequest is one streamed request, chat or generate alike.
type streamRequest struct {
	model    string
	priority int32
	exclude  []string
	prefer   string
	path     string // /api/chat or /api/generate
	body     any    // the Ollama request body
}

// relay runs r on the best node and hands each text chunk to send as it arrives. Before the
// first token a failed node is left for another (at most MaxAttempts nodes); after it the
// failure is final and names the node, since a second node would start the answer over.
func (s *Service) relay(ctx context.Context, r streamRequest, send func(text string) error) (*commonv1.Done, error) {
	var tried []string
	var last *ollama.Error
	for attempt := 1; ; attempt++ {
		node, err := s.pool.acquire(ctx, balance.Want{Model: r.model, Exclude: append(slices.Clone(r.exclude), tried...), Prefer: r.prefer}, r.priority)
		if err != nil {
			if last != nil && ctx.Err() == nil {
				// Nowhere left to retry: the last node's failure says more than "none left".
				return nil, s.failure(last, tried)
			}
			return nil, err
		}
		tried = append(tried, node.ID)
		start := time.Now()
		var ttft time.Duration
		tokens := 0
		final, err := s.client.Stream(ctx, s.pool.addrOf(node), r.path, r.body, func(text string) error {
			if tokens == 0 {
				ttft = time.Since(start)
			}
			tokens++
			return send(text)
		})
		var oerr *ollama.Error
		errors.As(err, &oerr)
		s.pool.release(node, outcome{err: oerr, neutral: oerr != nil && oerr.Class == ollama.ClassCanceled,
			ttft: steadyTTFT(ttft, final), duration: time.Since(start), tokens: tokens})
		s.counters.tokens.Add(uint64(tokens))
		if err == nil {
			return done(final, node.ID, tried, attempt, ttft), nil
		}
		if oerr == nil {
			return nil, err
		}
		last = oerr
		if !oerr.Retryable() || attempt >= s.cfg.MaxAttempts || ctx.Err() != nil {
			return nil, s.failure(oerr, tried)
		}
		s.counters.retries.Add(1)
		s.log.Info("retrying on another node", "model", r.model, "failed", node.ID, "class", string(oerr.Class), "attempt", attempt)
	}
}

// steadyTTFT is the time to first token without the model load the node reports: a load
// happens once per model and node, and counting it would mark a node slow for a long time —
// long enough to starve it of the requests that would correct the average.
func steadyTTFT(ttft time.Duration, final *ollama.Chunk) time.Duration {
	if final == nil {
		return ttft
	}
	return max(ttft-time.Duration(final.LoadDuration), time.Microsecond)
}

func done(final *ollama.Chunk, node string, tried []string, attempts int, ttft time.Duration) *commonv1.Done {
	return &commonv1.Done{
		Usage: &commonv1.Usage{PromptTokens: final.PromptEvalCount, CompletionTokens: final.EvalCount},
		Timings: &commonv1.Timings{
			Total:            durationpb.New(time.Duration(final.TotalDuration)),
			Load:             durationpb.New(time.Duration(final.LoadDuration)),
			PromptEval:       durationpb.New(time.Duration(final.PromptEvalDuration)),
			Eval:             durationpb.New(time.Duration(final.EvalDuration)),
			TimeToFirstToken: durationpb.New(ttft),
		},
		Route: &commonv1.RouteTaken{
			Path:     commonv1.RoutePath_ROUTE_PATH_POOL,
			Backend:  node,
			Tried:    tried,
			Attempts: uint32(attempts),
		},
		DoneReason: final.DoneReason,
	}
}

// failure turns the last node's failure into the public error: what happened, on which
// node, and for a broken stream how far it got, with a stable reason the router acts on
// (only failures before the first token may fall back to sharding).
func (s *Service) failure(e *ollama.Error, tried []string) error {
	s.counters.failures.Add(1)
	meta := map[string]string{"node": e.Node, "class": string(e.Class), "tried": strings.Join(tried, ",")}
	switch {
	case e.Class == ollama.ClassCanceled:
		return e.Err
	case e.Tokens > 0:
		meta["tokens_relayed"] = strconv.Itoa(e.Tokens)
		return &rpcerr.Error{Kind: rpcerr.KindAborted, Reason: "BACKEND_FAILED_MID_STREAM", Metadata: meta,
			Message: fmt.Sprintf("Ollama node %s failed after %d chunks were sent; the answer is incomplete", e.Node, e.Tokens), Err: e}
	case e.Class == ollama.ClassBusy:
		return &rpcerr.Error{Kind: rpcerr.KindResourceExhausted, Reason: "NODES_BUSY", Metadata: meta,
			Message: fmt.Sprintf("every Ollama node tried was busy (%s)", strings.Join(tried, ", ")), Err: e}
	case e.Class == ollama.ClassBadRequest:
		return &rpcerr.Error{Kind: rpcerr.KindInvalidArgument, Reason: "BACKEND_REJECTED_REQUEST", Metadata: meta,
			Message: fmt.Sprintf("Ollama node %s rejected the request: %s", e.Node, e.Message)}
	case e.Class == ollama.ClassModelMissing:
		return &rpcerr.Error{Kind: rpcerr.KindNotFound, Reason: "MODEL_NOT_FOUND", Metadata: meta,
			Message: fmt.Sprintf("the Ollama nodes tried (%s) do not have the model: %s", strings.Join(tried, ", "), e.Message)}
	default:
		return &rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "NO_NODE_SUCCEEDED", Metadata: meta,
			Message: fmt.Sprintf("no Ollama node answered before the first token (tried %s)", strings.Join(tried, ", ")), Err: e}
	}
}
