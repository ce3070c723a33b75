package ollamapool_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/testutil/etcdtest"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// TestMain fails the run if a goroutine outlives the tests: cancelled and failed streams must
// leave nothing behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is one pool replica over a real etcd, with Ollama nodes published the way
// discovery publishes them.
type fixture struct {
	t      testing.TB
	etcd   *etcdtest.Cluster
	store  *registry.Store[*commonv1.Backend]
	svc    *ollamapool.Service
	client ollamapoolv1.OllamaPoolServiceClient
}

func newFixture(t testing.TB, mutate func(*ollamapool.Config)) *fixture {
	t.Helper()
	cluster := etcdtest.Start(t)
	cli := cluster.Client()
	var cfg ollamapool.Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.BusyCooldown = 200 * time.Millisecond
	cfg.BreakerCooldown = time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if _, bench := t.(*testing.B); bench {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	svc, err := ollamapool.New(cfg, grpcserver.Deps{Logger: log, Etcd: cli})
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	conn, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &fixture{
		t: t, etcd: cluster, svc: svc, client: ollamapoolv1.NewOllamaPoolServiceClient(conn),
		store: registry.NewStore(cli, registry.BackendsPrefix, registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} })),
	}
}

// publish writes a healthy Ollama backend record with the given models, as discovery would,
// and waits until the pool lists it.
func (f *fixture) publish(addr string, models ...string) string {
	f.t.Helper()
	b := &commonv1.Backend{Id: "ollama@" + addr, Kind: commonv1.BackendKind_BACKEND_KIND_OLLAMA, Address: addr,
		Health: commonv1.HealthState_HEALTH_STATE_HEALTHY}
	for _, m := range models {
		b.InstalledModels = append(b.InstalledModels, &commonv1.InstalledModel{Name: m})
	}
	require.NoError(f.t, f.store.Put(context.Background(), b.GetId(), b))
	require.Eventually(f.t, func() bool {
		resp, err := f.client.ListNodes(context.Background(), &ollamapoolv1.ListNodesRequest{})
		if err != nil {
			return false
		}
		for _, n := range resp.GetNodes() {
			if n.GetBackend().GetId() == b.GetId() {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
	return b.GetId()
}

// tinyNode starts a real Ollama with the tiny model.
func tinyNode(t testing.TB, opts ...ollamatest.Option) *ollamatest.Server {
	t.Helper()
	s := ollamatest.Start(t, opts...)
	s.CreateTinyModel(t, "tiny")
	return s
}

// chatResult is what one streamed chat delivered.
type chatResult struct {
	chunks     int
	text       string
	done       *commonv1.Done
	err        error
	firstChunk time.Time
}

// chatRequest is a chat with the tiny model, greedy, limited to maxTokens.
func chatRequest(prompt string, maxTokens int32) *ollamapoolv1.ChatRequest {
	return &ollamapoolv1.ChatRequest{
		Model:    "tiny",
		Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: prompt}},
		Options:  &commonv1.GenerationOptions{MaxTokens: proto.Int32(maxTokens), Temperature: proto.Float64(0)},
	}
}

func (f *fixture) chat(ctx context.Context, prompt string, maxTokens int32, mutate func(*ollamapoolv1.ChatRequest)) chatResult {
	return f.chatWith(ctx, prompt, maxTokens, mutate, nil)
}

// chatCounting is chat that also counts, in firstTokens, the streams that got a token.
func (f *fixture) chatCounting(ctx context.Context, prompt string, maxTokens int32, firstTokens *atomic.Int32) chatResult {
	return f.chatWith(ctx, prompt, maxTokens, nil, firstTokens)
}

func (f *fixture) chatWith(ctx context.Context, prompt string, maxTokens int32, mutate func(*ollamapoolv1.ChatRequest), firstTokens *atomic.Int32) chatResult {
	req := chatRequest(prompt, maxTokens)
	if mutate != nil {
		mutate(req)
	}
	stream, err := f.client.Chat(ctx, req)
	if err != nil {
		return chatResult{err: err}
	}
	var r chatResult
	for {
		msg, err := stream.Recv()
		if err != nil {
			if err != io.EOF {
				r.err = err
			}
			return r
		}
		if c := msg.GetChunk(); c != nil {
			if r.chunks == 0 {
				r.firstChunk = time.Now()
				if firstTokens != nil {
					firstTokens.Add(1)
				}
			}
			r.chunks++
			r.text += c.GetContent()
		}
		if d := msg.GetDone(); d != nil {
			require.Nil(f.t, r.done, "exactly one terminal event")
			r.done = d
		}
	}
}

// parallel runs fn(0..n-1) concurrently and waits.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
