package discovery

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/discovery/internal/health"
	"github.com/sollol/mesh/services/discovery/internal/probe"
	"github.com/sollol/mesh/services/discovery/internal/sources"
	"github.com/sollol/mesh/services/shared/registry"
)

// heartbeat is how often an unchanged backend is rewritten anyway, so last_seen stays fresh
// without a write per probe.
const heartbeat = 30 * time.Second

// prober is what the tracker needs of probe.Prober (a fake in unit tests).
type prober interface {
	Probe(ctx context.Context, kind commonv1.BackendKind, addr string) probe.Result
}

// counters are the tracker's figures, readable from any goroutine.
type counters struct {
	probes atomic.Int64
	scans  atomic.Int64
	writes atomic.Int64
}

type probeDone struct {
	id     string
	result probe.Result
}

// tracker is the leader's work: gather candidates from every source, probe each on its own
// schedule, run the health state machine and write changes to etcd. It runs in one
// goroutine; probes and sources deliver to it over channels, so its state needs no lock.
type tracker struct {
	plan     *plan
	cfg      *Config
	prober   prober
	local    *localHost
	store    *registry.Store[*commonv1.Backend]
	snapshot *registry.Snapshot[*commonv1.Backend]
	resolver sources.Resolver
	dialer   sources.Dialer
	log      *slog.Logger
	counters *counters

	writer  *writer
	entries map[string]*entry
}

func (t *tracker) run(ctx context.Context) error {
	pub := registry.NewPublisher(t.store, t.cfg.LeaseTTL, t.log)
	if err := pub.Start(ctx); err != nil {
		return err
	}
	defer pub.Stop()
	t.writer = newWriter(pub, t.store, t.log, t.counters)
	t.entries = map[string]*entry{}
	now := time.Now()
	for _, c := range t.plan.static {
		t.addCandidate(c, now)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.writer.run(ctx)
	}()
	results := make(chan probeDone)
	found := make(chan foundBatch)
	t.startSources(ctx, &wg, found)
	sem := make(chan struct{}, max(t.cfg.ProbeConcurrency, 1))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case batch := <-found:
			t.mergeBatch(batch, time.Now())
		case done := <-results:
			t.applyProbe(done, time.Now())
		case <-tick.C:
			now := time.Now()
			t.syncSelfRegistered(now)
			t.forget(now)
			t.startDueProbes(ctx, &wg, sem, results, now)
		}
	}
}

// foundBatch is one complete answer of a periodic source (a DNS round, a scan): backends of
// that source missing from it are no longer reported by it.
type foundBatch struct {
	source     string
	candidates []sources.Candidate
}

func (t *tracker) startSources(ctx context.Context, wg *sync.WaitGroup, found chan<- foundBatch) {
	if len(t.plan.dnsNames) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(ctx, t.cfg.DNSInterval, func() {
				cands, errs := sources.ResolveAll(ctx, t.resolver, t.plan.dnsNames)
				for _, err := range errs {
					t.log.Warn("dns discovery", "err", err)
				}
				deliver(ctx, found, foundBatch{source: sources.SourceDNS, candidates: cands})
			})
		}()
	}
	if t.plan.scan != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(ctx, t.cfg.Scan.Interval, func() {
				t.counters.scans.Add(1)
				cands := sources.Scan(ctx, *t.plan.scan, t.dialer)
				t.log.Info("scan finished", "open", len(cands))
				deliver(ctx, found, foundBatch{source: sources.SourceScan, candidates: cands})
			})
		}()
	}
}

// every runs fn now and then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func deliver[T any](ctx context.Context, ch chan<- T, v T) {
	select {
	case ch <- v:
	case <-ctx.Done():
	}
}

func (t *tracker) addCandidate(c sources.Candidate, now time.Time) *entry {
	id := t.local.backendID(c.Kind, c.Address)
	e, ok := t.entries[id]
	if !ok {
		e = &entry{id: id, kind: c.Kind, addresses: map[string]string{}, sources: map[string]time.Time{}, nextProbe: now}
		t.entries[id] = e
	}
	e.addresses[c.Address] = c.Source
	e.sources[c.Source] = now
	return e
}

func (t *tracker) mergeBatch(b foundBatch, now time.Time) {
	seen := map[string]bool{}
	for _, c := range b.candidates {
		seen[t.addCandidate(c, now).id] = true
	}
	for id, e := range t.entries {
		if _, had := e.sources[b.source]; had && !seen[id] {
			removeSource(e, b.source)
		}
	}
}

// syncSelfRegistered follows node agents' registrations, which the RegisterBackend handler
// wrote under their own leases: new ones are probed like any backend, expired ones are
// dropped (their key is already gone).
func (t *tracker) syncSelfRegistered(now time.Time) {
	items := t.snapshot.Items()
	for id, b := range items {
		if !slices.Contains(b.GetSources(), sources.SourceSelf) {
			continue
		}
		e := t.addCandidate(sources.Candidate{Kind: b.GetKind(), Address: b.GetAddress(), Source: sources.SourceSelf}, now)
		if e.id != id {
			continue
		}
		e.labels = b.GetLabels()
	}
	for id, e := range t.entries {
		if _, self := e.sources[sources.SourceSelf]; self {
			if b, ok := items[id]; !ok || !slices.Contains(b.GetSources(), sources.SourceSelf) {
				removeSource(e, sources.SourceSelf)
			}
		}
	}
}

// forget drops backends no source reports any more, and those found by DNS, a scan or the
// local defaults that have been down longer than ForgetAfter.
func (t *tracker) forget(now time.Time) {
	for id, e := range t.entries {
		gone := len(e.sources) == 0
		onlyGuessed := !e.hasSource(sources.SourceStatic) && !e.hasSource(sources.SourceSelf)
		longDown := !e.downSince.IsZero() && now.Sub(e.downSince) > t.cfg.ForgetAfter
		if gone || (onlyGuessed && longDown) {
			delete(t.entries, id)
			if e.published != nil && !e.hasSource(sources.SourceSelf) {
				t.writer.remove(id)
			}
			t.log.Info("backend forgotten", "id", id)
		}
	}
}

func (t *tracker) startDueProbes(ctx context.Context, wg *sync.WaitGroup, sem chan struct{}, results chan<- probeDone, now time.Time) {
	for _, e := range t.entries {
		if e.probing || now.Before(e.nextProbe) || len(e.addresses) == 0 {
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			return // all probe slots busy; the next tick tries again
		}
		e.probing = true
		id, kind, addr := e.id, e.kind, e.address()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t.counters.probes.Add(1)
			deliver(ctx, results, probeDone{id: id, result: t.prober.Probe(ctx, kind, addr)})
		}()
	}
}

func (t *tracker) applyProbe(done probeDone, now time.Time) {
	e, ok := t.entries[done.id]
	if !ok {
		return // forgotten while its probe ran
	}
	e.probing = false
	r := done.result
	wait := e.health.Observe(t.plan.policy, r.Outcome, r.RTT)
	e.nextProbe = now.Add(wait)
	switch e.health.State() {
	case commonv1.HealthState_HEALTH_STATE_HEALTHY, commonv1.HealthState_HEALTH_STATE_DEGRADED:
		e.downSince = time.Time{}
	default:
		if e.downSince.IsZero() {
			e.downSince = now
		}
	}
	if r.Outcome == health.Success {
		e.everUp = true
		e.lastUp = now
		e.lastErr = ""
	} else if r.Err != nil {
		if e.lastErr != r.Err.Error() {
			t.log.Info("backend probe failed", "id", e.id, "state", e.health.State().String(), "err", r.Err)
		}
		e.lastErr = r.Err.Error()
	}
	if !e.listed() {
		return
	}
	b := t.describe(e, r)
	if !needsWrite(e.published, b, now.Sub(e.publishedAt)) {
		return
	}
	// A self-registered backend is updated in place so the node agent's lease still decides
	// how long it lives; anything else goes under discovery's lease.
	inPlace := e.hasSource(sources.SourceSelf) && len(e.sources) == 1
	t.writer.put(e.id, b, inPlace)
	e.published, e.publishedAt = b, now
}

// describe builds the backend's record from the probe, keeping what the last good probe
// learnt (models, capacity) while the backend is unreachable.
func (t *tracker) describe(e *entry, r probe.Result) *commonv1.Backend {
	var b *commonv1.Backend
	switch {
	case r.Backend != nil:
		b = proto.Clone(r.Backend).(*commonv1.Backend)
	case e.published != nil:
		b = proto.Clone(e.published).(*commonv1.Backend)
	default:
		b = &commonv1.Backend{}
	}
	b.Id = e.id
	b.Kind = e.kind
	b.Address = e.address()
	b.Health = e.health.State()
	b.ConsecutiveFailures = uint32(e.health.ConsecutiveFailures())
	b.LastError = e.lastErr
	b.Labels = e.labels
	b.Sources = slices.Sorted(maps.Keys(e.sources))
	if lat := e.health.Latency(); lat > 0 {
		b.Latency = durationpb.New(lat)
	}
	if !e.lastUp.IsZero() {
		b.LastSeen = timestamppb.New(e.lastUp)
	}
	return b
}

// needsWrite limits etcd writes to real changes: anything but latency and last_seen, a
// latency move of more than a fifth, or the heartbeat.
func needsWrite(old, updated *commonv1.Backend, age time.Duration) bool {
	if old == nil || age >= heartbeat {
		return true
	}
	a, b := proto.Clone(old).(*commonv1.Backend), proto.Clone(updated).(*commonv1.Backend)
	a.Latency, b.Latency, a.LastSeen, b.LastSeen = nil, nil, nil, nil
	if !proto.Equal(a, b) {
		return true
	}
	oldLat, newLat := old.GetLatency().AsDuration(), updated.GetLatency().AsDuration()
	return oldLat > 0 && (newLat > oldLat*6/5 || newLat < oldLat*4/5)
}
