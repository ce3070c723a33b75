package balance_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool/internal/balance"
)

var policy = balance.BreakerPolicy{FailureThreshold: 2, Cooldown: time.Second, MaxCooldown: 4 * time.Second, BusyCooldown: 250 * time.Millisecond}

const (
	closed   = ollamapoolv1.CircuitState_CIRCUIT_STATE_CLOSED
	open     = ollamapoolv1.CircuitState_CIRCUIT_STATE_OPEN
	halfOpen = ollamapoolv1.CircuitState_CIRCUIT_STATE_HALF_OPEN
)

func TestBreaker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		at     time.Duration // since t0
		event  string        // fault, busy, ok, neutral, start
		state  ollamapoolv1.CircuitState
		allow  bool
		isBusy bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"one fault below the threshold keeps it closed", []step{
			{0, "fault", closed, true, false},
		}},
		{"threshold faults open it for the cooldown, then one trial", []step{
			{0, "fault", closed, true, false},
			{0, "fault", open, false, false},
			{999 * time.Millisecond, "", open, false, false},
			{time.Second, "", halfOpen, true, false},
			{time.Second, "start", halfOpen, false, false}, // only one trial at a time
			{time.Second, "ok", closed, true, false},
		}},
		{"a failed trial doubles the cooldown up to the cap", []step{
			{0, "fault", closed, true, false},
			{0, "fault", open, false, false},
			{time.Second, "start", halfOpen, false, false},
			{time.Second, "fault", open, false, false},
			{3 * time.Second, "", halfOpen, true, false},
			{3 * time.Second, "start", halfOpen, false, false},
			{3 * time.Second, "fault", open, false, false},
			{7 * time.Second, "", halfOpen, true, false},
			{7 * time.Second, "start", halfOpen, false, false},
			{7 * time.Second, "fault", open, false, false},
			{11 * time.Second, "", halfOpen, true, false}, // capped at 4s
		}},
		{"busy opens at once, briefly, and is saturation not failure", []step{
			{0, "busy", open, false, true},
			{250 * time.Millisecond, "", halfOpen, true, false},
			{250 * time.Millisecond, "start", halfOpen, false, false},
			{250 * time.Millisecond, "busy", open, false, true},
			{749 * time.Millisecond, "", open, false, true}, // doubled to 500ms
			{750 * time.Millisecond, "start", halfOpen, false, false},
			{750 * time.Millisecond, "ok", closed, true, false},
		}},
		{"busy does not shorten an open-for-faults circuit", []step{
			{0, "fault", closed, true, false},
			{0, "fault", open, false, false},
			{0, "busy", open, false, false},
			{500 * time.Millisecond, "", open, false, false},
		}},
		{"a neutral outcome frees the trial without judging", []step{
			{0, "fault", closed, true, false},
			{0, "fault", open, false, false},
			{time.Second, "start", halfOpen, false, false},
			{time.Second, "neutral", halfOpen, true, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b balance.Breaker
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch s.event {
				case "fault":
					b.Fault(policy, now)
				case "busy":
					b.Saturated(policy, now)
				case "ok":
					b.Success()
				case "neutral":
					b.Neutral()
				case "start":
					b.Started(now)
				}
				require.Equal(t, s.state, b.State(now), "step %d state", i)
				require.Equal(t, s.allow, b.Allow(now), "step %d allow", i)
				require.Equal(t, s.isBusy, b.Busy(now), "step %d busy", i)
			}
		})
	}
}

func node(id string, opts ...func(*commonv1.Backend, *balance.Node)) *balance.Node {
	b := &commonv1.Backend{
		Id: id, Address: id + ":11434", Health: commonv1.HealthState_HEALTH_STATE_HEALTHY,
		InstalledModels: []*commonv1.InstalledModel{{Name: "tiny:latest"}},
		Latency:         durationpb.New(time.Millisecond),
	}
	n := balance.NewNode(b)
	for _, o := range opts {
		o(b, n)
	}
	return n
}

func loaded(b *commonv1.Backend, _ *balance.Node) {
	b.LoadedModels = []*commonv1.LoadedModel{{Name: "tiny:latest"}}
}
func inFlight(k int) func(*commonv1.Backend, *balance.Node) {
	return func(_ *commonv1.Backend, n *balance.Node) { n.InFlight = k }
}
func health(h commonv1.HealthState) func(*commonv1.Backend, *balance.Node) {
	return func(b *commonv1.Backend, _ *balance.Node) { b.Health = h }
}
func without(b *commonv1.Backend, _ *balance.Node) { b.InstalledModels = nil }
func ttft(d time.Duration) func(*commonv1.Backend, *balance.Node) {
	return func(_ *commonv1.Backend, n *balance.Node) { n.TTFT = d }
}

func TestPickVerdicts(t *testing.T) {
	now := time.Unix(1000, 0)
	busy := func(_ *commonv1.Backend, n *balance.Node) { n.Breaker.Saturated(policy, now) }
	broken := func(_ *commonv1.Backend, n *balance.Node) { n.Breaker.Fault(policy, now); n.Breaker.Fault(policy, now) }
	tests := []struct {
		name  string
		nodes []*balance.Node
		want  balance.Want
		id    string
		v     balance.Verdict
	}{
		{"no node has the model", []*balance.Node{node("a", without)}, balance.Want{Model: "tiny"}, "", balance.NoModel},
		{"tag-less names mean latest", []*balance.Node{node("a")}, balance.Want{Model: "TINY"}, "a", balance.Picked},
		{"down nodes are unavailable", []*balance.Node{node("a", health(commonv1.HealthState_HEALTH_STATE_DOWN))}, balance.Want{Model: "tiny"}, "", balance.Unavailable},
		{"open circuits are unavailable", []*balance.Node{node("a", broken)}, balance.Want{Model: "tiny"}, "", balance.Unavailable},
		{"busy nodes are saturated, so wait", []*balance.Node{node("a", busy), node("b", broken)}, balance.Want{Model: "tiny"}, "", balance.Saturated},
		{"full nodes are saturated", []*balance.Node{node("a", inFlight(4))}, balance.Want{Model: "tiny"}, "", balance.Saturated},
		{"excluded nodes are skipped", []*balance.Node{node("a"), node("b")}, balance.Want{Model: "tiny", Exclude: []string{"a"}}, "b", balance.Picked},
		{"the preferred node wins when eligible", []*balance.Node{node("a", loaded), node("b")}, balance.Want{Model: "tiny", Prefer: "b"}, "b", balance.Picked},
		{"a preferred node that is full is not forced", []*balance.Node{node("a"), node("b", inFlight(4))}, balance.Want{Model: "tiny", Prefer: "b"}, "a", balance.Picked},
		{"loaded beats idle", []*balance.Node{node("a"), node("b", loaded, inFlight(2))}, balance.Want{Model: "tiny"}, "b", balance.Picked},
		{"degraded is a last resort", []*balance.Node{node("a", health(commonv1.HealthState_HEALTH_STATE_DEGRADED)), node("b", inFlight(1))}, balance.Want{Model: "tiny"}, "b", balance.Picked},
		{"slow nodes lose", []*balance.Node{node("a", ttft(100*time.Millisecond)), node("b", ttft(10*time.Millisecond))}, balance.Want{Model: "tiny"}, "b", balance.Picked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range uint64(20) { // every random draw must agree
				s := balance.NewSelector(balance.Scored, 4, seed)
				got, v, _ := s.Pick(tt.nodes, tt.want, now)
				require.Equal(t, tt.v, v)
				if tt.id == "" {
					require.Nil(t, got)
				} else {
					require.Equal(t, tt.id, got.ID, "seed %d", seed)
				}
			}
		})
	}
}

func TestPowerOfTwoSpreadsOverEqualNodes(t *testing.T) {
	nodes := []*balance.Node{node("a"), node("b"), node("c")}
	s := balance.NewSelector(balance.Scored, 100, 1)
	counts := map[string]int{}
	for range 300 {
		n, _, _ := s.Pick(nodes, balance.Want{Model: "tiny"}, time.Now())
		counts[n.ID]++
	}
	for _, id := range []string{"a", "b", "c"} {
		require.Greater(t, counts[id], 50, "equal nodes must share the load: %v", counts)
	}
}

func TestOtherStrategies(t *testing.T) {
	now := time.Now()
	nodes := []*balance.Node{node("a", inFlight(3), ttft(time.Millisecond)), node("b", inFlight(1), ttft(50*time.Millisecond)), node("c", inFlight(2), ttft(20*time.Millisecond))}
	pick := func(st balance.Strategy) string {
		n, _, _ := balance.NewSelector(st, 8, 1).Pick(nodes, balance.Want{Model: "tiny"}, now)
		return n.ID
	}
	require.Equal(t, "b", pick(balance.LeastLoaded))
	require.Equal(t, "a", pick(balance.Latency))
	rr := balance.NewSelector(balance.RoundRobin, 8, 1)
	var seq []string
	for range 6 {
		n, _, _ := rr.Pick(nodes, balance.Want{Model: "tiny"}, now)
		seq = append(seq, n.ID)
	}
	require.Equal(t, []string{"b", "c", "a", "b", "c", "a"}, seq)
	_, err := balance.ParseStrategy("fastest")
	require.ErrorContains(t, err, "fastest")
}
