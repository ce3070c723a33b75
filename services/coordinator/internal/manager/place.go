package manager

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/coordinator/internal/placement"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// suspectFor is how long a backend a start could not reach is left out, unless discovery
// reports a successful probe of it before that.
const suspectFor = time.Minute

// place reserves backends and memory for the entry's next start. It evicts the least recently
// used coordinator (after it drained) when the budget or the free backends demand it, and
// fails with the figures when the model cannot fit at all.
func (m *Manager) place(e *entry) (*placement.Placement, error) {
	m.mu.Lock()
	e.state = stateStarting
	m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_PLACING, -1, "choosing rpc backends")
	req := placement.Request{Context: e.wantSlotCtx * e.parallel, Parallel: e.parallel}
	m.mu.Unlock()
	for {
		if m.stopWanted(e) {
			return nil, errStopRequested
		}
		pl, wait, err := m.tryPlace(e, req)
		if err != nil || pl != nil {
			return pl, err
		}
		select {
		case <-m.ctx.Done():
			return nil, errStopRequested
		case <-wait:
		case <-e.wake:
		case <-time.After(200 * time.Millisecond):
			// Backends change in etcd, which m.changed does not announce.
		}
	}
}

// tryPlace makes one attempt: a placement, or a channel to wait on before the next attempt,
// or a final error.
func (m *Manager) tryPlace(e *entry, req placement.Request) (*placement.Placement, <-chan struct{}, error) {
	m.placeMu.Lock()
	defer m.placeMu.Unlock()
	healthy, known := m.healthyBackends()
	if len(healthy) == 0 {
		return nil, nil, noBackends(known)
	}
	all, err := placement.Plan(e.info, req, healthy)
	if err != nil {
		return nil, nil, noFit(e.model, err)
	}
	budget := m.cfg.Budget
	if budget > 0 && all.Total > budget {
		return nil, nil, &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "MODEL_EXCEEDS_CACHE_BUDGET",
			Message: fmt.Sprintf("model %s needs about %s, more than the whole cache budget of %s (coordinator.cache-budget)",
				e.model, placement.Bytes(all.Total), placement.Bytes(budget)),
			Metadata: map[string]string{"needed_bytes": strconv.FormatUint(all.Total, 10), "budget_bytes": strconv.FormatUint(budget, 10)}}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	busy, holders := m.busyBackendsLocked(e)
	var free []placement.Backend
	for _, b := range healthy {
		if !busy[b.Address] {
			free = append(free, b)
		}
	}
	pl, fitErr := placement.Plan(e.info, req, free)
	used := m.cacheBytesLocked(e)
	overBudget := pl != nil && budget > 0 && used+pl.Total > budget
	if fitErr == nil && !overBudget {
		e.place = pl
		m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_PLACING, -1, fmt.Sprintf("placed about %s on %s",
			placement.Bytes(pl.Total), strings.Join(pl.Backends, ", ")))
		return pl, nil, nil
	}
	why := "to free rpc backends"
	if overBudget {
		why = fmt.Sprintf("to stay within the cache budget of %s", placement.Bytes(budget))
	}
	for _, o := range m.entries {
		if o != e && o.stopReq != nil && o.holdsResources() {
			// An eviction is already under way: its outcome decides, never evict two for one.
			m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_QUEUED, -1,
				fmt.Sprintf("waiting for the coordinator of %s to finish its requests and stop, %s", o.model, why))
			return nil, m.changed, nil
		}
	}
	if victim := m.lruVictimLocked(e); victim != nil {
		m.requestStopLocked(victim, true, true, "evicted (least recently used) for model "+e.model+" "+why)
		m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_QUEUED, -1,
			fmt.Sprintf("waiting for the coordinator of %s to finish its requests and stop, %s", victim.model, why))
		return nil, m.changed, nil
	}
	for _, o := range m.entries {
		if o != e && o.holdsResources() {
			// Another coordinator of this replica is starting or stopping: its outcome decides.
			m.setProgressLocked(e, commonv1.LoadStage_LOAD_STAGE_QUEUED, -1,
				fmt.Sprintf("waiting for the coordinator of %s %s", o.model, why))
			return nil, m.changed, nil
		}
	}
	return nil, nil, &rpcerr.Error{Kind: rpcerr.KindResourceExhausted, Reason: "RPC_BACKENDS_BUSY",
		Message: fmt.Sprintf("model %s needs about %s; the rpc backends that could hold it serve other coordinators (%s)",
			e.model, placement.Bytes(all.Total), strings.Join(holders, "; "))}
}

// healthyBackends returns the rpc backends discovery reports usable, minus those a start
// just failed to reach, and a note on each rpc backend it knows (for error messages).
func (m *Manager) healthyBackends() ([]placement.Backend, []string) {
	items := m.backends.Items()
	var known []string
	var out []placement.Backend
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range items {
		if b.GetKind() != commonv1.BackendKind_BACKEND_KIND_RPC {
			continue
		}
		h := b.GetHealth()
		note := b.GetAddress() + " " + strings.ToLower(strings.TrimPrefix(h.String(), "HEALTH_STATE_"))
		if h != commonv1.HealthState_HEALTH_STATE_HEALTHY && h != commonv1.HealthState_HEALTH_STATE_DEGRADED {
			known = append(known, note)
			continue
		}
		if at, ok := m.suspects[b.GetAddress()]; ok {
			seen := b.GetLastSeen().AsTime()
			if time.Since(at) < suspectFor && (b.GetLastSeen() == nil || !seen.After(at)) {
				known = append(known, note+" but unreachable from llama-server since "+at.Format(time.TimeOnly))
				continue
			}
			delete(m.suspects, b.GetAddress())
		}
		known = append(known, note)
		out = append(out, backendOf(b))
	}
	slices.SortFunc(out, func(a, b placement.Backend) int { return strings.Compare(a.Address, b.Address) })
	return out, known
}

// backendOf is a backend's free memory per device, as discovery last measured it.
func backendOf(b *commonv1.Backend) placement.Backend {
	pb := placement.Backend{Address: b.GetAddress()}
	for _, d := range b.GetCapacity().GetDevices() {
		pb.Free = append(pb.Free, d.GetFreeBytes())
	}
	if len(pb.Free) == 0 {
		pb.Free = []uint64{b.GetCapacity().GetFreeBytes()}
	}
	return pb
}

// suspect leaves out backends a start could not reach.
func (m *Manager) suspect(e *entry, addrs []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range addrs {
		m.suspects[a] = time.Now()
		m.log.Warn("rpc backend unreachable; left out of placement until discovery sees it again", "backend", a, "model", e.model)
	}
}

// busyBackendsLocked returns the backends other coordinators hold (an rpc-server serves one
// client at a time), with who holds them.
func (m *Manager) busyBackendsLocked(e *entry) (map[string]bool, []string) {
	busy := map[string]bool{}
	var holders []string
	for _, o := range m.entries {
		if o == e || o.place == nil {
			continue
		}
		for _, b := range o.place.Backends {
			busy[b] = true
		}
		holders = append(holders, fmt.Sprintf("%s on %s", o.model, strings.Join(o.place.Backends, ",")))
	}
	for _, rec := range m.records.Items() {
		if rec.GetOwner() == m.instance || rec.GetState() == stateStopped {
			continue
		}
		for _, b := range rec.GetRpcBackends() {
			busy[b] = true
		}
		holders = append(holders, fmt.Sprintf("%s on %s (replica %s)", rec.GetModel(), strings.Join(rec.GetRpcBackends(), ","), rec.GetOwnerAddress()))
	}
	slices.Sort(holders)
	return busy, holders
}

// cacheBytesLocked is the estimated memory of the coordinators holding resources, but e.
func (m *Manager) cacheBytesLocked(except *entry) uint64 {
	var n uint64
	for _, o := range m.entries {
		if o != except && o.place != nil {
			n += o.place.Total
		}
	}
	return n
}

// lruVictimLocked is the least recently used READY coordinator other than e.
func (m *Manager) lruVictimLocked(e *entry) *entry {
	var victim *entry
	for _, o := range m.entries {
		if o == e || !o.running || o.state != stateReady || o.stopReq != nil {
			continue
		}
		if victim == nil || o.lastUsed.Before(victim.lastUsed) {
			victim = o
		}
	}
	return victim
}

func noBackends(known []string) error {
	msg := "no healthy rpc-server is registered under " + registry.BackendsPrefix +
		"; configure discovery.rpc-backends (or a DNS name or scan) and start llama.cpp rpc-servers"
	if len(known) > 0 {
		slices.Sort(known)
		msg = "no usable rpc-server: discovery knows " + strings.Join(known, ", ")
	}
	return &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "NO_RPC_BACKENDS", Message: msg}
}

func noFit(model string, err error) error {
	var nf *placement.NoFitError
	if !errors.As(err, &nf) {
		return err
	}
	nf.Model = model
	return &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "MODEL_DOES_NOT_FIT", Message: nf.Error(),
		Metadata: map[string]string{"needed_bytes": strconv.FormatUint(nf.Needed, 10),
			"available_bytes": strconv.FormatUint(nf.Available, 10), "context_size": strconv.FormatUint(uint64(nf.Context), 10)}}
}
