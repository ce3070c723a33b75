// Package decide is the router's routing decision as a pure function: given the mode, the
// model's estimated size and the live view of backends and service replicas, which path
// serves a request, which one is the fallback, and why — or what to configure when nothing
// can. Every rule here is the seed's, and every one is table-tested.
package decide

import (
	"fmt"
	"slices"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/inference"
)

// Switch is a mode switch: on, off, or auto (on exactly when its backends are present).
type Switch string

// Switch values.
const (
	On   Switch = "on"
	Off  Switch = "off"
	Auto Switch = "auto"
)

// ParseSwitch checks a switch value; field names the flag in errors.
func ParseSwitch(field, s string) (Switch, error) {
	switch sw := Switch(strings.ToLower(s)); sw {
	case On, Off, Auto:
		return sw, nil
	}
	return "", fmt.Errorf("%s: %q is not on, off or auto", field, s)
}

// Mode is the router's configuration of the two paths, as SynapticLlamas sets it:
// task distribution (the Ollama pool) and model sharding (llama.cpp RPC).
type Mode struct {
	TaskDistribution Switch
	ModelSharding    Switch
	// Fallback allows moving to the other path when the chosen one fails before the first
	// token.
	Fallback bool
}

// View is the live state the decision reads: discovery's backends and the registered
// service replicas.
type View struct {
	Backends             []*commonv1.Backend
	PoolInstances        int
	CoordinatorInstances int
	// Models is the model catalogue: GGUF sizes by normalized name (inference.NormalizeModel).
	Models map[string]GGUF
}

// Request is what is being decided.
type Request struct {
	Model       string
	ContextSize int32
	Hint        commonv1.RouteHint
	// Size is the model's estimated need; the caller estimates it (see Estimate).
	Size Size
}

func healthy(b *commonv1.Backend) bool {
	return b.GetHealth() == commonv1.HealthState_HEALTH_STATE_HEALTHY || b.GetHealth() == commonv1.HealthState_HEALTH_STATE_DEGRADED
}

func ofKind(v View, kind commonv1.BackendKind) []*commonv1.Backend {
	var out []*commonv1.Backend
	for _, b := range v.Backends {
		if b.GetKind() == kind {
			out = append(out, b)
		}
	}
	return out
}

// Effective resolves auto switches against the view: task distribution is on when Ollama
// nodes are known, model sharding when rpc-servers are.
func (m Mode) Effective(v View) (taskDistribution, modelSharding bool) {
	resolve := func(s Switch, present bool) bool { return s == On || (s == Auto && present) }
	return resolve(m.TaskDistribution, len(ofKind(v, commonv1.BackendKind_BACKEND_KIND_OLLAMA)) > 0),
		resolve(m.ModelSharding, len(ofKind(v, commonv1.BackendKind_BACKEND_KIND_RPC)) > 0)
}

// Decide chooses the path for r.
func Decide(mode Mode, v View, r Request) *routerv1.Decision {
	td, ms := mode.Effective(v)
	d := &routerv1.Decision{
		ModelSize: r.Size.Proto(),
		Mode:      &routerv1.Mode{TaskDistribution: td, ModelSharding: ms},
	}
	pool := poolCandidate(td, v, r)
	shard := shardCandidate(ms, v, r)
	d.Candidates = []*routerv1.Candidate{pool, shard}

	switch r.Hint {
	case commonv1.RouteHint_ROUTE_HINT_POOL:
		return pick(d, pool, nil, "the request asked for the pool")
	case commonv1.RouteHint_ROUTE_HINT_SHARD:
		return pick(d, shard, nil, "the request asked for sharding")
	}
	// AUTO: a model that fits one node runs there (no network between layers, no load
	// over RPC); sharding is for what fits no node.
	if pool.GetAvailable() || !shard.GetAvailable() {
		var fallback *routerv1.Candidate
		if mode.Fallback {
			fallback = shard
		}
		return pick(d, pool, fallback, "")
	}
	d = pick(d, shard, nil, "")
	// Sharding leads; if it fails before the first token, a node that has the model installed
	// may still run it (Ollama spills to CPU memory), slower but better than an error.
	if mode.Fallback && td && v.PoolInstances > 0 && installedSomewhere(v, r.Model) {
		d.Fallback = commonv1.RoutePath_ROUTE_PATH_POOL
	}
	return d
}

// installedSomewhere says whether a healthy Ollama node has the model, whatever its memory.
func installedSomewhere(v View, model string) bool {
	for _, b := range ofKind(v, commonv1.BackendKind_BACKEND_KIND_OLLAMA) {
		if healthy(b) && hasModel(b, model) {
			return true
		}
	}
	return false
}

func pick(d *routerv1.Decision, chosen, fallback *routerv1.Candidate, why string) *routerv1.Decision {
	if !chosen.GetAvailable() {
		d.Reason = why
		d.Error = whatToConfigure(d, chosen)
		return d
	}
	d.Path = chosen.GetPath()
	d.Reason = chosen.GetReason()
	if why != "" {
		d.Reason = why + ": " + d.Reason
	}
	if fallback != nil && fallback.GetAvailable() {
		d.Fallback = fallback.GetPath()
	}
	return d
}

// whatToConfigure is the explicit error the seed demands instead of a hang: what is missing
// and what to do about it, for each path that is switched on.
func whatToConfigure(d *routerv1.Decision, chosen *routerv1.Candidate) string {
	var parts []string
	for _, c := range d.GetCandidates() {
		parts = append(parts, pathName(c.GetPath())+": "+c.GetReason())
	}
	msg := "nothing can serve this request (" + strings.Join(parts, "; ") + ")."
	td, ms := d.GetMode().GetTaskDistribution(), d.GetMode().GetModelSharding()
	switch {
	case !td && !ms:
		return msg + " Add Ollama nodes (--discovery.ollama-nodes) or rpc-servers (--discovery.rpc-backends), or turn a path on (--router.task-distribution, --router.model-sharding)"
	case d.GetReason() != "":
		// An explicit hint was refused.
		return msg + " Send the request with hint AUTO, or make the " + pathName(chosen.GetPath()) + " path available"
	}
	var todo []string
	if td {
		todo = append(todo, "for the pool, install the model on an Ollama node or add nodes (--discovery.ollama-nodes)")
	}
	if ms {
		todo = append(todo, "for sharding, add rpc-servers (--discovery.rpc-backends) with enough free memory and run a coordinator-manager")
	}
	return msg + " To serve it: " + strings.Join(todo, "; ")
}

func pathName(p commonv1.RoutePath) string {
	if p == commonv1.RoutePath_ROUTE_PATH_SHARD {
		return "shard"
	}
	return "pool"
}

func poolCandidate(on bool, v View, r Request) *routerv1.Candidate {
	c := &routerv1.Candidate{Path: commonv1.RoutePath_ROUTE_PATH_POOL}
	switch {
	case !on:
		c.Reason = "task distribution is off"
		return c
	case v.PoolInstances == 0:
		c.Reason = "no ollama-pool service is running"
		return c
	}
	nodes := ofKind(v, commonv1.BackendKind_BACKEND_KIND_OLLAMA)
	var withModel, fitting []*commonv1.Backend
	for _, b := range nodes {
		if !healthy(b) || !hasModel(b, r.Model) {
			continue
		}
		withModel = append(withModel, b)
		// Ollama reports no free memory; a node that does (a node agent's registration) is
		// checked against the need, one that does not is trusted with what it installed.
		if total := b.GetCapacity().GetTotalBytes(); total == 0 || r.Size.Bytes == 0 || b.GetCapacity().GetFreeBytes()+loadedBytes(b, r.Model) >= r.Size.Bytes {
			fitting = append(fitting, b)
			c.FreeBytes = max(c.FreeBytes, b.GetCapacity().GetFreeBytes())
		}
	}
	switch {
	case len(nodes) == 0:
		c.Reason = "no Ollama node is known"
	case len(withModel) == 0:
		c.Reason = fmt.Sprintf("no healthy Ollama node has %s", r.Model)
	case len(fitting) == 0:
		c.Reason = fmt.Sprintf("%d nodes have %s but none has the %s it needs free", len(withModel), r.Model, gib(r.Size.Bytes))
	default:
		c.Available = true
		for _, b := range fitting {
			c.Backends = append(c.Backends, b.GetId())
		}
		c.Reason = fmt.Sprintf("%s fits on %d Ollama node(s)", r.Model, len(fitting))
	}
	return c
}

func shardCandidate(on bool, v View, r Request) *routerv1.Candidate {
	c := &routerv1.Candidate{Path: commonv1.RoutePath_ROUTE_PATH_SHARD}
	if !on {
		c.Reason = "model sharding is off"
		return c
	}
	for _, b := range ofKind(v, commonv1.BackendKind_BACKEND_KIND_RPC) {
		if healthy(b) {
			c.Backends = append(c.Backends, b.GetId())
			c.FreeBytes += b.GetCapacity().GetFreeBytes()
		}
	}
	switch {
	case len(c.Backends) == 0:
		c.Reason = "no healthy rpc-server is known"
	case v.CoordinatorInstances == 0:
		c.Reason = "no coordinator-manager service is running"
	case r.Size.Bytes > 0 && c.FreeBytes < r.Size.Bytes:
		c.Reason = fmt.Sprintf("%d rpc-servers have %s free together; %s needs %s", len(c.Backends), gib(c.FreeBytes), r.Model, gib(r.Size.Bytes))
	default:
		c.Available = true
		c.Reason = fmt.Sprintf("%d rpc-servers with %s free together", len(c.Backends), gib(c.FreeBytes))
	}
	return c
}

func hasModel(b *commonv1.Backend, model string) bool {
	return slices.ContainsFunc(b.GetInstalledModels(), func(m *commonv1.InstalledModel) bool { return inference.SameModel(m.GetName(), model) })
}

func loadedBytes(b *commonv1.Backend, model string) uint64 {
	for _, m := range b.GetLoadedModels() {
		if inference.SameModel(m.GetName(), model) {
			return m.GetSizeBytes()
		}
	}
	return 0
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

// Estimate picks the best size source for model: its GGUF metadata from the model
// catalogue, else its Ollama listing on any node, else — reported as a guess — its name.
func Estimate(v View, model string, contextSize int32) Size {
	if g, ok := v.Models[inference.NormalizeModel(model)]; ok {
		return FromGGUF(g, contextSize)
	}
	for _, b := range v.Backends {
		for _, m := range b.GetInstalledModels() {
			if inference.SameModel(m.GetName(), model) && m.GetSizeBytes() > 0 {
				return FromOllama(m, contextSize)
			}
		}
	}
	return FromName(model, contextSize)
}
