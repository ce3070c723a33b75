package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

// The client commands of the built binary against a running `sollol up` with a real Ollama.
func TestClientCommandsAgainstARunningMesh(t *testing.T) {
	ollama := ollamatest.Start(t)
	ollama.CreateTinyModel(t, "tiny")
	ports := freePorts(t)
	args := append([]string{"up", "--data-dir", t.TempDir(), "--discovery.ollama-nodes", ollama.Addr(),
		"--discovery.local-defaults=false"}, ports.args()...)
	startSollol(t, args...)
	require.Eventually(t, func() bool {
		code, _, err := httpGet("http://" + ports.http + "/readyz")
		return err == nil && code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond)

	require.Eventually(t, func() bool {
		code, out := runSollol(t, 20*time.Second, "route", "--addr", ports.router, "-m", "tiny")
		return code == 0 && strings.Contains(out, "decision: pool")
	}, 30*time.Second, 100*time.Millisecond, "the router never saw the Ollama node")

	code, out := runSollol(t, 30*time.Second, "chat", "--addr", ports.router, "-m", "tiny", "--max-tokens", "6", "hello", "there")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "[pool via ollama@", "the route taken is shown")
	require.Contains(t, out, "6 tokens")

	code, out = runSollol(t, 20*time.Second, "backends", "--addr", ports.discovery)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, ollama.Addr())
	require.Contains(t, out, "healthy")
	require.Contains(t, out, "tiny:latest")

	code, out = runSollol(t, 20*time.Second, "stats", "--addr", ports.router, "--json")
	require.Equal(t, 0, code, out)
	var stats struct {
		Requests struct {
			Pool string `json:"pool"`
		} `json:"requests"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &stats), out)
	require.Equal(t, "1", stats.Requests.Pool)

	code, out = runSollol(t, 20*time.Second, "chat", "--addr", ports.router, "-m", "no-such-model", "hi")
	require.Equal(t, 1, code, out)
	require.Contains(t, lastLine(out), "NotFound")
	require.Contains(t, lastLine(out), "tiny:latest", "the error lists the models that exist")

	code, out = runSollol(t, 20*time.Second, "chat", "--addr", ports.router, "hi")
	require.Equal(t, 2, code, out)
	require.Contains(t, lastLine(out), "-m MODEL is required")
}
