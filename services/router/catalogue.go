package router

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/router/internal/decide"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/lifecycle"
)

// catalogueRetry is how soon the catalogue is fetched again after a failure, or looked for
// again while no coordinator-manager is registered.
const catalogueRetry = time.Second

// catalogue is the coordinator-manager's model catalogue as the router last fetched it:
// every model the manager can shard, sized from its GGUF metadata. Decisions size models with
// it (a name-based guess is the last resort) and the model listings include the models only
// the manager has. It is fetched in the background while a manager is registered, never on a
// request's path; replicas of the manager are assumed to share one model store.
type catalogue struct {
	fetch    func(context.Context) ([]*coordinatorv1.ModelInfo, error)
	present  func() bool // whether a coordinator-manager is registered
	interval time.Duration
	log      *slog.Logger

	current atomic.Pointer[catalogueCopy]
	loop    *lifecycle.Background
}

// catalogueCopy is one fetched catalogue, immutable once stored.
type catalogueCopy struct {
	sizes  map[string]decide.GGUF // by normalized name
	models []*coordinatorv1.ModelInfo
}

func (c *catalogue) start() { c.loop = lifecycle.Go(c.run) }

func (c *catalogue) stop() { c.loop.Stop() }

func (c *catalogue) run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(c.refresh(ctx))
	}
}

// refresh fetches the catalogue once and says when to fetch it next.
func (c *catalogue) refresh(ctx context.Context) time.Duration {
	if !c.present() {
		return catalogueRetry
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	models, err := c.fetch(fctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("model catalogue not fetched", "err", err)
		}
		return catalogueRetry
	}
	cp := &catalogueCopy{sizes: make(map[string]decide.GGUF, len(models))}
	for _, m := range models {
		if m.GetError() != "" || m.GetBaseBytes() == 0 {
			continue // found but unreadable: the manager explains it when asked to run it
		}
		cp.models = append(cp.models, m)
		cp.sizes[inference.NormalizeModel(m.GetName())] = decide.GGUF{
			BaseBytes: m.GetBaseBytes(), KVBytesPerToken: m.GetKvBytesPerToken(), MaxContext: m.GetMaxContext(),
		}
	}
	c.current.Store(cp)
	return c.interval
}

// sizes is the GGUF size of every catalogued model, nil before the first fetch.
func (c *catalogue) sizes() map[string]decide.GGUF {
	if cp := c.current.Load(); cp != nil {
		return cp.sizes
	}
	return nil
}

// installed lists the catalogued models as a model listing shows them.
func (c *catalogue) installed() []*commonv1.InstalledModel {
	cp := c.current.Load()
	if cp == nil {
		return nil
	}
	out := make([]*commonv1.InstalledModel, 0, len(cp.models))
	for _, m := range cp.models {
		out = append(out, &commonv1.InstalledModel{Name: m.GetName(), SizeBytes: m.GetFileBytes(), Family: m.GetArchitecture(),
			ContextLength: m.GetMaxContext(), KvBytesPerToken: m.GetKvBytesPerToken()})
	}
	return out
}
