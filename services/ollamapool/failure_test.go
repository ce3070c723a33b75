package ollamapool_test

import (
	"context"
	"fmt"
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

	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	"github.com/sollol/mesh/services/ollamapool"
	"github.com/sollol/mesh/services/shared/rpcerr"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// Kill one node while requests run: every request that had not received a token completes
// on the other node; one that had ends with an error naming the dead node.
func TestKilledNodeLosesOnlyStreamsThatHadStarted(t *testing.T) {
	a, b := tinyNode(t), tinyNode(t)
	f := newFixture(t, func(c *ollamapool.Config) { c.MaxInFlightPerNode = 2 })
	idA := f.publish(a.Addr(), "tiny:latest")
	f.publish(b.Addr(), "tiny:latest")

	const requests = 24
	results := make([]chatResult, requests)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	started := make(chan struct{})
	var firstTokens atomic.Int32
	go func() {
		// Kill A once streams are under way on both nodes and many requests still wait.
		require.Eventually(t, func() bool { return firstTokens.Load() >= 2 }, time.Minute, time.Millisecond)
		a.Kill()
		close(started)
	}()
	parallel(requests, func(i int) {
		results[i] = f.chatCounting(ctx, fmt.Sprintf("long question %d", i), 400, &firstTokens)
	})
	<-started

	completed, brokenOnA := 0, 0
	for i, r := range results {
		if r.err == nil {
			require.NotNil(t, r.done, "request %d", i)
			require.EqualValues(t, 400, r.done.GetUsage().GetCompletionTokens())
			completed++
			continue
		}
		// The only acceptable failure: a stream that had already started on A.
		require.Positive(t, r.chunks, "request %d failed before its first token: %v", i, r.err)
		require.Equal(t, "BACKEND_FAILED_MID_STREAM", rpcerr.Reason(r.err), "request %d: %v", i, r.err)
		require.Contains(t, status.Convert(r.err).Message(), a.Addr(), "the error names the node")
		brokenOnA++
	}
	require.Equal(t, requests, completed+brokenOnA)
	require.Greater(t, completed, requests/2)
	t.Logf("%d completed, %d broken mid-stream on the killed node %s", completed, brokenOnA, idA)
}

// A node with one slot and a queue of one answers 503 when full; the pool must route around
// it instead of hammering it.
func TestBusyNodeIsRoutedAround(t *testing.T) {
	busy := tinyNode(t, ollamatest.WithNumParallel(1), ollamatest.WithMaxQueue(1))
	roomy := tinyNode(t)
	f := newFixture(t, func(c *ollamapool.Config) { c.MaxInFlightPerNode = 8 })
	busyID := f.publish(busy.Addr(), "tiny:latest")
	roomyID := f.publish(roomy.Addr(), "tiny:latest")

	const requests = 32
	results := make([]chatResult, requests)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	parallel(requests, func(i int) { results[i] = f.chat(ctx, fmt.Sprintf("q%d", i), 200, nil) })

	served := map[string]int{}
	for i, r := range results {
		require.NoError(t, r.err, "request %d", i)
		served[r.done.GetRoute().GetBackend()]++
	}
	nodes, err := f.client.ListNodes(ctx, &ollamapoolv1.ListNodesRequest{})
	require.NoError(t, err)
	var busyAnswers uint64
	for _, n := range nodes.GetNodes() {
		if n.GetBackend().GetId() == busyID {
			busyAnswers = n.GetErrorsByClass()["busy"]
		}
	}
	require.Positive(t, busyAnswers, "the small node must have shed load with 503")
	require.Less(t, busyAnswers, uint64(requests/4), "after a 503 the node is left alone for a while, not hammered")
	// Between its 503s the small node is as fast as the other, so it keeps a fair share; what
	// matters is that every request succeeded and the 503s stayed few.
	require.Positive(t, served[roomyID], "the roomy node takes work: %v", served)
	t.Logf("served %v; the small node answered busy %d times", served, busyAnswers)
}

// Cancelling a stream cancels the request to Ollama too.
func TestClientCancelCancelsTheUpstreamRequest(t *testing.T) {
	node := tinyNode(t)
	target, err := url.Parse(node.URL())
	require.NoError(t, err)
	var upstreamCancelled, upstreamStarted atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	recording := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat" {
			upstreamStarted.Add(1)
			go func() {
				<-r.Context().Done()
				upstreamCancelled.Add(1)
			}()
			// After a few chunks the node goes quiet, so only the pool passing the client's
			// cancellation on (not a failed send of a later chunk) can end the request.
			w = &stallingWriter{ResponseWriter: w, after: 3, until: r.Context().Done()}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(recording.Close)
	f := newFixture(t, nil)
	f.publish(recording.Listener.Addr().String(), "tiny:latest")

	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.client.Chat(ctx, chatRequest("tell me everything", 5000))
	require.NoError(t, err)
	for range 3 {
		_, err := stream.Recv()
		require.NoError(t, err)
	}
	cancel()
	for err == nil { // chunks already in flight may still arrive
		_, err = stream.Recv()
	}
	require.Equal(t, codes.Canceled, status.Code(err))
	require.Eventually(t, func() bool { return upstreamCancelled.Load() == 1 }, 10*time.Second, 10*time.Millisecond,
		"the pool kept the Ollama request running after its client left")
	require.EqualValues(t, 1, upstreamStarted.Load())
	require.Eventually(t, func() bool {
		stats, err := f.client.GetStats(context.Background(), &ollamapoolv1.GetStatsRequest{})
		return err == nil && stats.GetInFlight() == 0 && stats.GetNodes()[0].GetInFlight() == 0
	}, 10*time.Second, 10*time.Millisecond, "the cancelled request must leave the node's slot")
}

// stallingWriter passes the first writes through, then blocks until done (or 30 s).
type stallingWriter struct {
	http.ResponseWriter
	after  int
	writes int
	until  <-chan struct{}
}

func (s *stallingWriter) Write(p []byte) (int, error) {
	s.writes++
	if s.writes > s.after {
		select {
		case <-s.until:
		case <-time.After(30 * time.Second):
		}
		return 0, http.ErrAbortHandler
	}
	n, err := s.ResponseWriter.Write(p)
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	return n, err
}

func (s *stallingWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok && s.writes <= s.after {
		f.Flush()
	}
}
