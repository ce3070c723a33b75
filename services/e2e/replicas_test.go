package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	ollamapoolv1 "github.com/sollol/mesh/gen/go/sollol/ollamapool/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// The pool replica a request reached dies before the first token: the router gives the
// request to the other replica, and the client sees a normal answer.
func TestRouterRetriesAnotherPoolReplicaWhenOneDies(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	// The first chat is held at a proxy in front of the node, before any byte of its answer,
	// until the pool replica that sent it goes away.
	target, err := url.Parse(ollama.URL())
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	var chats atomic.Int32
	held, testOver := make(chan struct{}), make(chan struct{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat" && chats.Add(1) == 1 {
			close(held)
			select {
			case <-r.Context().Done():
			case <-testOver:
			}
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	t.Cleanup(func() { close(testOver) }) // first: a failed test must not leave the handler held

	m := startMesh(t, meshOptions{ollamaNodes: []string{strings.TrimPrefix(front.URL, "http://")}, poolReplicas: 2})
	m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL })
	require.Eventually(t, func() bool {
		st, err := m.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
		return err == nil && st.GetPool().GetInstances() == 2
	}, 30*time.Second, 50*time.Millisecond, "the router sees both pool replicas")

	result := make(chan shardChat, 1)
	go func() { result <- chatRouted(t, m.client, "tiny", 8) }()
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatal("the chat never reached the node")
	}
	// Stop the replica holding the request at once, no drain: its connections break as a
	// crash would break them.
	victim := -1
	for i, p := range m.pools {
		st, err := p.GetStats(context.Background(), &ollamapoolv1.GetStatsRequest{})
		require.NoError(t, err)
		if st.GetInFlight() == 1 {
			victim = i
		}
	}
	require.NotEqual(t, -1, victim, "one replica has the request in flight")
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, m.pools[victim].Stop(stopped))

	r := <-result
	require.NoError(t, r.err)
	require.Equal(t, 8, r.chunks)
	require.Equal(t, commonv1.RoutePath_ROUTE_PATH_POOL, r.done.GetRoute().GetPath())
	require.Empty(t, r.done.GetRoute().GetFallbackReason(), "the same path, another replica")
	st, err := m.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	require.Positive(t, st.GetReplicaRetries())
	require.GreaterOrEqual(t, chats.Load(), int32(2), "the node got the request again, from the other replica")
}
