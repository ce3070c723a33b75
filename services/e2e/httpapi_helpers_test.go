package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/router/httpapi"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// testMaxBody is the body limit of the test server: small, so the oversize case is cheap.
const testMaxBody = 1 << 20

// httpMesh is the in-process mesh with a real Ollama serving the tiny model behind the pool,
// and the router's HTTP APIs mounted as the sollol binary mounts them.
type httpMesh struct {
	*inProcessMesh
	ollama *ollamatest.Server
	url    string // http://127.0.0.1:port
	addr   string // 127.0.0.1:port
}

// startHTTPMesh starts Ollama with model "tiny", the mesh (auto modes: Ollama found → pool,
// no rpc-server → no sharding), and an HTTP server with the REST gateway under /sollol/ and
// the Ollama and OpenAI APIs at "/". It returns once the router routes "tiny" to the pool.
func startHTTPMesh(t *testing.T) *httpMesh {
	t.Helper()
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	m := startMesh(t, meshOptions{ollamaNodes: []string{ollama.Addr()}})
	m.waitRoute(t, "tiny", func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL })
	url := serveHTTP(t, m)
	return &httpMesh{inProcessMesh: m, ollama: ollama, url: url, addr: strings.TrimPrefix(url, "http://")}
}

// serveHTTP serves the mesh's router over HTTP as the sollol binary mounts it (the REST
// gateway under /sollol/, the Ollama and OpenAI APIs at "/") and returns the base URL.
func serveHTTP(t *testing.T, m *inProcessMesh) string {
	mux := http.NewServeMux()
	mux.Handle("/sollol/", m.router.HTTPHandler())
	mux.Handle("/", httpapi.New(m.router, httpapi.Options{
		MaxBodyBytes: testMaxBody,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Version:      "test",
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// deriveModel creates name on the Ollama node from "tiny" with extra parameters (e.g. a
// num_predict, so that a client sending no options still gets a bounded answer), through
// Ollama's own /api/create, and waits until the router can route it.
func (h *httpMesh) deriveModel(t *testing.T, name string, params map[string]any) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"model": name, "from": "tiny", "parameters": params, "stream": false})
	require.NoError(t, err)
	resp, err := http.Post(h.ollama.URL()+"/api/create", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "create %s: %s", name, b)
	h.waitRoute(t, name, func(d *routerv1.Decision) bool { return d.GetPath() == commonv1.RoutePath_ROUTE_PATH_POOL })
}

// post sends a JSON body (a string is sent as is, so malformed JSON can be sent too).
func (h *httpMesh) post(t *testing.T, ctx context.Context, path string, body any) *http.Response {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		raw, err = json.Marshal(b)
		require.NoError(t, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+path, bytes.NewReader(raw))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return resp
}

// get fetches path and decodes its JSON body.
func (h *httpMesh) get(t *testing.T, path string, into any) *http.Response {
	t.Helper()
	resp, err := http.Get(h.url + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(into))
	return resp
}

// lines reads a streamed body to its end (so trailers arrive) and returns its non-empty
// lines.
func lines(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// decodeBody reads a whole JSON answer.
func decodeBody(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out), "not JSON: %s", b)
	return out
}

// waitInFlightZero polls until neither the router nor the pool has a request in flight.
func (h *httpMesh) waitInFlightZero(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		ps, err := h.pool.GetStats(context.Background(), nil)
		if err != nil || ps.GetInFlight() != 0 {
			return false
		}
		rs, err := h.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
		return err == nil && rs.GetInFlight() == 0
	}, 30*time.Second, 20*time.Millisecond, "requests stayed in flight downstream")
}
