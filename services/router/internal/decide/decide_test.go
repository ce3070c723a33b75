package decide_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/router/internal/decide"
)

const gib = 1 << 30

func ollama(id string, models ...string) *commonv1.Backend {
	b := &commonv1.Backend{Id: id, Kind: commonv1.BackendKind_BACKEND_KIND_OLLAMA, Health: commonv1.HealthState_HEALTH_STATE_HEALTHY}
	for _, m := range models {
		b.InstalledModels = append(b.InstalledModels, &commonv1.InstalledModel{Name: m, SizeBytes: 2 * gib})
	}
	return b
}

func rpc(id string, free uint64) *commonv1.Backend {
	return &commonv1.Backend{Id: id, Kind: commonv1.BackendKind_BACKEND_KIND_RPC, Health: commonv1.HealthState_HEALTH_STATE_HEALTHY,
		Capacity: &commonv1.Capacity{FreeBytes: free, TotalBytes: free}}
}

var (
	pool  = commonv1.RoutePath_ROUTE_PATH_POOL
	shard = commonv1.RoutePath_ROUTE_PATH_SHARD
	none  = commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED
)

func mode(td, ms decide.Switch) decide.Mode {
	return decide.Mode{TaskDistribution: td, ModelSharding: ms, Fallback: true}
}

// full is a fleet with both kinds of backend and both services running.
var full = decide.View{
	Backends:      []*commonv1.Backend{ollama("o1", "small:latest"), rpc("r1", 30*gib), rpc("r2", 30*gib)},
	PoolInstances: 1, CoordinatorInstances: 1,
}

func TestSeedConfigurations(t *testing.T) {
	small := decide.Request{Model: "small", Size: decide.Size{Bytes: 3 * gib, Source: routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_OLLAMA_METADATA}}
	large := decide.Request{Model: "llama3:70b", Size: decide.Size{Bytes: 45 * gib, Source: routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_GGUF_METADATA}}
	tests := []struct {
		name     string
		mode     decide.Mode
		view     decide.View
		req      decide.Request
		path     commonv1.RoutePath
		fallback commonv1.RoutePath
		errHas   string
	}{
		// Pure RPC: task distribution off, sharding on. The pool is never used, even for a
		// model an Ollama node has (the seed's fix: no pool when RPC is configured and task
		// distribution is off).
		{"pure rpc, small model", mode(decide.Off, decide.On), full, small, shard, none, ""},
		{"pure rpc, large model", mode(decide.Off, decide.On), full, large, shard, none, ""},
		{"pure rpc without rpc-servers", mode(decide.Off, decide.On), decide.View{Backends: []*commonv1.Backend{ollama("o1", "small")}, PoolInstances: 1, CoordinatorInstances: 1}, small, none, none, "--discovery.rpc-backends"},
		// Hybrid: fits one node → pool (shard as fallback); fits none → shard.
		{"hybrid, small model", mode(decide.On, decide.On), full, small, pool, shard, ""},
		{"hybrid, large model", mode(decide.On, decide.On), full, large, shard, none, ""},
		// Ollama-only: the pool or nothing.
		{"ollama only, small model", mode(decide.On, decide.Off), full, small, pool, none, ""},
		{"ollama only, large model", mode(decide.On, decide.Off), full, large, none, none, "install the model on an Ollama node"},
		// Auto-discovery: rpc-servers found → sharding available; none → pool only.
		{"auto, rpc found, large", mode(decide.Auto, decide.Auto), full, large, shard, none, ""},
		{"auto, rpc found, small", mode(decide.Auto, decide.Auto), full, small, pool, shard, ""},
		{"auto, no rpc", mode(decide.Auto, decide.Auto), decide.View{Backends: []*commonv1.Backend{ollama("o1", "small")}, PoolInstances: 1}, small, pool, none, ""},
		// Nothing at all: an immediate error that says what to configure.
		{"auto, nothing", mode(decide.Auto, decide.Auto), decide.View{}, small, none, none, "Add Ollama nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide.Decide(tt.mode, tt.view, tt.req)
			require.Equal(t, tt.path, d.GetPath(), "reason: %s; error: %s", d.GetReason(), d.GetError())
			require.Equal(t, tt.fallback, d.GetFallback())
			if tt.errHas == "" {
				require.Empty(t, d.GetError())
				require.NotEmpty(t, d.GetReason())
			} else {
				require.Contains(t, d.GetError(), tt.errHas)
			}
			require.Len(t, d.GetCandidates(), 2, "both paths are always explained")
		})
	}
}

func TestHintsAreObeyedOrRefusedWithAReason(t *testing.T) {
	small := decide.Request{Model: "small", Size: decide.Size{Bytes: 3 * gib}}
	d := decide.Decide(mode(decide.On, decide.On), full, withHint(small, commonv1.RouteHint_ROUTE_HINT_SHARD))
	require.Equal(t, shard, d.GetPath(), "a small model may still be sharded when asked")
	require.Equal(t, none, d.GetFallback(), "an explicit hint has no fallback")
	require.Contains(t, d.GetReason(), "asked for sharding")

	d = decide.Decide(mode(decide.Off, decide.On), full, withHint(small, commonv1.RouteHint_ROUTE_HINT_POOL))
	require.Equal(t, none, d.GetPath(), "the pool hint is refused when task distribution is off")
	require.Contains(t, d.GetError(), "task distribution is off")
}

func TestShardingFallsBackToANodeThatHasTheModel(t *testing.T) {
	tight := ollama("o1", "mid")
	tight.Capacity = &commonv1.Capacity{TotalBytes: 16 * gib, FreeBytes: 4 * gib}
	v := decide.View{Backends: []*commonv1.Backend{tight, rpc("r1", 30*gib)}, PoolInstances: 1, CoordinatorInstances: 1}
	d := decide.Decide(mode(decide.On, decide.On), v, decide.Request{Model: "mid", Size: decide.Size{Bytes: 8 * gib}})
	require.Equal(t, shard, d.GetPath(), "it fits no node, so it is sharded")
	require.Equal(t, pool, d.GetFallback(), "the node that has it installed is the fallback")

	noFallback := mode(decide.On, decide.On)
	noFallback.Fallback = false
	d = decide.Decide(noFallback, v, decide.Request{Model: "mid", Size: decide.Size{Bytes: 8 * gib}})
	require.Equal(t, none, d.GetFallback(), "fallback can be switched off")
}

func TestCapacityIsChecked(t *testing.T) {
	tight := decide.View{Backends: []*commonv1.Backend{rpc("r1", 10*gib)}, CoordinatorInstances: 1}
	d := decide.Decide(mode(decide.Off, decide.On), tight, decide.Request{Model: "big", Size: decide.Size{Bytes: 40 * gib}})
	require.Equal(t, none, d.GetPath())
	require.Contains(t, d.GetError(), "10.0 GiB free together; big needs 40.0 GiB")

	noManager := decide.View{Backends: []*commonv1.Backend{rpc("r1", 100*gib)}}
	d = decide.Decide(mode(decide.Off, decide.On), noManager, decide.Request{Model: "big", Size: decide.Size{Bytes: 40 * gib}})
	require.Contains(t, d.GetError(), "no coordinator-manager service is running")

	node := ollama("o1", "mid")
	node.Capacity = &commonv1.Capacity{TotalBytes: 16 * gib, FreeBytes: 4 * gib}
	d = decide.Decide(mode(decide.On, decide.Off), decide.View{Backends: []*commonv1.Backend{node}, PoolInstances: 1}, decide.Request{Model: "mid", Size: decide.Size{Bytes: 8 * gib}})
	require.Equal(t, none, d.GetPath(), "a node that reports too little free memory does not fit")
	require.Contains(t, d.GetError(), "none has the 8.0 GiB it needs free")

	down := ollama("o1", "small")
	down.Health = commonv1.HealthState_HEALTH_STATE_DOWN
	d = decide.Decide(mode(decide.On, decide.Off), decide.View{Backends: []*commonv1.Backend{down}, PoolInstances: 1}, decide.Request{Model: "small"})
	require.Contains(t, d.GetError(), "no healthy Ollama node has small")
}

func TestSizeEstimates(t *testing.T) {
	v := decide.View{Backends: []*commonv1.Backend{ollama("o1", "known:7b")}}
	s := decide.Estimate(v, "known:7b", 1024)
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_OLLAMA_METADATA, s.Source)
	require.False(t, s.IsGuess())
	require.EqualValues(t, 2*gib+1024*128<<10, s.Bytes)

	guess := decide.Estimate(v, "llama3:70b", 0)
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_NAME_GUESS, guess.Source)
	require.True(t, guess.IsGuess(), "a name-based size is reported as a guess")
	require.InDelta(t, 42e9, float64(guess.Bytes), 2e9)

	// A node that described the model's shape: its KV cost per token, and the default
	// context within the trained one.
	described := ollama("o2", "shaped:1b")
	described.InstalledModels[0].KvBytesPerToken, described.InstalledModels[0].ContextLength = 512, 2048
	shaped := decide.View{Backends: []*commonv1.Backend{described}}
	require.EqualValues(t, 2*gib+1024*512, decide.Estimate(shaped, "shaped:1b", 1024).Bytes)
	require.EqualValues(t, 2*gib+2048*512, decide.Estimate(shaped, "shaped:1b", 0).Bytes)

	moe := decide.Estimate(v, "mixtral:8x7b", 0)
	require.InDelta(t, 56*0.6e9, float64(moe.Bytes), 2e9)
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_UNKNOWN, decide.Estimate(v, "mystery", 0).Source)
}

func TestGGUFMetadataWinsOverEveryOtherSource(t *testing.T) {
	line := decide.GGUF{BaseBytes: 5 * gib, KVBytesPerToken: 1 << 17, MaxContext: 2048}
	v := decide.View{
		Backends: []*commonv1.Backend{ollama("o1", "known:7b")},
		Models:   map[string]decide.GGUF{"known:7b": line, "llama3:70b": {BaseBytes: 40 * gib, KVBytesPerToken: 1 << 18}},
	}
	s := decide.Estimate(v, "Known:7b", 1024)
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_GGUF_METADATA, s.Source, "over the Ollama listing")
	require.False(t, s.IsGuess())
	require.EqualValues(t, 5*gib+1024<<17, s.Bytes)
	require.EqualValues(t, 5*gib+2048<<17, decide.Estimate(v, "known:7b", 0).Bytes, "no context asked: the default, within the trained context")
	require.EqualValues(t, 5*gib+8192<<17, decide.Estimate(v, "known:7b", 8192).Bytes, "an explicit context is sized as asked")

	big := decide.Estimate(v, "llama3:70b", 0)
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_GGUF_METADATA, big.Source, "over the name")
	require.EqualValues(t, 40*gib+4096<<18, big.Bytes, "no trained context known: the default context")

	// The sized model decides the path: it fits no node's free memory, so it is sharded.
	node := ollama("o1", "llama3:70b")
	node.Capacity = &commonv1.Capacity{TotalBytes: 64 * gib, FreeBytes: 24 * gib}
	shards := rpc("r1", 48*gib)
	d := decide.Decide(mode(decide.On, decide.On), decide.View{Backends: []*commonv1.Backend{node, shards}, PoolInstances: 1, CoordinatorInstances: 1, Models: v.Models},
		decide.Request{Model: "llama3:70b", Size: big})
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_SHARD, d.GetPath(), d.GetReason())
}

func withHint(r decide.Request, h commonv1.RouteHint) decide.Request {
	r.Hint = h
	return r
}
