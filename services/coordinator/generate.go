package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/coordinator/internal/manager"
	"github.com/sollol/mesh/services/coordinator/internal/relay"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// maxAttempts bounds tries of one request: a coordinator that died just before the request
// reached it is restarted, and the request tried again, as long as no token was sent.
const maxAttempts = 2

// sink is where a generation's events go: the caller's stream, or the owner replica's.
type sink struct {
	progress func(*commonv1.LoadProgress) error
	chunk    func(string) error
	done     func(*commonv1.Done) error
	// forward runs the whole request on the owner replica at addr; sent reports whether
	// anything reached the caller.
	forward func(addr string) (sent bool, err error)
}

// upstream streams one attempt from a leased coordinator.
type upstream func(ctx context.Context, l *manager.Lease, onText func(string) error) (*relay.Result, error)

// generate runs a request: acquire the coordinator (or forward to its owner), stream the text,
// and end with exactly one done event, or return the error.
func (s *Service) generate(ctx context.Context, want manager.Want, out sink, do upstream) error {
	start := time.Now()
	var tried []string
	var load time.Duration
	attempts := 0
	for hops := 0; ; {
		lease, owner, err := s.mgr.Acquire(ctx, want, out.progress)
		if err != nil {
			s.mgr.CountRequest(true)
			return err
		}
		if owner != "" {
			sent, err := out.forward(owner)
			if err == nil || sent || hops >= maxForwards {
				return err
			}
			switch {
			case ownerMoved(err):
			case ownerUnreachable(err):
				// The owner may have died: its record lives until its lease expires. Wait
				// for that, then take the model over (or follow a new owner).
				if werr := s.mgr.AwaitOwnerGone(ctx, want.Model, owner, out.progress); werr != nil {
					return werr
				}
			default:
				return err
			}
			hops++
			continue
		}
		if err := lease.WaitSlot(ctx, want.Priority); err != nil {
			lease.Release()
			s.mgr.CountRequest(true)
			return err
		}
		attempts++
		tried = append(tried, lease.Addr)
		if lease.Cold {
			load += lease.Waited
		}
		var firstToken time.Duration
		tokens := 0
		res, err := do(ctx, lease, func(text string) error {
			if tokens == 0 {
				firstToken = time.Since(start)
			}
			tokens++
			return out.chunk(text)
		})
		crash := ""
		if err != nil && ctx.Err() == nil {
			crash = lease.Crashed()
		}
		lease.Release()
		if err == nil {
			s.mgr.CountRequest(false)
			return out.done(doneOf(res, lease.Addr, tried, attempts, time.Since(start), load, firstToken))
		}
		var se *relay.StreamError
		if errors.As(err, &se) && tokens == 0 && attempts < maxAttempts && ctx.Err() == nil {
			s.Logger().Warn("coordinator failed before the first token; trying again", "model", want.Model,
				"coordinator", lease.Addr, "err", err)
			continue
		}
		s.mgr.CountRequest(true)
		return streamFailure(want.Model, lease.Addr, tokens, crash, err)
	}
}

// loadOnly makes the coordinator ready without generating: Generate with an empty prompt.
func (s *Service) loadOnly(ctx context.Context, want manager.Want, out sink) error {
	start := time.Now()
	lease, owner, err := s.mgr.Acquire(ctx, want, out.progress)
	if err != nil {
		return err
	}
	if owner != "" {
		_, err := out.forward(owner)
		return err
	}
	load := time.Duration(0)
	if lease.Cold {
		load = lease.Waited
	}
	lease.Release()
	done := doneOf(&relay.Result{FinishReason: "load"}, lease.Addr, []string{lease.Addr}, 1, time.Since(start), load, 0)
	return out.done(done)
}

func doneOf(res *relay.Result, addr string, tried []string, attempts int, total, load, firstToken time.Duration) *commonv1.Done {
	t := &commonv1.Timings{Total: durationpb.New(total), Load: durationpb.New(load),
		PromptEval: durationpb.New(res.PromptEval), Eval: durationpb.New(res.Eval)}
	if firstToken > 0 {
		t.TimeToFirstToken = durationpb.New(firstToken)
	}
	return &commonv1.Done{
		Usage:      &commonv1.Usage{PromptTokens: res.PromptTokens, CompletionTokens: res.CompletionTokens},
		Timings:    t,
		DoneReason: res.FinishReason,
		Route: &commonv1.RouteTaken{Path: commonv1.RoutePath_ROUTE_PATH_SHARD, Backend: addr, Tried: tried,
			Attempts: uint32(attempts)},
	}
}

// streamFailure is the public error of a failed relay.
func streamFailure(model, addr string, tokens int, crash string, err error) error {
	var ue *relay.UpstreamError
	if errors.As(err, &ue) {
		return ue.Public(model)
	}
	var se *relay.StreamError
	if !errors.As(err, &se) {
		return err
	}
	msg := fmt.Sprintf("the coordinator of model %s at %s broke off the stream after %d tokens", model, addr, tokens)
	if crash != "" {
		msg += "; llama-server " + crash
	}
	return &rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "COORDINATOR_STREAM_BROKEN", Message: msg, Err: se.Err,
		Metadata: map[string]string{"coordinator": addr, "tokens": strconv.Itoa(tokens), "exit_status": crash}}
}
