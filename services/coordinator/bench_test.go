package coordinator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/coordinator/internal/relay"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/shared/testutil/streambench"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

// Speed is measured here, never asserted in tests; BENCHMARKS.md has the figures.
//
//	go test ./services/coordinator -run '^$' -bench . -benchtime 1x

// benchTokens is the completion length of every benchmark request.
const benchTokens = 16

// viaManager is one Chat through the coordinator-manager's gRPC API.
func viaManager(r *replica, model string) streambench.Request {
	return func() (time.Duration, int, error) {
		var ttft time.Duration
		res := r.chatReqTimed(context.Background(), chatRequest(model, "benchmark prompt", benchTokens), &ttft, time.Now())
		return ttft, res.chunks, res.err
	}
}

// direct is the same request sent straight to llama-server's OpenAI endpoint.
func direct(c *relay.Client, addr string) streambench.Request {
	n := int32(benchTokens)
	req := relay.ChatRequest{Model: "tiny", Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "benchmark prompt"}},
		Options: &commonv1.GenerationOptions{MaxTokens: &n, Temperature: ptr(0.0)}}
	return func() (time.Duration, int, error) {
		start := time.Now()
		var ttft time.Duration
		chunks := 0
		_, err := c.Chat(context.Background(), addr, req, func(string) error {
			if chunks == 0 {
				ttft = time.Since(start)
			}
			chunks++
			return nil
		})
		return ttft, chunks, err
	}
}

// BenchmarkWarmHop measures the latency the manager adds to a warm coordinator: the same
// chat request through the manager's gRPC API and straight to llama-server, at 1 and 64
// concurrent streams (spread over one request's duration, see streambench).
func BenchmarkWarmHop(b *testing.B) {
	w := newWorld(b, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	r := w.start(w.config(func(c *coordinator.Config) { c.Parallel = 64 }))
	requireCompleteB(b, r.chat(ctxTimeout(b, time.Minute), "tiny", "warm up", benchTokens))
	addr := r.coordinatorOf(b, "tiny").GetAddress()
	rc := &relay.Client{HTTP: relay.NewHTTPClient()}
	defer rc.HTTP.CloseIdleConnections()

	for _, streams := range []int{1, 64} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			per := 400
			if streams > 1 {
				per = 25
			}
			var window time.Duration
			measure := func(perStream int, do streambench.Request) streambench.Run {
				run, err := streambench.Measure(streams, perStream, benchTokens, window, do)
				require.NoError(b, err)
				return run
			}
			for range b.N {
				// Warm both connection pools, and take one request's duration for the spread.
				warm := measure(10, direct(rc, addr))
				measure(10, viaManager(r, "tiny"))
				window = streambench.SpreadOver(warm, 10)
				d, m := measure(per, direct(rc, addr)), measure(per, viaManager(r, "tiny"))
				ms := streambench.Ms
				b.ReportMetric(ms(m.P(50)-d.P(50)), "added-ttft-p50-ms")
				b.ReportMetric(ms(m.P(99)-d.P(99)), "added-ttft-p99-ms")
				b.ReportMetric(ms(m.PTotal(50)-d.PTotal(50)), "added-total-p50-ms")
				b.ReportMetric(ms(m.PTotal(99)-d.PTotal(99)), "added-total-p99-ms")
				b.ReportMetric(m.RequestsPerSecond(), "manager-req/s")
				b.ReportMetric(d.RequestsPerSecond(), "direct-req/s")
				b.Logf("streams=%d requests=%d tokens=%d | TTFT p50/p99 direct %.3f/%.3f ms, manager %.3f/%.3f ms | total p50/p99 direct %.3f/%.3f ms, manager %.3f/%.3f ms | req/s direct %.0f, manager %.0f",
					streams, len(m.TTFT), benchTokens, ms(d.P(50)), ms(d.P(99)), ms(m.P(50)), ms(m.P(99)),
					ms(d.PTotal(50)), ms(d.PTotal(99)), ms(m.PTotal(50)), ms(m.PTotal(99)), d.RequestsPerSecond(), m.RequestsPerSecond())
			}
		})
	}
}

// BenchmarkColdStart measures what a cold start costs beyond llama-server's own start: the
// manager's EnsureCoordinator (resolve, size, place, spawn, parse the log, poll /health,
// publish) against the same llama-server started by hand and polled until /health is 200.
func BenchmarkColdStart(b *testing.B) {
	const loadTime = time.Second
	w := newWorld(b, worldOptions{Devices: gib(1), Models: []string{"tiny"},
		Double: llamaservertest.DoubleOptions{LoadTime: loadTime}})
	r := w.start(w.config(nil))
	const rounds = 5
	for range b.N {
		var viaMgr, byHand []time.Duration
		for range rounds {
			start := time.Now()
			c := ensure(b, r.client, "tiny")
			viaMgr = append(viaMgr, time.Since(start))
			_, err := r.client.StopCoordinator(ctxTimeout(b, time.Minute), &coordinatorv1.StopCoordinatorRequest{Model: "tiny"})
			require.NoError(b, err)
			require.NotEmpty(b, c.GetAddress())
		}
		for range rounds {
			start := time.Now()
			p := llamaservertest.Start(b, llamaservertest.Options{Model: w.models["tiny"], RPC: []string{w.rpcs[0].Addr()},
				CtxSize: tinymodel.ContextLen * 4, Parallel: 4, Double: w.double, Args: []string{"-t", "1"}})
			byHand = append(byHand, time.Since(start))
			p.Stop()
		}
		ms, pct := streambench.Ms, streambench.Percentile
		over := pct(viaMgr, 50) - pct(byHand, 50)
		b.ReportMetric(ms(over), "overhead-p50-ms")
		b.ReportMetric(ms(pct(viaMgr, 100)-pct(byHand, 50)), "overhead-max-ms")
		b.Logf("load time %v | manager cold start p50 %.1f ms max %.1f ms | llama-server alone p50 %.1f ms max %.1f ms | overhead p50 %.1f ms",
			loadTime, ms(pct(viaMgr, 50)), ms(pct(viaMgr, 100)), ms(pct(byHand, 50)), ms(pct(byHand, 100)), ms(over))
	}
}

// BenchmarkSwitch measures a request for one cached model right after a request for another
// (both coordinators warm, on their own rpc backends) against repeated requests for one.
func BenchmarkSwitch(b *testing.B) {
	w := newWorld(b, worldOptions{Devices: gib(2), Models: []string{"a", "b"}})
	r := w.start(w.config(nil))
	for _, m := range []string{"a", "b"} {
		requireCompleteB(b, r.chat(ctxTimeout(b, time.Minute), m, "warm up", benchTokens))
	}
	ttftOf := func(model string) time.Duration {
		ttft, chunks, err := viaManager(r, model)()
		require.NoError(b, err)
		require.Equal(b, benchTokens, chunks)
		return ttft
	}
	const rounds = 300
	for range b.N {
		var same, switched []time.Duration
		for i := range rounds {
			same = append(same, ttftOf("a"))
			model := []string{"a", "b"}[i%2]
			if ttft := ttftOf(model); model == "b" {
				switched = append(switched, ttft)
			}
			ttftOf("a")
		}
		ms, pct := streambench.Ms, streambench.Percentile
		b.ReportMetric(ms(pct(switched, 50)), "switch-ttft-p50-ms")
		b.ReportMetric(ms(pct(switched, 99)), "switch-ttft-p99-ms")
		b.ReportMetric(ms(pct(same, 50)), "same-ttft-p50-ms")
		b.Logf("switch TTFT p50/p99 %.3f/%.3f ms | same model TTFT p50/p99 %.3f/%.3f ms (%d switches)",
			ms(pct(switched, 50)), ms(pct(switched, 99)), ms(pct(same, 50)), ms(pct(same, 99)), len(switched))
	}
	require.EqualValues(b, 2, r.stats(b).GetStartsTotal(), "both stayed cached: no restart on a switch")
}

// chatReqTimed is chatReq that records the time to the first chunk.
func (r *replica) chatReqTimed(ctx context.Context, req *coordinatorv1.ChatRequest, ttft *time.Duration, start time.Time) streamResult {
	res := r.chatReq(ctx, req)
	if !res.firstChunk.IsZero() {
		*ttft = res.firstChunk.Sub(start)
	}
	return res
}

func requireCompleteB(b *testing.B, res streamResult) {
	b.Helper()
	require.NoError(b, res.err)
	require.NotNil(b, res.done)
}
