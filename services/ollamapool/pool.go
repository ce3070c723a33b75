package ollamapool

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/ollamapool/internal/balance"
	"github.com/sollol/mesh/services/ollamapool/internal/ollama"
	"github.com/sollol/mesh/services/shared/prioq"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// pool is the shared state of node choice: the nodes discovery reports, the pool's own
// figures about them, and the requests waiting for room. One mutex guards it all; nothing
// slow happens under it.
type pool struct {
	mu       sync.Mutex
	nodes    map[string]*balance.Node
	selector *balance.Selector
	breaker  balance.BreakerPolicy
	queue    prioq.Queue[*waiter]
	maxQueue int
	counters *counters
}

func newPool(sel *balance.Selector, bp balance.BreakerPolicy, maxQueue int, c *counters) *pool {
	return &pool{nodes: map[string]*balance.Node{}, selector: sel, breaker: bp, maxQueue: maxQueue, counters: c}
}

// update replaces the node list with discovery's latest records of Ollama backends, keeping
// the pool's own figures for nodes it already knew, and serves waiters that now fit.
func (p *pool) update(backends map[string]*commonv1.Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, b := range backends {
		if b.GetKind() != commonv1.BackendKind_BACKEND_KIND_OLLAMA {
			continue
		}
		if n, ok := p.nodes[id]; ok {
			n.Backend = b
		} else {
			p.nodes[id] = balance.NewNode(b)
		}
	}
	for id := range p.nodes {
		if b, ok := backends[id]; !ok || b.GetKind() != commonv1.BackendKind_BACKEND_KIND_OLLAMA {
			delete(p.nodes, id) // an in-flight request keeps its *Node; release still works
		}
	}
	p.serveWaitersLocked()
}

// acquire picks a node for want and counts the request in flight on it. When every usable
// node is full or busy it waits, in priority order, until one frees up or ctx ends.
func (p *pool) acquire(ctx context.Context, want balance.Want, priority int32) (*balance.Node, error) {
	p.mu.Lock()
	node, err, wait := p.tryLocked(want)
	if !wait {
		p.mu.Unlock()
		return node, err
	}
	if p.queue.Len() >= p.maxQueue {
		p.mu.Unlock()
		p.counters.queueRejections.Add(1)
		return nil, rpcerr.New(rpcerr.KindResourceExhausted, "POOL_SATURATED",
			"every Ollama node with %q is busy and %d requests are already waiting; retry later", want.Model, p.maxQueue)
	}
	w := &waiter{want: want, result: make(chan acquired, 1)}
	queued := p.queue.Push(priority, w)
	p.mu.Unlock()

	select {
	case got := <-w.result:
		return got.node, got.err
	case <-ctx.Done():
		p.mu.Lock()
		removed := p.queue.Remove(queued)
		p.mu.Unlock()
		if !removed {
			// Served in the same instant: hand the node back.
			if got := <-w.result; got.node != nil {
				p.release(got.node, outcome{neutral: true})
			}
		}
		return nil, ctx.Err()
	}
}

// tryLocked picks a node now; wait says the pool is saturated and the caller should queue.
func (p *pool) tryLocked(want balance.Want) (node *balance.Node, err error, wait bool) {
	nodes := slices.Collect(maps.Values(p.nodes))
	now := time.Now()
	n, verdict, reasons := p.selector.Pick(nodes, want, now)
	switch verdict {
	case balance.Picked:
		n.InFlight++
		n.Breaker.Started(now)
		return n, nil, false
	case balance.Saturated:
		return nil, nil, true
	case balance.NoModel:
		if len(nodes) == 0 {
			return nil, rpcerr.New(rpcerr.KindUnavailable, "NO_OLLAMA_NODES",
				"no Ollama node is known: configure discovery (--discovery.ollama-nodes, --discovery.dns-names or --discovery.scan-cidrs) or register one"), false
		}
		return nil, &rpcerr.Error{Kind: rpcerr.KindNotFound, Reason: "MODEL_NOT_FOUND",
			Message:  fmt.Sprintf("model %q is on no Ollama node; models available: %s", want.Model, strings.Join(p.modelsLocked(), ", ")),
			Metadata: map[string]string{"model": want.Model}}, false
	default:
		return nil, &rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "NO_USABLE_NODE",
			Message: fmt.Sprintf("no usable Ollama node has %q (%s)", want.Model, strings.Join(reasons, "; "))}, false
	}
}

func (p *pool) modelsLocked() []string {
	set := map[string]bool{}
	for _, n := range p.nodes {
		for _, m := range n.Backend.GetInstalledModels() {
			set[m.GetName()] = true
		}
	}
	if len(set) == 0 {
		return []string{"(none)"}
	}
	return slices.Sorted(maps.Keys(set))
}

// outcome is how one request to one node ended.
type outcome struct {
	err      *ollama.Error // nil on success
	neutral  bool          // ended without saying anything about the node
	ttft     time.Duration
	duration time.Duration
	tokens   int
}

// release ends a request on n: it updates the node's figures and circuit and lets a waiter
// have the freed slot.
func (p *pool) release(n *balance.Node, o outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n.InFlight--
	n.Requests++
	n.Tokens += uint64(o.tokens)
	now := time.Now()
	switch {
	case o.neutral:
		n.Breaker.Neutral()
	case o.err == nil:
		n.Breaker.Success()
		if o.ttft > 0 {
			n.ObserveTTFT(o.ttft)
		}
		n.ObserveLatency(o.duration)
	default:
		n.Errors[string(o.err.Class)]++
		n.Failures++
		switch {
		case o.err.Class == ollama.ClassBusy:
			n.Breaker.Saturated(p.breaker, now)
		case o.err.NodeFault():
			n.Breaker.Fault(p.breaker, now)
		default:
			n.Breaker.Neutral()
		}
	}
	p.serveWaitersLocked()
}

// serveWaitersLocked hands free slots to waiters, highest priority first. A waiter whose
// model cannot be served at all any more (its nodes vanished) gets that error instead of
// waiting for its deadline.
func (p *pool) serveWaitersLocked() {
	for _, it := range p.queue.Ordered() {
		w := it.Value
		node, err, wait := p.tryLocked(w.want)
		if wait {
			continue
		}
		p.queue.Remove(it)
		w.result <- acquired{node: node, err: err}
	}
}

// tick re-checks waiters; circuits that leave their cooldown free capacity without any
// request ending, so nothing else would wake the queue.
func (p *pool) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveWaitersLocked()
}

// queueDepth is how many requests wait.
func (p *pool) queueDepth() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queue.Len()
}

// snapshot copies the nodes for reporting.
func (p *pool) snapshot() []balance.Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]balance.Node, 0, len(p.nodes))
	for _, n := range p.nodes {
		c := *n
		c.Errors = maps.Clone(n.Errors)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b balance.Node) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// usable counts the nodes that could take a request for model now or soon (healthy, with
// the model, circuit not open for faults): how many parts an Embed call is split into.
func (p *pool) usable(model string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	count := 0
	for _, n := range p.nodes {
		if n.Has(model) && n.Healthy() && (n.Breaker.Allow(now) || n.Breaker.Busy(now)) {
			count++
		}
	}
	return count
}

// acquireNow picks a node without queueing: for work that must not wait behind requests.
func (p *pool) acquireNow(want balance.Want) (*balance.Node, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	node, err, wait := p.tryLocked(want)
	if wait {
		return nil, rpcerr.New(rpcerr.KindResourceExhausted, "POOL_SATURATED", "every Ollama node with %q is busy", want.Model)
	}
	return node, err
}

// addrOf reads a node's address under the lock: discovery's updates replace the node's
// backend record concurrently.
func (p *pool) addrOf(n *balance.Node) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return n.Addr()
}
