package e2e

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/rpcerr"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

func chatThroughRouter(t *testing.T, client routerv1.RouterServiceClient, model string, maxTokens int32, hint commonv1.RouteHint) (int, *commonv1.Done, error) {
	t.Helper()
	stream, err := client.Chat(context.Background(), &routerv1.ChatRequest{
		Model:    model,
		Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "hello"}},
		Options:  &commonv1.GenerationOptions{MaxTokens: proto.Int32(maxTokens)},
		Hint:     hint,
	})
	if err != nil {
		return 0, nil, err
	}
	chunks := 0
	var done *commonv1.Done
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return chunks, done, nil
		}
		if err != nil {
			return chunks, done, err
		}
		if msg.GetChunk() != nil {
			chunks++
		}
		if d := msg.GetDone(); d != nil {
			require.Nil(t, done, "exactly one terminal event")
			done = d
		}
	}
}

// Ollama-only: task distribution on, sharding off. Requests go to the pool.
func TestRouterOllamaOnlyServesFromThePool(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	m := startMesh(t, meshOptions{ollamaNodes: []string{ollama.Addr()}, taskDistribution: "on", modelSharding: "off"})
	d := m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL })
	require.Equal(t, routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_OLLAMA_METADATA, d.GetModelSize().GetSource())
	require.False(t, d.GetModelSize().GetIsGuess())

	chunks, done, err := chatThroughRouter(t, m.client, "tiny", 10, commonv1.RouteHint_ROUTE_HINT_UNSPECIFIED)
	require.NoError(t, err)
	require.Equal(t, 10, chunks)
	require.EqualValues(t, 10, done.GetUsage().GetCompletionTokens())
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_POOL, done.GetRoute().GetPath())
	require.Contains(t, done.GetRoute().GetBackend(), "ollama@")

	// A model nobody has, with sharding off: an immediate NOT_FOUND that lists what exists
	// and says what to do, never a hang.
	_, _, err = chatThroughRouter(t, m.client, "llama3:70b", 10, commonv1.RouteHint_ROUTE_HINT_UNSPECIFIED)
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Equal(t, "MODEL_NOT_FOUND", rpcerr.Reason(err))
	require.Contains(t, status.Convert(err).Message(), "tiny:latest")
	require.Contains(t, status.Convert(err).Message(), "install the model on an Ollama node")

	stats, err := m.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.GetRequests().GetPool())
	require.EqualValues(t, 1, stats.GetPool().GetNodesHealthy())
	require.Nil(t, stats.GetRpc(), "sharding is off, so there is no rpc section")
}

// Pure RPC: sharding on, task distribution off. Even with an Ollama node and a pool running,
// the pool is never used — the router never even connects to it — and with no rpc-server
// the answer is an explicit error.
func TestRouterPureRPCNeverTouchesThePool(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	m := startMesh(t, meshOptions{ollamaNodes: []string{ollama.Addr()}, taskDistribution: "off", modelSharding: "on"})
	d := m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetError() != "" })
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED, d.GetPath())
	require.False(t, d.GetMode().GetTaskDistribution())

	_, _, err := chatThroughRouter(t, m.client, "tiny", 10, commonv1.RouteHint_ROUTE_HINT_UNSPECIFIED)
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "--discovery.rpc-backends")
	_, _, err = chatThroughRouter(t, m.client, "tiny", 10, commonv1.RouteHint_ROUTE_HINT_POOL)
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "a pool hint is refused, not obeyed")
	require.Contains(t, status.Convert(err).Message(), "task distribution is off")

	require.False(t, m.router.PoolConnected(), "pure RPC mode must never create a pool connection")
	stats, err := m.pool.GetStats(context.Background(), nil)
	require.NoError(t, err)
	require.Zero(t, stats.GetRequestsTotal(), "the pool must not see a single request")
}

// GetStats and ListModels work with parts missing (here: no pool replica at all).
func TestRouterStatsWithoutAPool(t *testing.T) {
	m := startMesh(t, meshOptions{noPool: true})
	stats, err := m.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	require.False(t, stats.GetMode().GetTaskDistribution(), "auto with no Ollama node found is off")
	models, err := m.client.ListModels(context.Background(), &routerv1.ListModelsRequest{})
	require.NoError(t, err)
	require.Empty(t, models.GetModels())
	_, _, err = chatThroughRouter(t, m.client, "tiny", 4, commonv1.RouteHint_ROUTE_HINT_UNSPECIFIED)
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "Add Ollama nodes")
}
