package manager

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// janitor stops idle coordinators, rebuilds those whose backend went down, and re-takes
// ownership after a lost etcd session.
func (m *Manager) janitor() {
	defer m.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.expireIdle()
		m.watchBackends()
		m.reclaim()
	}
}

func (m *Manager) expireIdle() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		if e.state != stateReady || e.inFlight > 0 || e.stopReq != nil {
			continue
		}
		ttl := m.cfg.IdleTTL
		if e.keepAlive != nil {
			if *e.keepAlive < 0 {
				continue
			}
			ttl = *e.keepAlive
		}
		if idle := time.Since(e.lastUsed); ttl > 0 && idle > ttl {
			m.requestStopLocked(e, true, true, fmt.Sprintf("idle for %s", idle.Round(time.Second)))
		}
	}
}

// watchBackends rebuilds a coordinator one of whose backends discovery reports down. A
// backend merely missing from etcd (discovery restarting) is not a reason.
func (m *Manager) watchBackends() {
	down := map[string]string{}
	for _, b := range m.backends.Items() {
		switch b.GetHealth() {
		case commonv1.HealthState_HEALTH_STATE_DOWN, commonv1.HealthState_HEALTH_STATE_INCOMPATIBLE:
			down[b.GetAddress()] = strings.ToLower(strings.TrimPrefix(b.GetHealth().String(), "HEALTH_STATE_"))
		}
	}
	if len(down) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		if e.place == nil || (e.state != stateReady && e.state != stateLoading) {
			continue
		}
		for _, b := range e.place.Backends {
			if h, ok := down[b]; ok {
				m.requestRebuildLocked(e, fmt.Sprintf("rpc backend %s is %s", b, h), false)
				break
			}
		}
	}
}

// List describes this replica's coordinators, by model name.
func (m *Manager) List() []*coordinatorv1.Coordinator {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*coordinatorv1.Coordinator
	for _, e := range m.entries {
		if e.state == stateNone {
			continue
		}
		out = append(out, m.coordinatorLocked(e))
	}
	slices.SortFunc(out, func(a, b *coordinatorv1.Coordinator) int { return strings.Compare(a.GetModel(), b.GetModel()) })
	return out
}

// Stats reports the replica's counters.
func (m *Manager) Stats() *coordinatorv1.GetStatsResponse {
	list := m.List()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &coordinatorv1.GetStatsResponse{
		StartsTotal:      m.stats.starts.Load(),
		RestartsTotal:    m.stats.restarts.Load(),
		EvictionsTotal:   m.stats.evictions.Load(),
		RequestsTotal:    m.stats.requests.Load(),
		FailuresTotal:    m.stats.failures.Load(),
		CacheBytes:       m.cacheBytesLocked(nil),
		CacheBudgetBytes: m.cfg.Budget,
		Coordinators:     list,
	}
	if m.stats.coldN > 0 {
		r.ColdStartLast = durationpb.New(m.stats.coldLast)
		r.ColdStartMean = durationpb.New(m.stats.coldSum / time.Duration(m.stats.coldN))
		r.ColdStartMax = durationpb.New(m.stats.coldMax)
	}
	return r
}

// CountRequest counts a served request and whether it failed.
func (m *Manager) CountRequest(failed bool) {
	m.stats.requests.Add(1)
	if failed {
		m.stats.failures.Add(1)
	}
}

// StopModel stops the model's coordinator on this replica and returns it in its final state.
// When another replica owns it, forward is that replica's address.
func (m *Manager) StopModel(ctx context.Context, model string, drain bool) (c *coordinatorv1.Coordinator, forward string, err error) {
	m.mu.Lock()
	e := m.entries[model]
	if e == nil || !e.running {
		m.mu.Unlock()
		if rec := m.remoteOwner(model); rec != nil {
			return nil, rec.GetOwnerAddress(), nil
		}
		return nil, "", rpcerr.New(rpcerr.KindNotFound, "COORDINATOR_NOT_FOUND",
			"no coordinator of model %s runs on this replica or any other", model)
	}
	m.requestStopLocked(e, drain, false, "StopCoordinator")
	for e.running {
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-ch:
		}
		m.mu.Lock()
	}
	c = m.coordinatorLocked(e)
	m.mu.Unlock()
	return c, "", nil
}

// Prewarm starts the models' coordinators in the background, as if each had been asked for.
func (m *Manager) Prewarm(models []string) {
	for _, model := range models {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			lease, fwd, err := m.Acquire(m.ctx, Want{Model: model}, nil)
			switch {
			case err != nil:
				if m.ctx.Err() == nil {
					m.log.Warn("pre-warm failed", "model", model, "err", err)
				}
			case fwd != "":
				m.log.Info("pre-warm: another replica owns the model", "model", model, "owner", fwd)
			default:
				lease.Release()
				m.log.Info("pre-warmed", "model", model)
			}
		}()
	}
}
