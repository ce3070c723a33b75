package ollamapool

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool/internal/balance"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// maxEmbedInputs bounds one Embed call.
const maxEmbedInputs = 4096

// Embed embeds many inputs at once: they are split into one part per usable node, the parts
// run in parallel (each retried elsewhere if its node fails), and the vectors come back in
// input order.
func (s *Service) Embed(ctx context.Context, req *ollamapoolv1.EmbedRequest) (*ollamapoolv1.EmbedResponse, error) {
	priority, err := validateCommon(req.GetModel(), nil, req.GetPriority())
	if err == nil {
		err = validateInputs(req.GetInputs(), req.Dimensions)
	}
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	s.counters.requests.Add(1)
	inputs := req.GetInputs()
	parts := max(min(len(inputs), s.pool.usable(req.GetModel())), 1)
	size := (len(inputs) + parts - 1) / parts

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	vectors := make([]*commonv1.Embedding, len(inputs))
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		used     []string
		prompt   uint32
	)
	for lo := 0; lo < len(inputs); lo += size {
		hi := min(lo+size, len(inputs))
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, nodes, err := s.embedPart(ctx, req, inputs[lo:hi], priority)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
					cancel() // the whole call fails; stop the other parts
				}
				return
			}
			for i, v := range resp.Embeddings {
				vectors[lo+i] = &commonv1.Embedding{Values: v}
			}
			used = append(used, nodes...)
			prompt += resp.PromptEvalCount
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, rpcerr.ToStatus(firstErr)
	}
	slices.Sort(used)
	used = slices.Compact(used)
	return &ollamapoolv1.EmbedResponse{
		Embeddings: vectors,
		Route: &commonv1.RouteTaken{Path: commonv1.RoutePath_ROUTE_PATH_POOL, Backend: strings.Join(used, ","),
			Tried: used, Attempts: uint32(len(used))},
		Usage: &commonv1.Usage{PromptTokens: prompt},
	}, nil
}

// embedPart embeds one slice of the inputs on one node, trying others before giving up.
func (s *Service) embedPart(ctx context.Context, req *ollamapoolv1.EmbedRequest, inputs []string, priority int32) (*ollama.EmbedResponse, []string, error) {
	body := &ollama.EmbedRequest{Model: req.GetModel(), Input: inputs, Dimensions: req.Dimensions}
	if !req.GetTruncate() {
		// Ollama truncates by default; the API's default (false) means "fail on overlong
		// input" instead, so say it explicitly.
		body.Truncate = new(bool)
	}
	var tried []string
	for attempt := 1; ; attempt++ {
		node, err := s.pool.acquire(ctx, balance.Want{Model: req.GetModel(), Exclude: append(slices.Clone(req.GetExcludeNodes()), tried...), Prefer: req.GetPreferNode()}, priority)
		if err != nil {
			return nil, tried, err
		}
		tried = append(tried, node.ID)
		resp, err := s.client.Embed(ctx, s.pool.addrOf(node), body)
		var oerr *ollama.Error
		errors.As(err, &oerr)
		s.pool.release(node, outcome{err: oerr, neutral: oerr != nil && oerr.Class == ollama.ClassCanceled})
		if err == nil {
			return resp, []string{node.ID}, nil
		}
		if oerr == nil || !oerr.Retryable() || attempt >= s.cfg.MaxAttempts || ctx.Err() != nil {
			if oerr != nil {
				return nil, tried, s.failure(oerr, tried)
			}
			return nil, tried, err
		}
		s.counters.retries.Add(1)
	}
}

func validateInputs(inputs []string, dimensions *int32) error {
	switch {
	case len(inputs) == 0:
		return rpcerr.InvalidArgument("inputs", "must hold at least one text")
	case len(inputs) > maxEmbedInputs:
		return rpcerr.InvalidArgument("inputs", "holds %d texts; the limit is %d", len(inputs), maxEmbedInputs)
	case dimensions != nil && *dimensions <= 0:
		return rpcerr.InvalidArgument("dimensions", "must be positive, got %d", *dimensions)
	}
	for i, in := range inputs {
		if in == "" || !utf8.ValidString(in) {
			return rpcerr.InvalidArgument("inputs["+strconv.Itoa(i)+"]", "must be non-empty UTF-8 text")
		}
	}
	return nil
}
