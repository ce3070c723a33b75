package ollamapool_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// With the only node full, requests wait in priority order; a full queue refuses at once.
func TestSaturatedPoolQueuesByPriorityAndRefusesWhenFull(t *testing.T) {
	node := tinyNode(t)
	// The first chat is held at a proxy in front of the node until its client leaves: it
	// occupies the pool's only slot for as long as the test wants, without keeping Ollama
	// itself busy (the queued requests then run on an idle node).
	target, err := url.Parse(node.URL())
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	var chats atomic.Int32
	held := make(chan struct{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat" && chats.Add(1) == 1 {
			// Read the body first: only then does the server watch the connection, so the
			// request's context ends when the pool hangs up.
			_, _ = io.Copy(io.Discard, r.Body)
			close(held)
			<-r.Context().Done()
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	f := newFixture(t, func(c *ollamapool.Config) {
		c.MaxInFlightPerNode = 1
		c.QueueSize = 2
	})
	f.publish(front.Listener.Addr().String(), "tiny:latest")
	ctx := context.Background()

	blockCtx, unblock := context.WithCancel(ctx)
	defer unblock()
	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		f.chat(blockCtx, "hold the node", 8, nil)
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the blocking request never reached the node")
	}

	low := make(chan chatResult, 1)
	high := make(chan chatResult, 1)
	go func() {
		low <- f.chat(ctx, "low", 200, func(r *ollamapoolv1.ChatRequest) { r.Priority = 1 })
	}()
	waitQueue(t, f, 1)
	go func() {
		high <- f.chat(ctx, "high", 200, func(r *ollamapoolv1.ChatRequest) { r.Priority = 9 })
	}()
	waitQueue(t, f, 2)

	refused := f.chat(ctx, "one too many", 8, nil)
	require.Equal(t, codes.ResourceExhausted, status.Code(refused.err), "%v", refused.err)
	require.Equal(t, "POOL_SATURATED", rpcerr.Reason(refused.err))

	unblock()
	<-blocked
	h, l := <-high, <-low
	require.NoError(t, h.err)
	require.NoError(t, l.err)
	require.True(t, h.firstChunk.Before(l.firstChunk), "priority 9 must be served before priority 1, which came first")
	stats, err := f.client.GetStats(ctx, &ollamapoolv1.GetStatsRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.GetQueueRejectionsTotal())
}

func waitQueue(t *testing.T, f *fixture, depth uint32) {
	t.Helper()
	require.Eventually(t, func() bool {
		stats, err := f.client.GetStats(context.Background(), &ollamapoolv1.GetStatsRequest{})
		return err == nil && stats.GetQueueDepth() == depth
	}, 10*time.Second, 5*time.Millisecond)
}

func TestBadRequestsNameTheField(t *testing.T) {
	node := tinyNode(t)
	f := newFixture(t, nil)
	f.publish(node.Addr(), "tiny:latest")
	ctx := context.Background()
	tests := []struct {
		name   string
		mutate func(*ollamapoolv1.ChatRequest)
		field  string
	}{
		{"no model", func(r *ollamapoolv1.ChatRequest) { r.Model = "" }, "model"},
		{"no messages", func(r *ollamapoolv1.ChatRequest) { r.Messages = nil }, "messages"},
		{"unknown role", func(r *ollamapoolv1.ChatRequest) { r.Messages[0].Role = 99 }, "messages[0].role"},
		{"empty message", func(r *ollamapoolv1.ChatRequest) { r.Messages[0].Content = "" }, "messages[0].content"},
		{"negative temperature", func(r *ollamapoolv1.ChatRequest) { r.Options.Temperature = proto.Float64(-0.5) }, "options.temperature"},
		{"absurd max tokens", func(r *ollamapoolv1.ChatRequest) { r.Options.MaxTokens = proto.Int32(-3) }, "options.max_tokens"},
		{"priority out of range", func(r *ollamapoolv1.ChatRequest) { r.Priority = 11 }, "priority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.chat(ctx, "hi", 4, tt.mutate)
			require.Equal(t, codes.InvalidArgument, status.Code(r.err), "%v", r.err)
			require.Contains(t, status.Convert(r.err).Message(), tt.field)
		})
	}

	unknown := f.chat(ctx, "hi", 4, func(r *ollamapoolv1.ChatRequest) { r.Model = "llama3:70b" })
	require.Equal(t, codes.NotFound, status.Code(unknown.err))
	require.Contains(t, status.Convert(unknown.err).Message(), "tiny:latest", "NOT_FOUND lists the models that exist")

	_, err := f.client.Embed(ctx, &ollamapoolv1.EmbedRequest{Model: "tiny", Inputs: []string{"a", ""}})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "inputs[1]")

	gen, err := f.client.Generate(ctx, &ollamapoolv1.GenerateRequest{Model: "tiny"})
	require.NoError(t, err)
	_, err = gen.Recv()
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "prompt")
}

func TestEmptyPoolSaysWhatToConfigure(t *testing.T) {
	f := newFixture(t, nil)
	r := f.chat(context.Background(), "hi", 4, nil)
	require.Equal(t, codes.Unavailable, status.Code(r.err))
	require.Contains(t, status.Convert(r.err).Message(), "--discovery.ollama-nodes")
}

func TestGenerateStreamsFromARealNode(t *testing.T) {
	node := tinyNode(t)
	f := newFixture(t, nil)
	id := f.publish(node.Addr(), "tiny:latest")
	stream, err := f.client.Generate(context.Background(), &ollamapoolv1.GenerateRequest{
		Model: "tiny", Prompt: "once upon a time",
		Options: &commonv1.GenerationOptions{MaxTokens: proto.Int32(12), Temperature: proto.Float64(0)},
	})
	require.NoError(t, err)
	chunks := 0
	var done *commonv1.Done
	for {
		msg, err := stream.Recv()
		if err != nil {
			break
		}
		if msg.GetChunk() != nil {
			chunks++
		}
		if msg.GetDone() != nil {
			done = msg.GetDone()
		}
	}
	require.NotNil(t, done)
	require.Equal(t, 12, chunks)
	require.EqualValues(t, 12, done.GetUsage().GetCompletionTokens())
	require.Equal(t, id, done.GetRoute().GetBackend())
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_POOL, done.GetRoute().GetPath())
	require.EqualValues(t, 1, done.GetRoute().GetAttempts())
	require.Positive(t, done.GetTimings().GetTimeToFirstToken().AsDuration())
}
