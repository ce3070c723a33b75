package balance

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// Strategy names a way of choosing among eligible nodes.
type Strategy string

// Strategies, selectable for comparison; Scored is the default.
const (
	Scored      Strategy = "scored"
	RoundRobin  Strategy = "round-robin"
	LeastLoaded Strategy = "least-loaded"
	Latency     Strategy = "latency"
)

// ParseStrategy checks a strategy name.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case Scored, RoundRobin, LeastLoaded, Latency:
		return st, nil
	}
	return "", fmt.Errorf("unknown strategy %q (scored, round-robin, least-loaded, latency)", s)
}

// Verdict says why a pick did or did not find a node.
type Verdict int

// Verdicts.
const (
	// Picked: a node was chosen.
	Picked Verdict = iota
	// NoModel: no known node has the model installed.
	NoModel
	// Unavailable: nodes have the model but none is healthy with a closed circuit.
	Unavailable
	// Saturated: usable nodes have the model but all are full or answering busy; wait.
	Saturated
)

// Want is what a request needs from a node.
type Want struct {
	Model   string
	Exclude []string // node ids not to use (already tried, or excluded by the caller)
	Prefer  string   // node id to use if it is eligible
}

// Selector picks nodes. Its only state is the round-robin position and the random source.
type Selector struct {
	Strategy Strategy
	// MaxInFlight is a node's capacity when it reports none.
	MaxInFlight int
	rr          uint64
	rng         *rand.Rand
}

// NewSelector returns a selector; seed makes its random choices repeatable in tests.
func NewSelector(st Strategy, maxInFlight int, seed uint64) *Selector {
	return &Selector{Strategy: st, MaxInFlight: maxInFlight, rng: rand.New(rand.NewPCG(seed, seed^0x5f3759df))}
}

// Pick chooses a node for want among nodes, or says why none fits. reasons explains, per
// node, why it was passed over (for UNAVAILABLE errors and Route explanations).
func (s *Selector) Pick(nodes []*Node, want Want, now time.Time) (chosen *Node, v Verdict, reasons []string) {
	var eligible []*Node
	hasModel, saturated := false, false
	for _, n := range nodes {
		if !n.Has(want.Model) {
			continue
		}
		hasModel = true
		switch {
		case slices.Contains(want.Exclude, n.ID):
			reasons = append(reasons, n.ID+": excluded")
		case !n.Healthy():
			reasons = append(reasons, n.ID+": "+strings.ToLower(strings.TrimPrefix(n.Backend.GetHealth().String(), "HEALTH_STATE_")))
		case n.Breaker.Busy(now):
			saturated = true
			reasons = append(reasons, n.ID+": busy")
		case !n.Breaker.Allow(now):
			reasons = append(reasons, n.ID+": circuit open")
		case n.InFlight >= n.Capacity(s.MaxInFlight):
			saturated = true
			reasons = append(reasons, n.ID+": full")
		default:
			eligible = append(eligible, n)
		}
	}
	switch {
	case !hasModel:
		return nil, NoModel, nil
	case len(eligible) == 0 && saturated:
		return nil, Saturated, reasons
	case len(eligible) == 0:
		return nil, Unavailable, reasons
	}
	if want.Prefer != "" {
		if i := slices.IndexFunc(eligible, func(n *Node) bool { return n.ID == want.Prefer }); i >= 0 {
			return eligible[i], Picked, reasons
		}
	}
	// A stable order makes round-robin and ties deterministic.
	slices.SortFunc(eligible, func(a, b *Node) int { return strings.Compare(a.ID, b.ID) })
	return s.choose(eligible, want.Model), Picked, reasons
}

func (s *Selector) choose(eligible []*Node, model string) *Node {
	switch s.Strategy {
	case RoundRobin:
		s.rr++
		return eligible[int(s.rr%uint64(len(eligible)))]
	case LeastLoaded:
		return slices.MinFunc(eligible, func(a, b *Node) int { return compareFloat(s.load(a), s.load(b)) })
	case Latency:
		return slices.MinFunc(eligible, func(a, b *Node) int { return compareDuration(speed(a), speed(b)) })
	default:
		return s.powerOfTwo(eligible, model)
	}
}

// tierWidth is how far below the best score a node may be and still be among "the best".
const tierWidth = 15

// powerOfTwo scores every eligible node, keeps the best tier, and picks the better of two
// drawn at random from it. The randomness is what keeps several pool replicas, each with its
// own partial view, from all sending their next request to the same node.
func (s *Selector) powerOfTwo(eligible []*Node, model string) *Node {
	fastest := slices.MinFunc(eligible, func(a, b *Node) int { return compareDuration(speed(a), speed(b)) })
	scores := make(map[*Node]float64, len(eligible))
	best := -1e9
	for _, n := range eligible {
		scores[n] = s.Score(n, model, speed(fastest))
		best = max(best, scores[n])
	}
	var tier []*Node
	for _, n := range eligible {
		if scores[n] >= best-tierWidth {
			tier = append(tier, n)
		}
	}
	if len(tier) == 1 {
		return tier[0]
	}
	i := s.rng.IntN(len(tier))
	j := s.rng.IntN(len(tier) - 1)
	if j >= i {
		j++
	}
	a, b := tier[i], tier[j]
	if scores[b] > scores[a] || (scores[b] == scores[a] && b.InFlight < a.InFlight) {
		return b
	}
	return a
}

// Score ranks a node for model: a node that already has the model loaded wins by far (no
// load delay), then free memory and spare capacity, then speed; degraded health counts
// against it. fastest is the best speed among the candidates, to compare against.
func (s *Selector) Score(n *Node, model string, fastest time.Duration) float64 {
	score := 0.0
	if n.Loaded(model) {
		score += 50
	}
	if c := n.Backend.GetCapacity(); c.GetTotalBytes() > 0 {
		score += 10 * float64(c.GetFreeBytes()) / float64(c.GetTotalBytes())
	}
	score -= 40 * s.load(n)
	if sp := speed(n); sp > 0 && fastest > 0 {
		score -= 10 * min(float64(sp)/float64(fastest)-1, 5)
	}
	if n.Backend.GetHealth() == commonv1.HealthState_HEALTH_STATE_DEGRADED {
		score -= 20
	}
	return score
}

// load is the share of the node's capacity in use.
func (s *Selector) load(n *Node) float64 {
	return float64(n.InFlight) / float64(n.Capacity(s.MaxInFlight))
}

// speed is the node's typical time to first token, or its probe latency before the pool has
// measured any.
func speed(n *Node) time.Duration {
	if n.TTFT > 0 {
		return n.TTFT
	}
	return n.Backend.GetLatency().AsDuration()
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareDuration(a, b time.Duration) int { return compareFloat(float64(a), float64(b)) }
