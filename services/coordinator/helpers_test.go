package coordinator_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/discovery"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
	"github.com/sollol/mesh/services/shared/config"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

// These tests run the llama-server and rpc-server doubles, or the real llama.cpp binaries when
// SOLLOL_LLAMA_SERVER and SOLLOL_RPC_SERVER name them, with a real embedded etcd and a real
// discovery service finding the rpc-servers.

// world is one test's mesh: etcd, rpc-servers found by a discovery replica, and model files.
type world struct {
	t       testing.TB
	cluster *etcdtest.Cluster
	rpcs    []*rpcservertest.Process
	models  map[string]string // name → GGUF file
	bin     string
	real    bool
	double  llamaservertest.DoubleOptions
}

type worldOptions struct {
	// Devices is one rpc-server per element, with its devices' memory (nil: the default).
	Devices [][]rpcserver.DeviceMemory
	// Models are the model names to create (each a tiny model with its own seed).
	Models []string
	// Double are settings of the llama-server double (ignored for the real binary).
	Double llamaservertest.DoubleOptions
	// NoDiscovery leaves discovery out (tests that write backends into etcd themselves).
	NoDiscovery bool
}

func newWorld(t testing.TB, o worldOptions) *world {
	t.Helper()
	w := &world{t: t, cluster: etcdtest.Start(t), models: map[string]string{}, double: o.Double}
	w.bin, w.real = llamaservertest.Binary(t)
	dir := t.TempDir()
	for i, name := range o.Models {
		path := filepath.Join(dir, name+".gguf")
		require.NoError(t, tinymodel.WriteFile(path, tinymodel.Options{Seed: int64(i + 1), Name: name}))
		w.models[name] = path
	}
	var addrs []string
	for _, devs := range o.Devices {
		p := rpcservertest.Start(t, rpcservertest.Options{Devices: devs})
		w.rpcs = append(w.rpcs, p)
		addrs = append(addrs, p.Addr())
	}
	if !o.NoDiscovery && len(addrs) > 0 {
		w.startDiscovery(addrs)
	}
	return w
}

// gib is n rpc-servers, each with one device of 1 GiB, all free.
func gib(n int) [][]rpcserver.DeviceMemory {
	out := make([][]rpcserver.DeviceMemory, n)
	for i := range out {
		out[i] = []rpcserver.DeviceMemory{{Free: 1 << 30, Total: 1 << 30}}
	}
	return out
}

// startDiscovery runs a real discovery replica that verifies the rpc-servers and writes them
// to etcd, and waits until every one is there, healthy.
func (w *world) startDiscovery(addrs []string) {
	var cfg discovery.Config
	cfg.RegisterFlags(flag.NewFlagSet("d", flag.ContinueOnError))
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.RPCBackends = config.StringList(addrs)
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.MaxProbeInterval = time.Second
	cfg.ProbeTimeout = time.Second
	cfg.LeaseTTL = 3 * time.Second
	d, err := discovery.New(cfg, grpcserver.Deps{Logger: quietLog(), Etcd: w.cluster.Client()})
	require.NoError(w.t, err)
	require.NoError(w.t, d.Start(context.Background()))
	w.t.Cleanup(func() { _ = d.Stop(context.Background()) })
	require.Eventually(w.t, func() bool {
		healthy := 0
		for _, b := range d.SnapshotItems() {
			if slices.Contains(addrs, b.GetAddress()) && b.GetHealth() == commonv1.HealthState_HEALTH_STATE_HEALTHY {
				healthy++
			}
		}
		return healthy == len(addrs)
	}, 30*time.Second, 20*time.Millisecond, "discovery verifies every rpc-server")
}

func quietLog() *slog.Logger {
	level := slog.LevelError
	if os.Getenv("SOLLOL_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// config is the coordinator's flag defaults, made fast and local for tests.
func (w *world) config(mutate func(*coordinator.Config)) coordinator.Config {
	var c coordinator.Config
	c.RegisterFlags(flag.NewFlagSet("c", flag.ContinueOnError))
	c.GRPC.Addr = "127.0.0.1:0"
	c.LlamaServer = w.bin
	c.LlamaServerArgs = w.double.Args(w.real)
	c.Threads = 1
	c.Parallel = 4
	c.DefaultContext = tinymodel.ContextLen
	c.OllamaModels = "none"
	for name, path := range w.models {
		c.Models = append(c.Models, name+"="+path)
	}
	slices.Sort(c.Models)
	c.DataDir = w.t.TempDir()
	c.StartTimeout = time.Minute
	c.StopTimeout = 5 * time.Second
	c.RestartBackoff = 50 * time.Millisecond
	c.LeaseTTL = 5 * time.Second
	if mutate != nil {
		mutate(&c)
	}
	return c
}

// replica is a running coordinator-manager and a client of it.
type replica struct {
	svc    *coordinator.Service
	client coordinatorv1.CoordinatorServiceClient
}

func (w *world) start(cfg coordinator.Config) *replica {
	w.t.Helper()
	svc, err := coordinator.New(cfg, grpcserver.Deps{Logger: quietLog(), Etcd: w.cluster.Client()})
	require.NoError(w.t, err)
	require.NoError(w.t, svc.Start(context.Background()))
	w.t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return &replica{svc: svc, client: dial(w.t, svc.Addr())}
}

func dial(t testing.TB, addr string) coordinatorv1.CoordinatorServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return coordinatorv1.NewCoordinatorServiceClient(conn)
}

// streamResult is everything one Chat or Generate stream delivered, in order.
type streamResult struct {
	progress []*commonv1.LoadProgress
	text     string
	chunks   int
	done     *commonv1.Done
	err      error
	// order records event kinds as they came: 'p'rogress, 'c'hunk, 'd'one.
	order      string
	doneAt     time.Time
	firstChunk time.Time
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// chat sends one user message and reads the whole stream.
func (r *replica) chat(ctx context.Context, model, prompt string, maxTokens int32) streamResult {
	req := &coordinatorv1.ChatRequest{Model: model,
		Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: prompt}},
		Options:  &commonv1.GenerationOptions{MaxTokens: &maxTokens, Temperature: ptr(0.0)}}
	return r.chatReq(ctx, req)
}

func (r *replica) chatReq(ctx context.Context, req *coordinatorv1.ChatRequest) streamResult {
	var res streamResult
	stream, err := r.client.Chat(ctx, req)
	if err != nil {
		res.err = err
		return res
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
		switch ev := msg.GetEvent().(type) {
		case *coordinatorv1.ChatResponse_Progress:
			res.progress = append(res.progress, ev.Progress)
			res.order += "p"
		case *coordinatorv1.ChatResponse_Chunk:
			if res.chunks == 0 {
				res.firstChunk = time.Now()
			}
			res.chunks++
			res.text += ev.Chunk.GetContent()
			res.order += "c"
		case *coordinatorv1.ChatResponse_Done:
			res.done = ev.Done
			res.doneAt = time.Now()
			res.order += "d"
		}
	}
}

// requireComplete checks a stream ended with exactly one done after n chunks, and nothing
// after it.
func requireComplete(t *testing.T, res streamResult, n int) {
	t.Helper()
	require.NoError(t, res.err)
	require.NotNil(t, res.done, "the stream ends with a done event")
	require.True(t, strings.HasSuffix(res.order, "d") && strings.Count(res.order, "d") == 1, "exactly one done, last: %s", res.order)
	require.Equal(t, n, res.chunks)
	require.EqualValues(t, n, res.done.GetUsage().GetCompletionTokens(), "token counts are exact")
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_SHARD, res.done.GetRoute().GetPath())
	require.NotEmpty(t, res.done.GetRoute().GetBackend())
}

func (r *replica) list(t testing.TB) []*coordinatorv1.Coordinator {
	t.Helper()
	resp, err := r.client.ListCoordinators(ctxTimeout(t, 5*time.Second), &coordinatorv1.ListCoordinatorsRequest{})
	require.NoError(t, err)
	return resp.GetCoordinators()
}

func (r *replica) coordinatorOf(t testing.TB, model string) *coordinatorv1.Coordinator {
	t.Helper()
	for _, c := range r.list(t) {
		if c.GetModel() == model {
			return c
		}
	}
	return nil
}

func (r *replica) stats(t testing.TB) *coordinatorv1.GetStatsResponse {
	t.Helper()
	s, err := r.client.GetStats(ctxTimeout(t, 5*time.Second), &coordinatorv1.GetStatsRequest{})
	require.NoError(t, err)
	return s
}

// waitState polls until the model's coordinator on r is in state.
func (r *replica) waitState(t *testing.T, model string, state coordinatorv1.CoordinatorState) *coordinatorv1.Coordinator {
	t.Helper()
	var got *coordinatorv1.Coordinator
	require.Eventually(t, func() bool {
		got = r.coordinatorOf(t, model)
		return got != nil && got.GetState() == state
	}, 60*time.Second, 20*time.Millisecond, "coordinator of %s reaches %s; have %v", model, state, got)
	return got
}

// requireStatus checks a gRPC error's code and ErrorInfo reason.
func requireStatus(t *testing.T, err error, code codes.Code, reason string) *status.Status {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "a gRPC status, got %v", err)
	require.Equal(t, code, st.Code(), st.Message())
	if reason != "" {
		require.Equal(t, reason, infoOf(st).GetReason(), st.Message())
	}
	return st
}

func infoOf(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			return i
		}
	}
	return nil
}

// fieldOf is the request field a BadRequest detail names.
func fieldOf(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

// concurrently runs f n times at once and waits for all.
func concurrently(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i)
		}()
	}
	wg.Wait()
}

type rpcProcess = rpcservertest.Process

// startRPC starts one rpc-server with the given devices.
func startRPC(t testing.TB, devs []rpcserver.DeviceMemory) *rpcProcess {
	t.Helper()
	return rpcservertest.Start(t, rpcservertest.Options{Devices: devs})
}

// chatRequest is one user message with max tokens and greedy sampling.
func chatRequest(model, prompt string, maxTokens int32) *coordinatorv1.ChatRequest {
	return &coordinatorv1.ChatRequest{Model: model,
		Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: prompt}},
		Options:  &commonv1.GenerationOptions{MaxTokens: &maxTokens, Temperature: ptr(0.0)}}
}

// rpcserverDevice is one device with free bytes of as much total memory.
func rpcserverDevice(free uint64) rpcserver.DeviceMemory {
	return rpcserver.DeviceMemory{Free: free, Total: free}
}
