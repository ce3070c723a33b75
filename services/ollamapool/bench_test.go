package ollamapool_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/doubles/ollamafake"
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/shared/testutil/streambench"
)

// BenchmarkPoolHop measures what the pool adds to a streamed chat: time to first token
// (p50/p99) and relay throughput, at 1, 64 and 512 concurrent streams, against calling the
// same backend directly in the same run. Backends: a fast in-process fake Ollama (32 tokens,
// the first at once, so time to first token is the path's own overhead, then one every
// ollamafake.TypicalGap) and a real Ollama with the tiny model.
//
//	go test ./services/ollamapool -run '^$' -bench PoolHop -benchtime 1x
//
// Streams arrive spread over one request's duration (see streambench), so N streams are
// open at once but start independently. The stress variant streams tokens ten times as
// fast; the burst variants start all 64 streams in the same instant.
// CPU per token is the whole process's CPU time (fake backend, pool and client alike) divided
// by tokens relayed; the difference between the two paths is the pool's share.
func BenchmarkPoolHop(b *testing.B) {
	fake := func(gap time.Duration) ollamafake.Behaviour {
		return ollamafake.Behaviour{Tokens: 32, Gap: gap, Models: []string{"tiny:latest"}}
	}
	for _, streams := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("fake/streams=%d", streams), func(b *testing.B) {
			node := ollamafake.StartT(b, fake(ollamafake.TypicalGap))
			benchHop(b, node.Addr(), streams, 32, max(32/streams, 4), streambench.Spread)
		})
	}
	b.Run("fake-stress/streams=64", func(b *testing.B) {
		benchHop(b, ollamafake.StartT(b, fake(ollamafake.StressGap)).Addr(), 64, 32, 4, streambench.Spread)
	})
	b.Run("fake-burst/streams=64", func(b *testing.B) {
		benchHop(b, ollamafake.StartT(b, fake(ollamafake.TypicalGap)).Addr(), 64, 32, 4, streambench.Burst)
	})
	// One token per request, in bursts: what a request costs apart from streaming, which is
	// what a burst of first tokens queues behind.
	b.Run("fake-one-token-burst/streams=64", func(b *testing.B) {
		node := ollamafake.StartT(b, ollamafake.Behaviour{Tokens: 1, Models: []string{"tiny:latest"}})
		benchHop(b, node.Addr(), 64, 1, 16, streambench.Burst)
	})
	for _, streams := range []int{1, 64} {
		b.Run(fmt.Sprintf("real/streams=%d", streams), func(b *testing.B) {
			node := tinyNode(b)
			benchHop(b, node.Addr(), streams, 32, max(128/streams, 2), streambench.Spread)
		})
	}
}

func benchHop(b *testing.B, backend string, streams, tokens, perStream int, how streambench.Arrivals) {
	f := newFixture(b, func(c *ollamapool.Config) {
		c.MaxInFlightPerNode = 4096
		c.QueueSize = 4096
	})
	f.publish(backend, "tiny:latest")

	var window time.Duration // set after the warm-up, the same for both paths
	measure := func(do streambench.Request) streambench.Run {
		r, err := streambench.Measure(streams, perStream, tokens, window, do)
		require.NoError(b, err, "a benchmark request failed")
		return r
	}
	directRun := func() streambench.Run {
		return measure(func() (time.Duration, int, error) { return directChat(b, backend, tokens) })
	}
	pooledRun := func() streambench.Run {
		return measure(func() (time.Duration, int, error) {
			start := time.Now()
			r := f.chat(context.Background(), "bench", int32(tokens), nil)
			return r.firstChunk.Sub(start), r.chunks, r.err
		})
	}
	// Warm both paths at full concurrency first (model load, and one pooled connection per
	// stream on each path), so neither pays for dialling inside the measurement.
	warm := directRun()
	pooledRun()
	if how == streambench.Spread {
		window = streambench.SpreadOver(warm, perStream)
	}
	for range b.N {
		// Alternate the paths so drift over the run (GC, CPU frequency, a warming cache)
		// falls on both alike.
		direct, pooled := directRun(), pooledRun()
		direct = direct.Merge(directRun())
		pooled = pooled.Merge(pooledRun())
		ms := streambench.Ms
		b.ReportMetric(ms(direct.P(50)), "direct-ttft-p50-ms")
		b.ReportMetric(ms(direct.P(99)), "direct-ttft-p99-ms")
		b.ReportMetric(ms(pooled.P(50)), "pool-ttft-p50-ms")
		b.ReportMetric(ms(pooled.P(99)), "pool-ttft-p99-ms")
		b.ReportMetric(ms(pooled.P(50)-direct.P(50)), "added-p50-ms")
		b.ReportMetric(ms(pooled.P(99)-direct.P(99)), "added-p99-ms")
		b.ReportMetric(direct.TokensPerSecond(), "direct-tokens/s")
		b.ReportMetric(pooled.TokensPerSecond(), "pool-tokens/s")
		b.ReportMetric(direct.CPUPerToken(), "direct-cpu-µs/token")
		b.ReportMetric(pooled.CPUPerToken(), "pool-cpu-µs/token")
		b.ReportMetric(direct.CPUPerRequest(), "direct-cpu-µs/request")
		b.ReportMetric(pooled.CPUPerRequest(), "pool-cpu-µs/request")
	}
}

var directClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

// directChat streams one chat straight from the backend, as the pool would, and returns the
// time to its first chunk and the chunks it sent.
func directChat(b testing.TB, backend string, tokens int) (time.Duration, int, error) {
	body, _ := json.Marshal(map[string]any{
		"model": "tiny", "stream": true,
		"messages": []map[string]string{{"role": "user", "content": "bench"}},
		"options":  map[string]any{"num_predict": tokens, "temperature": 0},
	})
	start := time.Now()
	resp, err := directClient.Post("http://"+backend+"/api/chat", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var ttft time.Duration
	chunks := 0
	for {
		var c struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Done bool `json:"done"`
		}
		if err := dec.Decode(&c); err != nil {
			return ttft, chunks, err
		}
		if c.Message.Content != "" {
			if chunks == 0 {
				ttft = time.Since(start)
			}
			chunks++
		}
		if c.Done {
			return ttft, chunks, nil
		}
	}
}
