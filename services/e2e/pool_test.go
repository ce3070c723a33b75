package e2e

import (
	"context"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// The built binary wires discovery, etcd and the pool together: an Ollama named on the
// command line is verified by discovery, written to the embedded etcd, picked up by the pool,
// and answers a chat through the pool's gRPC API.
func TestUpServesAChatFromARealOllamaThroughDiscoveryAndThePool(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	ports := freePorts(t)
	args := append([]string{"up", "--data-dir", t.TempDir(), "--discovery.ollama-nodes", ollama.URL(),
		"--discovery.local-defaults=false"}, ports.args()...)
	p := startSollol(t, args...)

	conn, err := grpc.NewClient(ports.pool, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	pool := ollamapoolv1.NewOllamaPoolServiceClient(conn)
	require.Eventually(t, func() bool {
		resp, err := pool.ListNodes(context.Background(), &ollamapoolv1.ListNodesRequest{AvailableOnly: true})
		return err == nil && len(resp.GetNodes()) == 1
	}, 30*time.Second, 50*time.Millisecond, "the pool never saw the Ollama node")

	stream, err := pool.Chat(context.Background(), &ollamapoolv1.ChatRequest{
		Model:    "tiny",
		Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "hello"}},
		Options:  &commonv1.GenerationOptions{MaxTokens: proto.Int32(8)},
	}, grpc.WaitForReady(true))
	require.NoError(t, err)
	chunks := 0
	var done *commonv1.Done
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if msg.GetChunk() != nil {
			chunks++
		}
		if msg.GetDone() != nil {
			done = msg.GetDone()
		}
	}
	require.Equal(t, 8, chunks)
	require.EqualValues(t, 8, done.GetUsage().GetCompletionTokens())
	require.Contains(t, done.GetRoute().GetBackend(), "ollama@")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.waitExit(20*time.Second))
	require.False(t, p.groupAlive())
}
