package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/doubles/ollamafake"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
	"github.com/sollol/mesh/services/shared/testutil/streambench"
)

// BenchmarkMeshEndToEnd runs the built sollol binary (`sollol up`) in front of one backend
// and compares, in the same run, a streamed chat through the router's gRPC API (router →
// pool → node) with the same chat sent to the node directly: time to first token (p50/p99)
// and tokens/s at 1, 64 and 512 concurrent streams, with a fast fake Ollama and with a real
// one. It also reports the sollol process's CPU per request and memory per open stream.
// Streams arrive spread over one request's duration and the fake streams at
// ollamafake.TypicalGap; the stress variant streams ten times as fast and the burst variant
// starts all 64 streams in the same instant (see streambench).
//
//	SOLLOL_REQUIRE_OLLAMA=1 go test ./services/e2e -run '^$' -bench MeshEndToEnd -benchtime 1x
func BenchmarkMeshEndToEnd(b *testing.B) {
	fake := func(b *testing.B, gap time.Duration) string {
		return ollamafake.StartT(b, ollamafake.Behaviour{Tokens: 32, Gap: gap, Models: []string{"tiny:latest"}}).Addr()
	}
	for _, streams := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("fake/streams=%d", streams), func(b *testing.B) {
			benchMesh(b, fake(b, ollamafake.TypicalGap), meshRun{streams: streams, perStream: max(32/streams, 4), arrivals: streambench.Spread})
		})
	}
	b.Run("fake-stress/streams=64", func(b *testing.B) {
		benchMesh(b, fake(b, ollamafake.StressGap), meshRun{streams: 64, perStream: 4, arrivals: streambench.Spread})
	})
	b.Run("fake-burst/streams=64", func(b *testing.B) {
		benchMesh(b, fake(b, ollamafake.TypicalGap), meshRun{streams: 64, perStream: 4, arrivals: streambench.Burst})
	})
	// The same clients on both paths: the Ollama API of the router against the node's own, so
	// the difference is the mesh alone (the gRPC client above costs its own CPU, in the same
	// process as the backend).
	for _, streams := range []int{1, 64} {
		b.Run(fmt.Sprintf("fake-ollama-api/streams=%d", streams), func(b *testing.B) {
			benchMesh(b, fake(b, ollamafake.TypicalGap), meshRun{streams: streams, perStream: max(32/streams, 4), ollamaAPI: true, arrivals: streambench.Spread})
		})
	}
	for _, streams := range []int{1, 64} {
		b.Run(fmt.Sprintf("real/streams=%d", streams), func(b *testing.B) {
			node := ollamatest.Start(b)
			node.CreateTinyModel(b, "tiny")
			benchMesh(b, node.Addr(), meshRun{streams: streams, perStream: max(64/streams, 2), arrivals: streambench.Spread})
		})
	}
	b.Run("memory-per-open-stream", func(b *testing.B) {
		stall := ollamafake.StartT(b, ollamafake.Behaviour{StallAfter: 1, Models: []string{"tiny:latest"}})
		benchStreamMemory(b, stall.Addr(), 500)
	})
}

// meshRun is one measurement's shape.
type meshRun struct {
	streams, perStream int
	// ollamaAPI sends the mesh's chats through the router's Ollama API (the direct path's
	// client) instead of its gRPC API.
	ollamaAPI bool
	arrivals  streambench.Arrivals
}

// meshFor starts `sollol up` with one Ollama backend and a pool that never queues, and
// returns a router client once the router routes the tiny model to the pool.
func meshFor(b *testing.B, backend string) (routerv1.RouterServiceClient, *sollolProcess, string) {
	ports := freePorts(b)
	args := append([]string{"up", "--data-dir", b.TempDir(), "--discovery.ollama-nodes", backend,
		"--discovery.local-defaults=false", "--ollamapool.max-in-flight-per-node", "4096", "--ollamapool.queue-size", "4096",
		"--log.level", "error", "--debug.pprof"}, ports.args()...)
	// SOLLOL_BENCH_MESH_CPUS (e.g. "0") pins the sollol process to those CPUs with taskset; run
	// the benchmark itself under `taskset -c 1` to give the mesh a core of its own and see its
	// cost apart from CPU queueing.
	var prefix []string
	if cpus := os.Getenv("SOLLOL_BENCH_MESH_CPUS"); cpus != "" {
		prefix = []string{"taskset", "-c", cpus}
	}
	p := startSollolWith(b, prefix, args...)
	conn, err := grpc.NewClient(ports.router, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close() })
	client := routerv1.NewRouterServiceClient(conn)
	require.Eventually(b, func() bool {
		resp, err := client.Route(context.Background(), &routerv1.RouteRequest{Model: "tiny"})
		return err == nil && resp.GetDecision().GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL
	}, 60*time.Second, 50*time.Millisecond)
	return client, p, ports.http
}

// profileSollol, when SOLLOL_BENCH_PROFILE_DIR names a folder, records a CPU profile of the
// sollol process during the measurement into that folder (go tool pprof reads it).
func profileSollol(b *testing.B, httpAddr string) (wait func()) {
	dir := os.Getenv("SOLLOL_BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get("http://" + httpAddr + "/debug/pprof/profile?seconds=3")
		if err != nil {
			b.Logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		name := strings.NewReplacer("/", "_", "=", "-").Replace(b.Name()) + ".pprof"
		data, _ := io.ReadAll(resp.Body)
		if err := os.WriteFile(dir+"/"+name, data, 0o644); err != nil {
			b.Logf("profile: %v", err)
		}
	}()
	return func() { <-done }
}

// benchMesh compares chats through the mesh with chats sent to backend directly.
func benchMesh(b *testing.B, backend string, run meshRun) {
	client, p, httpAddr := meshFor(b, backend)
	// A failed chat fails the benchmark through require (never a panic, which would skip
	// the cleanup that stops the sollol process).
	var window time.Duration // set after the warm-up, the same for both paths
	measure := func(do streambench.Request) streambench.Run {
		r, err := streambench.Measure(run.streams, run.perStream, 32, window, do)
		require.NoError(b, err, "a benchmark chat failed")
		return r
	}
	viaMesh := func() (time.Duration, int, error) { return meshChat(client) }
	if run.ollamaAPI {
		viaMesh = func() (time.Duration, int, error) { return directOllamaChat(httpAddr) }
	}
	direct := func() (time.Duration, int, error) { return directOllamaChat(backend) }
	// Warm both paths at full concurrency (connections, model load).
	warm := measure(direct)
	measure(viaMesh)
	if run.arrivals == streambench.Spread {
		window = streambench.SpreadOver(warm, run.perStream)
	}
	stopProfile := profileSollol(b, httpAddr)
	defer stopProfile()
	ms := streambench.Ms
	for range b.N {
		var meshCPU time.Duration
		viaMeshCPU := func() streambench.Run {
			cpu0 := processCPU(b, p.cmd.Process.Pid)
			r := measure(viaMesh)
			meshCPU += processCPU(b, p.cmd.Process.Pid) - cpu0
			return r
		}
		d, m := measure(direct), viaMeshCPU()
		d, m = d.Merge(measure(direct)), m.Merge(viaMeshCPU())
		b.ReportMetric(ms(d.P(50)), "direct-ttft-p50-ms")
		b.ReportMetric(ms(d.P(99)), "direct-ttft-p99-ms")
		b.ReportMetric(ms(m.P(50)), "mesh-ttft-p50-ms")
		b.ReportMetric(ms(m.P(99)), "mesh-ttft-p99-ms")
		b.ReportMetric(ms(m.P(50)-d.P(50)), "added-p50-ms")
		b.ReportMetric(ms(m.P(99)-d.P(99)), "added-p99-ms")
		b.ReportMetric(d.TokensPerSecond(), "direct-tokens/s")
		b.ReportMetric(m.TokensPerSecond(), "mesh-tokens/s")
		// The sollol process's own CPU (router, pool and the rest), per request relayed.
		b.ReportMetric(float64(meshCPU.Microseconds())/float64(len(m.TTFT)), "sollol-cpu-µs/request")
	}
}

// benchStreamMemory opens n streams that stay open (the backend goes silent after one
// token) and reports the growth of the sollol process's resident memory per stream.
func benchStreamMemory(b *testing.B, backend string, n int) {
	client, p, _ := meshFor(b, backend)
	before := rssBytes(b, p.cmd.Process.Pid)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	opened := make(chan struct{}, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := client.Chat(ctx, chatReq())
			if err != nil {
				return
			}
			if _, err := stream.Recv(); err == nil {
				opened <- struct{}{}
			}
			_, _ = stream.Recv() // holds the stream open until cancel
		}()
	}
	for range n {
		select {
		case <-opened:
		case <-time.After(time.Minute):
			b.Fatal("streams did not open")
		}
	}
	after := rssBytes(b, p.cmd.Process.Pid)
	b.ReportMetric(float64(after-before)/float64(n)/1024, "KiB/open-stream")
	cancel()
	wg.Wait()
}

// processCPU is the user and system CPU time pid has used, from /proc (10 ms ticks).
func processCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(b, err)
	// The fields after the command name, which is in parentheses and may hold spaces:
	// utime and stime are the 14th and 15th of the line, the 12th and 13th after it.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	require.NoError(b, errors.Join(err1, err2))
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

func rssBytes(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			require.NoError(b, err)
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func chatReq() *routerv1.ChatRequest {
	return &routerv1.ChatRequest{Model: "tiny", Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "bench"}},
		Options: &commonv1.GenerationOptions{MaxTokens: proto.Int32(32), Temperature: proto.Float64(0)}}
}

func meshChat(client routerv1.RouterServiceClient) (time.Duration, int, error) {
	start := time.Now()
	stream, err := client.Chat(context.Background(), chatReq())
	if err != nil {
		return 0, 0, err
	}
	var ttft time.Duration
	chunks := 0
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return ttft, chunks, nil
		}
		if err != nil {
			return ttft, chunks, err
		}
		if msg.GetChunk() != nil {
			if chunks == 0 {
				ttft = time.Since(start)
			}
			chunks++
		}
	}
}

var benchHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

func directOllamaChat(backend string) (time.Duration, int, error) {
	body, _ := json.Marshal(map[string]any{"model": "tiny", "stream": true,
		"messages": []map[string]string{{"role": "user", "content": "bench"}},
		"options":  map[string]any{"num_predict": 32, "temperature": 0}})
	start := time.Now()
	resp, err := benchHTTP.Post("http://"+backend+"/api/chat", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var ttft time.Duration
	chunks := 0
	for {
		var c struct {
			Message struct{ Content string } `json:"message"`
			Done    bool                     `json:"done"`
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
