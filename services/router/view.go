package router

import (
	"context"
	"log/slog"
	"slices"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/router/internal/decide"
	"github.com/sollol/mesh/services/shared/registry"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// liveView mirrors what the router decides on: discovery's backends and the registered
// replicas of the pool and the coordinator-manager, all from etcd watches, plus the model
// catalogue, so a decision reads memory only and keeps working from the last state while
// etcd is unreachable.
type liveView struct {
	backends     *registry.Snapshot[*commonv1.Backend]
	pools        *registry.Snapshot[[]byte]
	coordinators *registry.Snapshot[[]byte]
	catalogue    *catalogue // GGUF sizes, fetched from the coordinator-manager
}

func newLiveView(cli *clientv3.Client, log *slog.Logger, cat *catalogue) *liveView {
	return &liveView{
		catalogue:    cat,
		backends:     registry.NewSnapshot(registry.NewStore(cli, registry.BackendsPrefix, registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} })), log),
		pools:        registry.NewSnapshot(registry.NewStore(cli, registry.ServiceTarget("ollamapool")+"/", registry.Raw()), log),
		coordinators: registry.NewSnapshot(registry.NewStore(cli, registry.ServiceTarget("coordinator")+"/", registry.Raw()), log),
	}
}

func (v *liveView) start(ctx context.Context) error {
	for _, s := range []interface{ Start(context.Context) error }{v.backends, v.pools, v.coordinators} {
		if err := s.Start(ctx); err != nil {
			v.stop()
			return err
		}
	}
	return nil
}

func (v *liveView) stop() {
	v.backends.Stop()
	v.pools.Stop()
	v.coordinators.Stop()
}

// current is the view as the decision engine takes it.
func (v *liveView) current() decide.View {
	items := v.backends.Items()
	backends := make([]*commonv1.Backend, 0, len(items))
	for _, b := range items {
		backends = append(backends, b)
	}
	slices.SortFunc(backends, func(a, b *commonv1.Backend) int {
		switch {
		case a.GetId() < b.GetId():
			return -1
		case a.GetId() > b.GetId():
			return 1
		}
		return 0
	})
	return decide.View{
		Backends:             backends,
		PoolInstances:        len(v.pools.Items()),
		CoordinatorInstances: len(v.coordinators.Items()),
		Models:               v.catalogue.sizes(),
	}
}

func (v *liveView) coordinatorInstances() int { return len(v.coordinators.Items()) }
