package e2e

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// The built binary mounts the Ollama and OpenAI APIs at "/" of its HTTP port without
// shadowing /readyz, /healthz, /metrics or the REST gateway, and serves a chat from a real
// Ollama through them.
func TestHTTPBuiltBinaryServesTheCompatAPIs(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	ports := freePorts(t)
	args := append([]string{"up", "--data-dir", t.TempDir(), "--discovery.ollama-nodes", ollama.URL(),
		"--discovery.local-defaults=false"}, ports.args()...)
	p := startSollol(t, args...)
	base := "http://" + ports.http

	require.Eventually(t, func() bool {
		code, _, err := httpGet(base + "/readyz")
		return err == nil && code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "readyz never answered 200")
	for path, want := range map[string]string{
		"/":                 "Ollama is running",
		"/healthz":          "ok",
		"/metrics":          "go_goroutines",
		"/sollol/v1/stats":  `"mode"`,
		"/api/version":      `"version"`,
		"/v1/models":        `"object":"list"`,
		"/sollol/v1/models": `"models"`,
	} {
		code, body, err := httpGet(base + path)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
		require.Contains(t, body, want, path)
	}
	require.Eventually(t, func() bool {
		_, body, err := httpGet(base + "/api/tags")
		return err == nil && strings.Contains(body, `"tiny:latest"`)
	}, 30*time.Second, 50*time.Millisecond, "the router never listed the node's model")

	h := &httpMesh{url: base}
	var resp *http.Response
	require.Eventually(t, func() bool {
		// The pool may not have seen the node yet when the router has; a 503 then is honest.
		resp = h.post(t, context.Background(), "/api/chat", `{"model":"tiny","stream":false,"messages":[{"role":"user","content":"hi"}],"options":{"num_predict":4}}`)
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return false
		}
		return true
	}, 30*time.Second, 100*time.Millisecond)
	require.Equal(t, "pool", resp.Header.Get("X-Sollol-Route"))
	body := decodeBody(t, resp)
	require.Equal(t, true, body["done"])
	require.EqualValues(t, 4, body["eval_count"])

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.waitExit(20*time.Second))
	require.False(t, p.groupAlive())
}
