package discovery_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	discoveryv1 "github.com/sollol/mesh/gen/go/sollol/discovery/v1"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
)

// BenchmarkRegisterAndWatch1000 registers 1,000 simulated rpc-servers (in-process ggml-rpc
// doubles, each verified by a real handshake) with one discovery replica over gRPC, against a
// real embedded etcd, then changes each backend's record once the way the tracker does (a
// Put under the backends prefix) while a WatchBackends client records when each change
// reaches it, next to a plain etcd watch on the same prefix (the direct path). It reports
// registration throughput and latency, the propagation latency from the start of the etcd
// write to each watcher (p50/p99), and the heap the process grew by.
//
//	go test ./services/discovery -run '^$' -bench RegisterAndWatch -benchtime 1x
func BenchmarkRegisterAndWatch1000(b *testing.B) {
	const backends, concurrency = 1000, 16
	for range b.N {
		b.StopTimer()
		cluster := etcdtest.Start(b)
		doubles := make([]string, backends)
		for i := range doubles {
			srv, err := rpcserver.Start(context.Background(), rpcserver.Options{Addr: "127.0.0.1:0", Concurrent: true})
			require.NoError(b, err)
			b.Cleanup(func() { _ = srv.Close() })
			doubles[i] = srv.Addr()
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)

		var cfg discovery.Config
		cfg.RegisterFlags(flag.NewFlagSet("bench", flag.ContinueOnError))
		cfg.GRPC.Addr = "127.0.0.1:0"
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		svc, err := discovery.New(cfg, grpcserver.Deps{Logger: quiet, Etcd: cluster.Client()})
		require.NoError(b, err)
		require.NoError(b, svc.Start(context.Background()))
		b.Cleanup(func() { _ = svc.Stop(context.Background()) })
		r := &replica{svc: svc, client: dial(b, svc.Addr())}

		watcher := startWatcher(b, r.client)
		direct := startDirectWatcher(b, cluster)
		b.StartTimer()

		// Phase 1: registrations, concurrency at a time.
		regLatency := make([]time.Duration, backends)
		start := time.Now()
		parallel(backends, concurrency, func(i int) {
			t0 := time.Now()
			_, err := r.client.RegisterBackend(context.Background(), &discoveryv1.RegisterBackendRequest{
				Kind: commonv1.BackendKind_BACKEND_KIND_RPC, Address: doubles[i], Ttl: durationpb.New(time.Minute),
			})
			regLatency[i] = time.Since(t0)
			require.NoError(b, err)
		})
		regElapsed := time.Since(start)
		watcher.waitCount(b, backends)

		// Phase 2: one change per backend, written as the tracker writes, timed to the watcher.
		store := registry.NewStore(cluster.Client(), registry.BackendsPrefix,
			registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} }))
		items := svc.SnapshotItems()
		ids := slices.Sorted(func(yield func(string) bool) {
			for id := range items {
				if !yield(id) {
					return
				}
			}
		})
		sent := make([]time.Time, len(ids))
		parallel(len(ids), concurrency, func(i int) {
			changed := items[ids[i]]
			changed.Labels = map[string]string{"bench-seq": strconv.Itoa(i)}
			sent[i] = time.Now()
			require.NoError(b, store.Put(context.Background(), ids[i], changed))
		})
		arrivals := watcher.waitSeq(b, len(ids))
		directArrivals := direct.waitSeq(b, len(ids))
		b.StopTimer()

		propagation := make([]time.Duration, len(ids))
		directPropagation := make([]time.Duration, len(ids))
		for i := range ids {
			propagation[i] = arrivals[i].Sub(sent[i])
			directPropagation[i] = directArrivals[i].Sub(sent[i])
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)

		b.ReportMetric(float64(backends)/regElapsed.Seconds(), "registrations/s")
		b.ReportMetric(ms(percentile(regLatency, 50)), "register-p50-ms")
		b.ReportMetric(ms(percentile(regLatency, 99)), "register-p99-ms")
		b.ReportMetric(ms(percentile(propagation, 50)), "watch-p50-ms")
		b.ReportMetric(ms(percentile(propagation, 99)), "watch-p99-ms")
		b.ReportMetric(ms(percentile(directPropagation, 50)), "etcd-watch-p50-ms")
		b.ReportMetric(ms(percentile(directPropagation, 99)), "etcd-watch-p99-ms")
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-growth-MiB")
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(ds []time.Duration, p int) time.Duration {
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	return sorted[(len(sorted)-1)*p/100]
}

// parallel runs fn(0..n-1) with at most width calls at once.
func parallel(n, width int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, width)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

// watchRecorder is a WatchBackends client that notes when events arrive.
type watchRecorder struct {
	mu    sync.Mutex
	count int
	seq   map[int]time.Time
	cond  chan struct{}
}

func startWatcher(b *testing.B, client discoveryv1.DiscoveryServiceClient) *watchRecorder {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	stream, err := client.WatchBackends(ctx, &discoveryv1.WatchBackendsRequest{})
	require.NoError(b, err)
	first, err := stream.Recv()
	require.NoError(b, err)
	require.NotNil(b, first.GetSnapshot())
	w := &watchRecorder{seq: map[int]time.Time{}, cond: make(chan struct{}, 1)}
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				return
			}
			now := time.Now()
			ev := msg.GetEvent()
			w.mu.Lock()
			if ev.GetType() == discoveryv1.BackendEventType_BACKEND_EVENT_TYPE_PUT {
				if s, ok := ev.GetBackend().GetLabels()["bench-seq"]; ok {
					n, _ := strconv.Atoi(s)
					if _, seen := w.seq[n]; !seen {
						w.seq[n] = now
					}
				} else {
					w.count++
				}
			}
			w.mu.Unlock()
			select {
			case w.cond <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

func (w *watchRecorder) waitCount(b *testing.B, n int) {
	w.wait(b, func() bool { return w.count >= n })
}

func (w *watchRecorder) waitSeq(b *testing.B, n int) []time.Time {
	w.wait(b, func() bool { return len(w.seq) >= n })
	out := make([]time.Time, n)
	for i := range n {
		out[i] = w.seq[i]
	}
	return out
}

func (w *watchRecorder) wait(b *testing.B, done func() bool) {
	deadline := time.After(2 * time.Minute)
	for {
		w.mu.Lock()
		ok := done()
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-w.cond:
		case <-deadline:
			b.Fatal("watcher did not see every change within two minutes")
		}
	}
}

// startDirectWatcher watches the backends prefix with a plain etcd client: the floor that
// discovery's snapshot and gRPC stream add to.
func startDirectWatcher(b *testing.B, cluster *etcdtest.Cluster) *watchRecorder {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	codec := registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} })
	w := &watchRecorder{seq: map[int]time.Time{}, cond: make(chan struct{}, 1)}
	wch := cluster.Client().Watch(ctx, registry.BackendsPrefix, clientv3.WithPrefix())
	go func() {
		for resp := range wch {
			now := time.Now()
			w.mu.Lock()
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if be, err := codec.Unmarshal(ev.Kv.Value); err == nil {
					if s, ok := be.GetLabels()["bench-seq"]; ok {
						n, _ := strconv.Atoi(s)
						if _, seen := w.seq[n]; !seen {
							w.seq[n] = now
						}
					}
				}
			}
			w.mu.Unlock()
			select {
			case w.cond <- struct{}{}:
			default:
			}
		}
	}()
	return w
}
