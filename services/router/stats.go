package router

import (
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/status"

	"github.com/sollol/mesh/services/shared/rpcerr"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// stats are the router's counters since start. Nothing in them depends on the pool or the
// coordinator being present, so GetStats answers whatever part is missing.
type stats struct {
	pool, shard            atomic.Uint64
	poolToShard, shardPool atomic.Uint64
	replicaRetries         atomic.Uint64
	inFlight               atomic.Int64

	mu     sync.Mutex
	errors map[string]uint64
}

func newStats() *stats { return &stats{errors: map[string]uint64{}} }

func (s *stats) served(p commonv1.RoutePath) {
	if p == commonv1.RoutePath_ROUTE_PATH_SHARD {
		s.shard.Add(1)
	} else {
		s.pool.Add(1)
	}
}

func (s *stats) fallback(from commonv1.RoutePath) {
	if from == commonv1.RoutePath_ROUTE_PATH_POOL {
		s.poolToShard.Add(1)
	} else {
		s.shardPool.Add(1)
	}
}

func (s *stats) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors[status.Code(rpcerr.ToStatus(err)).String()]++
}

func (s *stats) errorCounts() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.errors))
	for k, v := range s.errors {
		out[k] = v
	}
	return out
}
