package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	"github.com/sollol/mesh/services/discovery/internal/health"
	"github.com/sollol/mesh/services/discovery/internal/sources"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// Bounds of a self-registration's TTL: shorter would flap on a slow network, longer keeps a
// dead node listed too long. The upper bound is configurable.
const (
	minRegistrationTTL     = 5 * time.Second
	defaultRegistrationTTL = 30 * time.Second
	watchBuffer            = 256
)

// ListBackends answers from the etcd snapshot, so it works while etcd is briefly unreachable.
func (s *Service) ListBackends(_ context.Context, req *discoveryv1.ListBackendsRequest) (*discoveryv1.ListBackendsResponse, error) {
	items := s.snapshot.Items()
	resp := &discoveryv1.ListBackendsResponse{Revision: s.snapshot.Revision()}
	for _, b := range items {
		if matches(b, req.GetKind(), req.GetHealthyOnly()) {
			resp.Backends = append(resp.Backends, b)
		}
	}
	slices.SortFunc(resp.Backends, func(a, b *commonv1.Backend) int { return strings.Compare(a.GetId(), b.GetId()) })
	return resp, nil
}

func matches(b *commonv1.Backend, kind commonv1.BackendKind, healthyOnly bool) bool {
	if kind != commonv1.BackendKind_BACKEND_KIND_UNSPECIFIED && b.GetKind() != kind {
		return false
	}
	if healthyOnly {
		h := b.GetHealth()
		return h == commonv1.HealthState_HEALTH_STATE_HEALTHY || h == commonv1.HealthState_HEALTH_STATE_DEGRADED
	}
	return true
}

// WatchBackends sends the current backends, then every change, until the client leaves. A
// client too slow to keep up is told to resubscribe rather than stalling discovery.
func (s *Service) WatchBackends(req *discoveryv1.WatchBackendsRequest, stream discoveryv1.DiscoveryService_WatchBackendsServer) error {
	items, rev, events, cancel := s.snapshot.Subscribe(watchBuffer)
	defer cancel()
	snap := &discoveryv1.Snapshot{Revision: rev}
	for _, b := range items {
		if matches(b, req.GetKind(), false) {
			snap.Backends = append(snap.Backends, b)
		}
	}
	slices.SortFunc(snap.Backends, func(a, b *commonv1.Backend) int { return strings.Compare(a.GetId(), b.GetId()) })
	if err := stream.Send(&discoveryv1.WatchBackendsResponse{Update: &discoveryv1.WatchBackendsResponse_Snapshot{Snapshot: snap}}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return rpcerr.ToStatus(stream.Context().Err())
		case <-s.Draining():
			return rpcerr.ToStatus(rpcerr.New(rpcerr.KindUnavailable, "SHUTTING_DOWN",
				"this discovery replica is shutting down; watch again to reach another"))
		case ev, ok := <-events:
			if !ok {
				return rpcerr.ToStatus(rpcerr.New(rpcerr.KindAborted, "WATCH_LAGGED",
					"the watcher fell more than %d changes behind; watch again for a fresh snapshot", watchBuffer))
			}
			if !matches(ev.Value, req.GetKind(), false) {
				continue
			}
			typ := discoveryv1.BackendEventType_BACKEND_EVENT_TYPE_PUT
			if ev.Type == registry.EventDelete {
				typ = discoveryv1.BackendEventType_BACKEND_EVENT_TYPE_DELETE
			}
			msg := &discoveryv1.WatchBackendsResponse{Update: &discoveryv1.WatchBackendsResponse_Event{Event: &discoveryv1.BackendEvent{
				Type: typ, Backend: ev.Value, Revision: ev.Revision,
			}}}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}

// ProbeBackend verifies an address on demand without storing anything.
func (s *Service) ProbeBackend(ctx context.Context, req *discoveryv1.ProbeBackendRequest) (*discoveryv1.ProbeBackendResponse, error) {
	kind, addr, err := validateTarget(req.GetKind(), req.GetAddress())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	r := s.prober.Probe(ctx, kind, addr)
	b := r.Backend
	if b == nil {
		b = &commonv1.Backend{}
	}
	b.Id, b.Kind, b.Address = s.local.backendID(kind, addr), kind, addr
	b.Health = outcomeHealth(r.Outcome)
	if r.RTT > 0 {
		b.Latency = durationpb.New(r.RTT)
	}
	resp := &discoveryv1.ProbeBackendResponse{Backend: b}
	if r.Err != nil {
		resp.Error = r.Err.Error()
		b.LastError = r.Err.Error()
	}
	return resp, nil
}

func outcomeHealth(o health.Outcome) commonv1.HealthState {
	switch o {
	case health.Success:
		return commonv1.HealthState_HEALTH_STATE_HEALTHY
	case health.Incompatible:
		return commonv1.HealthState_HEALTH_STATE_INCOMPATIBLE
	default:
		return commonv1.HealthState_HEALTH_STATE_DOWN
	}
}

func validateTarget(kind commonv1.BackendKind, address string) (commonv1.BackendKind, string, error) {
	if kind != commonv1.BackendKind_BACKEND_KIND_OLLAMA && kind != commonv1.BackendKind_BACKEND_KIND_RPC {
		return 0, "", rpcerr.InvalidArgument("kind", "must be BACKEND_KIND_OLLAMA or BACKEND_KIND_RPC, got %s", kind)
	}
	addr, err := sources.ParseAddress(kind, address)
	if err != nil {
		return 0, "", rpcerr.InvalidArgument("address", "%v", err)
	}
	return kind, addr, nil
}

// RegisterBackend lets a node agent announce its own backend. The backend is verified first
// (an unverified backend is never listed), then written under a lease of the registration's
// own: stop calling KeepAlive and etcd removes it when the TTL runs out.
func (s *Service) RegisterBackend(ctx context.Context, req *discoveryv1.RegisterBackendRequest) (*discoveryv1.RegisterBackendResponse, error) {
	kind, addr, err := validateTarget(req.GetKind(), req.GetAddress())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	ttl := defaultRegistrationTTL
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil || req.GetTtl().AsDuration() <= 0 {
			return nil, rpcerr.ToStatus(rpcerr.InvalidArgument("ttl", "must be a positive duration"))
		}
		ttl = min(max(req.GetTtl().AsDuration(), minRegistrationTTL), s.cfg.RegistrationMaxTTL)
	}
	for k := range req.GetLabels() {
		if k == "" || len(k) > 63 {
			return nil, rpcerr.ToStatus(rpcerr.InvalidArgument("labels", "keys must be 1-63 characters, got %q", k))
		}
	}
	r := s.prober.Probe(ctx, kind, addr)
	if r.Outcome != health.Success {
		return nil, rpcerr.ToStatus(&rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "BACKEND_NOT_VERIFIED",
			Message: fmt.Sprintf("%s at %s did not pass verification", kindWord(kind), addr), Err: r.Err})
	}
	lease, err := s.deps.Etcd.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return nil, rpcerr.ToStatus(&rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "ETCD_UNAVAILABLE", Message: "cannot store the registration", Err: err})
	}
	b := r.Backend
	b.Id, b.Kind, b.Address = s.local.backendID(kind, addr), kind, addr
	b.Health = commonv1.HealthState_HEALTH_STATE_HEALTHY
	b.Sources = []string{sources.SourceSelf}
	b.Labels = req.GetLabels()
	b.Latency = durationpb.New(r.RTT)
	if err := s.store.Put(ctx, b.GetId(), b, clientv3.WithLease(lease.ID)); err != nil {
		_, _ = s.deps.Etcd.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, rpcerr.ToStatus(&rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "ETCD_UNAVAILABLE", Message: "cannot store the registration", Err: err})
	}
	return &discoveryv1.RegisterBackendResponse{
		RegistrationId: strconv.FormatInt(int64(lease.ID), 16),
		Ttl:            durationpb.New(ttl),
		Backend:        b,
	}, nil
}

// KeepAlive renews a registration's lease once.
func (s *Service) KeepAlive(ctx context.Context, req *discoveryv1.KeepAliveRequest) (*discoveryv1.KeepAliveResponse, error) {
	lease, err := parseRegistrationID(req.GetRegistrationId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	resp, err := s.deps.Etcd.KeepAliveOnce(ctx, lease)
	if err != nil {
		return nil, rpcerr.ToStatus(leaseError(req.GetRegistrationId(), err))
	}
	return &discoveryv1.KeepAliveResponse{Ttl: durationpb.New(time.Duration(resp.TTL) * time.Second)}, nil
}

// DeregisterBackend ends a registration at once.
func (s *Service) DeregisterBackend(ctx context.Context, req *discoveryv1.DeregisterBackendRequest) (*discoveryv1.DeregisterBackendResponse, error) {
	lease, err := parseRegistrationID(req.GetRegistrationId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if _, err := s.deps.Etcd.Revoke(ctx, lease); err != nil {
		return nil, rpcerr.ToStatus(leaseError(req.GetRegistrationId(), err))
	}
	return &discoveryv1.DeregisterBackendResponse{}, nil
}

func parseRegistrationID(id string) (clientv3.LeaseID, error) {
	if id == "" {
		return 0, rpcerr.InvalidArgument("registration_id", "is required")
	}
	n, err := strconv.ParseInt(id, 16, 64)
	if err != nil || n <= 0 {
		return 0, rpcerr.InvalidArgument("registration_id", "%q is not an id this service issued", id)
	}
	return clientv3.LeaseID(n), nil
}

func leaseError(id string, err error) error {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return &rpcerr.Error{Kind: rpcerr.KindNotFound, Reason: "REGISTRATION_NOT_FOUND",
			Message: fmt.Sprintf("registration %s has expired or never existed; register again", id)}
	}
	return &rpcerr.Error{Kind: rpcerr.KindUnavailable, Reason: "ETCD_UNAVAILABLE", Message: "cannot reach the registration store", Err: err}
}
