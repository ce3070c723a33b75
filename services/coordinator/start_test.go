package coordinator_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
)

const ready = coordinatorv1.CoordinatorState_COORDINATOR_STATE_READY

func TestColdStartStreamsProgressThenTokensAndWarmSkipsIt(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"},
		Double: llamaservertest.DoubleOptions{LoadTime: 500 * time.Millisecond}})
	r := w.start(w.config(nil))

	cold := r.chat(ctxTimeout(t, time.Minute), "tiny", "hello there", 8)
	requireComplete(t, cold, 8)
	require.Regexp(t, `^p+c+d$`, cold.order, "progress first, then tokens, then done")
	var stages []commonv1.LoadStage
	for _, p := range cold.progress {
		if len(stages) == 0 || stages[len(stages)-1] != p.GetStage() {
			stages = append(stages, p.GetStage())
		}
		require.Equal(t, "tiny", p.GetModel())
	}
	require.Contains(t, stages, commonv1.LoadStage_LOAD_STAGE_STARTING)
	require.Equal(t, commonv1.LoadStage_LOAD_STAGE_READY, stages[len(stages)-1], "the last progress says ready: %v", stages)
	if !w.real {
		require.Contains(t, stages, commonv1.LoadStage_LOAD_STAGE_LOADING, "load lines become LOADING: %v", stages)
		var fractions []float32
		for _, p := range cold.progress {
			if p.GetStage() == commonv1.LoadStage_LOAD_STAGE_LOADING && p.Fraction != nil {
				fractions = append(fractions, p.GetFraction())
				require.Positive(t, p.GetBytesTotal())
			}
		}
		require.NotEmpty(t, fractions, "the loader's progress dots become fractions")
		require.True(t, slices.IsSorted(fractions), "fractions only grow: %v", fractions)
		require.Positive(t, cold.done.GetTimings().GetLoad().AsDuration(), "the cold start's load time is reported")
	}

	c := r.coordinatorOf(t, "tiny")
	require.Equal(t, ready, c.GetState())
	require.Equal(t, c.GetAddress(), cold.done.GetRoute().GetBackend(), "the route names the coordinator")
	require.Equal(t, []string{w.rpcs[0].Addr()}, c.GetRpcBackends())
	require.Positive(t, c.GetMemoryBytes())
	require.Positive(t, c.GetPid())

	warm := r.chat(ctxTimeout(t, time.Minute), "tiny", "hello again", 5)
	requireComplete(t, warm, 5)
	require.Empty(t, warm.progress, "a warm request goes straight to tokens")
	require.Zero(t, warm.done.GetTimings().GetLoad().AsDuration())

	s := r.stats(t)
	require.EqualValues(t, 1, s.GetStartsTotal())
	require.EqualValues(t, 2, s.GetRequestsTotal())
	require.Zero(t, s.GetFailuresTotal())
	require.NotNil(t, s.GetColdStartLast())
}

func TestTenConcurrentFirstRequestsStartOneProcess(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"},
		Double: llamaservertest.DoubleOptions{LoadTime: 300 * time.Millisecond}})
	r := w.start(w.config(nil))

	results := make([]streamResult, 10)
	concurrently(10, func(i int) { results[i] = r.chat(ctxTimeout(t, time.Minute), "tiny", "same time", 4) })
	for _, res := range results {
		requireComplete(t, res, 4)
	}
	require.EqualValues(t, 1, r.stats(t).GetStartsTotal(), "one start for ten first requests")
	require.Len(t, w.llamaProcesses("tiny"), 1, "exactly one llama-server process")
	require.Equal(t, []int{int(r.coordinatorOf(t, "tiny").GetPid())}, w.llamaProcesses("tiny"))
}

func TestTwoReplicasShareOneCoordinator(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(2), Models: []string{"tiny"},
		Double: llamaservertest.DoubleOptions{LoadTime: 300 * time.Millisecond}})
	a := w.start(w.config(nil))
	b := w.start(w.config(nil))

	results := make([]streamResult, 10)
	concurrently(10, func(i int) {
		r := a
		if i%2 == 1 {
			r = b
		}
		results[i] = r.chat(ctxTimeout(t, time.Minute), "tiny", "two replicas", 4)
	})
	for _, res := range results {
		requireComplete(t, res, 4)
	}
	starts := a.stats(t).GetStartsTotal() + b.stats(t).GetStartsTotal()
	require.EqualValues(t, 1, starts, "one start across both replicas")
	require.Len(t, w.llamaProcesses("tiny"), 1, "one llama-server across both replicas")

	owner, other := a, b
	if a.coordinatorOf(t, "tiny") == nil {
		owner, other = b, a
	}
	c := owner.coordinatorOf(t, "tiny")
	require.Equal(t, ready, c.GetState())
	require.Equal(t, owner.svc.Instance(), c.GetOwner())
	require.Nil(t, other.coordinatorOf(t, "tiny"), "the other replica forwards instead of running its own")
	for _, res := range results {
		require.Equal(t, c.GetAddress(), res.done.GetRoute().GetBackend(), "every request ran on the one coordinator")
	}
	// The other replica's requests were served by the owner, which counted them.
	require.EqualValues(t, 10, owner.stats(t).GetRequestsTotal())

	// Stopping through the other replica reaches the owner.
	resp, err := other.client.StopCoordinator(ctxTimeout(t, time.Minute), &coordinatorv1.StopCoordinatorRequest{Model: "tiny"})
	require.NoError(t, err)
	require.Equal(t, coordinatorv1.CoordinatorState_COORDINATOR_STATE_STOPPED, resp.GetCoordinator().GetState())
	require.Empty(t, w.llamaProcesses("tiny"))
}

func TestPrewarmStartsModelsAtBoot(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(func(c *coordinator.Config) { c.Prewarm = []string{"tiny"} }))
	r.waitState(t, "tiny", ready)
	warm := r.chat(ctxTimeout(t, time.Minute), "tiny", "already warm", 3)
	requireComplete(t, warm, 3)
	require.Empty(t, warm.progress, "no cold start for the first request")
}

func TestEnsureCoordinatorAndGenerate(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(nil))

	stream, err := r.client.EnsureCoordinator(ctxTimeout(t, time.Minute), &coordinatorv1.EnsureCoordinatorRequest{Model: "tiny"})
	require.NoError(t, err)
	var last *coordinatorv1.EnsureCoordinatorResponse
	progress := 0
	for {
		msg, err := stream.Recv()
		if err != nil {
			break
		}
		if msg.GetProgress() != nil {
			require.Nil(t, last.GetReady(), "nothing after ready")
			progress++
		}
		last = msg
	}
	require.Positive(t, progress)
	require.Equal(t, ready, last.GetReady().GetState())
	require.Equal(t, w.rpcs[0].Addr(), last.GetReady().GetRpcBackends()[0])

	for _, raw := range []bool{true, false} {
		gs, err := r.client.Generate(ctxTimeout(t, time.Minute), &coordinatorv1.GenerateRequest{Model: "tiny",
			Prompt: "Once upon a time", System: "be brief", Raw: raw, Options: &commonv1.GenerationOptions{MaxTokens: ptr(int32(6))}})
		require.NoError(t, err)
		chunks, text := 0, ""
		var done *commonv1.Done
		for {
			msg, err := gs.Recv()
			if err != nil {
				require.ErrorContains(t, err, "EOF")
				break
			}
			if c := msg.GetChunk(); c != nil {
				chunks++
				text += c.GetContent()
			}
			if d := msg.GetDone(); d != nil {
				done = d
			}
		}
		require.NotNil(t, done, "raw=%v", raw)
		require.EqualValues(t, 6, done.GetUsage().GetCompletionTokens(), "raw=%v", raw)
		require.Equal(t, "length", done.GetDoneReason())
		require.NotEmpty(t, strings.TrimSpace(text))
	}

	// An empty prompt only loads the model.
	gs, err := r.client.Generate(ctxTimeout(t, time.Minute), &coordinatorv1.GenerateRequest{Model: "tiny"})
	require.NoError(t, err)
	msg, err := gs.Recv()
	require.NoError(t, err)
	require.Equal(t, "load", msg.GetDone().GetDoneReason())
}
