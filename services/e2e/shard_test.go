package e2e

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
	"github.com/sollol/mesh/services/shared/registry"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// These tests run the llama-server and rpc-server doubles, or the real binaries when
// SOLLOL_LLAMA_SERVER and SOLLOL_RPC_SERVER name them.

type shardChat struct {
	progress int
	chunks   int
	done     *commonv1.Done
	err      error
}

func chatRouted(t *testing.T, client routerv1.RouterServiceClient, model string, maxTokens int32) shardChat {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := client.Chat(ctx, &routerv1.ChatRequest{
		Model:    model,
		Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "hello"}},
		Options:  &commonv1.GenerationOptions{MaxTokens: proto.Int32(maxTokens), Temperature: proto.Float64(0)},
	})
	if err != nil {
		return shardChat{err: err}
	}
	var r shardChat
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		switch {
		case msg.GetProgress() != nil:
			require.Zero(t, r.chunks, "progress comes only before the first token")
			r.progress++
		case msg.GetChunk() != nil:
			r.chunks++
		case msg.GetDone() != nil:
			r.done = msg.GetDone()
		}
	}
}

func rpcServers(t *testing.T, n int, free uint64) ([]*rpcservertest.Process, []string) {
	var procs []*rpcservertest.Process
	var addrs []string
	for range n {
		p := rpcservertest.Start(t, rpcservertest.Options{Devices: []rpcserver.DeviceMemory{{Free: free, Total: free}}})
		procs = append(procs, p)
		addrs = append(addrs, p.Addr())
	}
	return procs, addrs
}

// Hybrid: a model that fits a node goes to the pool; one that no node has is sharded, with
// the cold start's progress streamed before its first token.
func TestRouterHybridSendsSmallToPoolAndLargeToShard(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	_, rpcAddrs := rpcServers(t, 2, 2<<30)
	bigFile := tinyModelFile(t, "bigshard")
	m := startMesh(t, meshOptions{
		ollamaNodes: []string{ollama.Addr()}, rpcBackends: rpcAddrs,
		taskDistribution: "on", modelSharding: "on",
		shardModels: map[string]string{"bigshard": bigFile},
	})
	m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL })
	// No node lists bigshard; its size comes from the GGUF file the coordinator-manager holds.
	d := m.waitRoute(t, "bigshard", func(d *routerv1.Decision) bool {
		return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_SHARD && d.GetModelSize().GetSource() == routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_GGUF_METADATA
	})
	require.False(t, d.GetModelSize().GetIsGuess())
	require.Greater(t, d.GetModelSize().GetBytes(), fileSize(t, bigFile), "weights plus KV cache and compute buffers")
	tinySize := m.waitRoute(t, "tiny", func(*routerv1.Decision) bool { return true }).GetModelSize()
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_OLLAMA_METADATA, tinySize.GetSource(), "the manager does not have tiny: its node's listing sizes it")
	requireListed(t, m, serveHTTP(t, m), "bigshard", "tiny")

	small := chatRouted(t, m.client, "tiny", 8)
	require.NoError(t, small.err)
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_POOL, small.done.GetRoute().GetPath())
	require.Equal(t, 8, small.chunks)

	large := chatRouted(t, m.client, "bigshard", 8)
	require.NoError(t, large.err)
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_SHARD, large.done.GetRoute().GetPath())
	require.Equal(t, 8, large.chunks)
	require.EqualValues(t, 8, large.done.GetUsage().GetCompletionTokens())
	require.Positive(t, large.progress, "the cold start streamed its progress")

	stats, err := m.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.GetRequests().GetPool())
	require.EqualValues(t, 1, stats.GetRequests().GetShard())
	require.EqualValues(t, 2, stats.GetRpc().GetBackendsHealthy())
}

// The pool fails before the first token (its only node died; discovery has not noticed yet):
// the request is served by sharding and says so.
func TestRouterFallsBackFromPoolToShard(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	_, rpcAddrs := rpcServers(t, 2, 2<<30)
	m := startMesh(t, meshOptions{
		ollamaNodes: []string{ollama.Addr()}, rpcBackends: rpcAddrs, probeInterval: time.Minute,
		taskDistribution: "on", modelSharding: "on",
		shardModels: map[string]string{"tiny": tinyModelFile(t, "tiny")},
	})
	m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool {
		return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL && d.GetFallback() == commonv1.RoutePath_ROUTE_PATH_SHARD
	})
	ollama.Kill()

	r := chatRouted(t, m.client, "tiny", 8)
	require.NoError(t, r.err)
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_SHARD, r.done.GetRoute().GetPath())
	require.Contains(t, r.done.GetRoute().GetFallbackReason(), "pool failed before the first token")
	require.Equal(t, 8, r.chunks)
	stats, err := m.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.GetFallbacks().GetPoolToShard())
}

// Sharding leads (the model fits no node's free memory) and fails before the first token
// (its rpc-servers died; discovery has not noticed yet): a node that has the model installed
// serves it instead, and says so.
func TestRouterFallsBackFromShardToPool(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	procs, rpcAddrs := rpcServers(t, 2, 2<<30)
	m := startMesh(t, meshOptions{
		rpcBackends: rpcAddrs, probeInterval: time.Minute,
		taskDistribution: "on", modelSharding: "on",
		shardModels: map[string]string{"tiny": tinyModelFile(t, "tiny")},
	})
	// A node agent's record of the Ollama node: it has the model but reports almost no free
	// memory, so the model (sized from its GGUF file) fits no node and is sharded first.
	store := registry.NewStore(m.etcd.Client(), registry.BackendsPrefix, registry.ProtoJSON(func() *commonv1.Backend { return &commonv1.Backend{} }))
	require.NoError(t, store.Put(context.Background(), "ollama@agent", &commonv1.Backend{
		Id: "ollama@agent", Kind: commonv1.BackendKind_BACKEND_KIND_OLLAMA, Address: ollama.Addr(),
		Health:          commonv1.HealthState_HEALTH_STATE_HEALTHY,
		InstalledModels: []*commonv1.InstalledModel{{Name: "tiny:latest", SizeBytes: 1 << 30}},
		Capacity:        &commonv1.Capacity{TotalBytes: 8 << 30, FreeBytes: 64 << 10},
	}))
	m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool {
		return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_SHARD && d.GetFallback() == commonv1.RoutePath_ROUTE_PATH_POOL &&
			d.GetModelSize().GetSource() == routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_GGUF_METADATA
	})
	for _, p := range procs {
		p.Kill()
	}

	r := chatRouted(t, m.client, "tiny", 8)
	require.NoError(t, r.err)
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_POOL, r.done.GetRoute().GetPath())
	require.True(t, strings.HasPrefix(r.done.GetRoute().GetFallbackReason(), "sharding failed before the first token"), r.done.GetRoute().GetFallbackReason())
	require.Equal(t, 8, r.chunks)
	stats, err := m.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.GetFallbacks().GetShardToPool())
}

// Pure RPC with rpc-servers present: even a model an Ollama node has is sharded, and the
// pool never sees a request (nor does the router ever connect to it).
func TestRouterPureRPCShardsEvenWhatANodeHas(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	_, rpcAddrs := rpcServers(t, 2, 2<<30)
	m := startMesh(t, meshOptions{
		ollamaNodes: []string{ollama.Addr()}, rpcBackends: rpcAddrs,
		taskDistribution: "off", modelSharding: "on",
		shardModels: map[string]string{"tiny": tinyModelFile(t, "tiny")},
	})
	d := m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_SHARD })
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED, d.GetFallback(), "no pool fallback when task distribution is off")
	r := chatRouted(t, m.client, "tiny", 8)
	require.NoError(t, r.err)
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_SHARD, r.done.GetRoute().GetPath())
	require.False(t, m.router.PoolConnected())
	stats, err := m.pool.GetStats(context.Background(), nil)
	require.NoError(t, err)
	require.Zero(t, stats.GetRequestsTotal())
}

// Auto-discovery: with rpc-servers found, sharding is available (a model only the
// coordinator-manager has is sharded); with none, everything goes to the pool.
func TestRouterAutoDiscoveryUsesWhatItFinds(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	_, rpcAddrs := rpcServers(t, 1, 2<<30)
	withRPC := startMesh(t, meshOptions{
		ollamaNodes: []string{ollama.Addr()}, rpcBackends: rpcAddrs,
		shardModels: map[string]string{"bigshard": tinyModelFile(t, "bigshard")},
	})
	// Each switch turns on as discovery finds its first backend of that kind.
	d := withRPC.waitRoute(t, "bigshard", func(d *routerv1.Decision) bool {
		return d.GetMode().GetModelSharding() && d.GetMode().GetTaskDistribution()
	})
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_SHARD, d.GetPath(), "only the coordinator-manager has it")
	withRPC.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL })

	poolOnly := startMesh(t, meshOptions{ollamaNodes: []string{ollama.Addr()}})
	d = poolOnly.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL })
	require.False(t, d.GetMode().GetModelSharding(), "auto with no rpc-server found leaves sharding off")
	r := chatRouted(t, poolOnly.client, "tiny", 4)
	require.NoError(t, r.err)
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_POOL, r.done.GetRoute().GetPath())
}

func fileSize(t *testing.T, path string) uint64 {
	st, err := os.Stat(path)
	require.NoError(t, err)
	return uint64(st.Size())
}

// requireListed checks that the router lists the shard-only model (no pool node, shardable,
// sized from GGUF) and the pool model, over gRPC and in the Ollama and OpenAI model lists.
func requireListed(t *testing.T, m *inProcessMesh, baseURL, shardOnly, pooled string) {
	t.Helper()
	resp, err := m.client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
	require.NoError(t, err)
	byName := map[string]*routerv1.Model{}
	for _, model := range resp.GetModels() {
		byName[strings.TrimSuffix(model.GetName(), ":latest")] = model
	}
	require.Contains(t, byName, shardOnly)
	require.Empty(t, byName[shardOnly].GetPoolNodes())
	require.True(t, byName[shardOnly].GetShardable())
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_GGUF_METADATA, byName[shardOnly].GetSize().GetSource())
	require.Contains(t, byName, pooled)
	require.NotEmpty(t, byName[pooled].GetPoolNodes())

	for path, field := range map[string]string{"/api/tags": "models", "/v1/models": "data"} {
		_, body, err := httpGet(baseURL + path)
		require.NoError(t, err)
		var list map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(body), &list), path)
		var entries []struct {
			Name string `json:"name"` // Ollama
			ID   string `json:"id"`   // OpenAI
		}
		require.NoError(t, json.Unmarshal(list[field], &entries), path)
		var names []string
		for _, e := range entries {
			name := e.Name + e.ID
			names = append(names, strings.TrimSuffix(name, ":latest"))
		}
		require.Contains(t, names, shardOnly, path)
		require.Contains(t, names, pooled, path)
	}
}
