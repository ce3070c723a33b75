package balance

import (
	"slices"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/inference"
)

// latencyWeight is the EWMA weight of a new sample.
const latencyWeight = 0.2

// Node is one Ollama server as the pool sees it: discovery's record plus the pool's own
// figures about it.
type Node struct {
	ID      string
	Backend *commonv1.Backend

	InFlight int
	Breaker  Breaker
	// TTFT and Latency are EWMAs of time to first token and of whole requests.
	TTFT, Latency time.Duration
	Errors        map[string]uint64
	Requests      uint64
	Failures      uint64
	Tokens        uint64
}

// NewNode returns a node for a backend record.
func NewNode(b *commonv1.Backend) *Node {
	return &Node{ID: b.GetId(), Backend: b, Errors: map[string]uint64{}}
}

// Addr is where to send requests.
func (n *Node) Addr() string { return n.Backend.GetAddress() }

// Healthy says whether discovery considers the node usable.
func (n *Node) Healthy() bool {
	h := n.Backend.GetHealth()
	return h == commonv1.HealthState_HEALTH_STATE_HEALTHY || h == commonv1.HealthState_HEALTH_STATE_DEGRADED
}

// Has says whether the node has model installed.
func (n *Node) Has(model string) bool {
	return slices.ContainsFunc(n.Backend.GetInstalledModels(), func(m *commonv1.InstalledModel) bool {
		return inference.SameModel(m.GetName(), model)
	})
}

// Loaded says whether model is already in the node's memory, so no load delay.
func (n *Node) Loaded(model string) bool {
	return slices.ContainsFunc(n.Backend.GetLoadedModels(), func(m *commonv1.LoadedModel) bool {
		return inference.SameModel(m.GetName(), model)
	})
}

// Capacity is how many requests the node should run at once: what it reports, else def.
func (n *Node) Capacity(def int) int {
	if p := int(n.Backend.GetCapacity().GetParallel()); p > 0 {
		return p
	}
	return def
}

// ObserveTTFT folds a time-to-first-token sample into the average.
func (n *Node) ObserveTTFT(d time.Duration) { n.TTFT = ewma(n.TTFT, d) }

// ObserveLatency folds a whole-request duration into the average.
func (n *Node) ObserveLatency(d time.Duration) { n.Latency = ewma(n.Latency, d) }

func ewma(avg, sample time.Duration) time.Duration {
	if avg == 0 {
		return sample
	}
	return time.Duration(latencyWeight*float64(sample) + (1-latencyWeight)*float64(avg))
}
