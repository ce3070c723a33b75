package e2e

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
	"github.com/stretchr/testify/require"

	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

// Ollama's own Go client, unchanged, against the router: every endpoint it uses works and
// streams have Ollama's shape (one chunk per token, then a final done with the counts).
func TestHTTPOllamaGoClient(t *testing.T) {
	h := startHTTPMesh(t)
	u, err := url.Parse(h.url)
	require.NoError(t, err)
	client := api.NewClient(u, http.DefaultClient)
	ctx := context.Background()

	require.NoError(t, client.Heartbeat(ctx))
	version, err := client.Version(ctx)
	require.NoError(t, err)
	require.Equal(t, ollamatest.Version, version, "the oldest node's version")

	list, err := client.List(ctx)
	require.NoError(t, err)
	require.Len(t, list.Models, 1)
	require.Equal(t, "tiny:latest", list.Models[0].Name)
	require.GreaterOrEqual(t, len(list.Models[0].Digest), 12)
	require.Equal(t, "gguf", list.Models[0].Details.Format)
	require.Positive(t, list.Models[0].Size)

	show, err := client.Show(ctx, &api.ShowRequest{Model: "tiny"})
	require.NoError(t, err)
	require.Equal(t, "gguf", show.Details.Format)
	require.Contains(t, show.Capabilities, model.CapabilityCompletion)
	// What the node itself says of the model, passed on through discovery.
	nodeURL, err := url.Parse(h.ollama.URL())
	require.NoError(t, err)
	direct, err := api.NewClient(nodeURL, http.DefaultClient).Show(ctx, &api.ShowRequest{Model: "tiny"})
	require.NoError(t, err)
	require.Equal(t, direct.Capabilities, show.Capabilities)
	require.EqualValues(t, tinymodel.ContextLen, show.ModelInfo["llama.context_length"])
	_, err = client.Show(ctx, &api.ShowRequest{Model: "nope"})
	var se api.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusNotFound, se.StatusCode)
	require.Contains(t, se.ErrorMessage, "model 'nope' not found")

	t.Run("chat stream", func(t *testing.T) {
		const n = 10
		chunks := 0
		var final api.ChatResponse
		err := client.Chat(ctx, &api.ChatRequest{
			Model:    "tiny",
			Messages: []api.Message{{Role: "user", Content: "hello"}},
			Options:  map[string]any{"num_predict": n, "temperature": 0.5, "seed": 7},
		}, func(r api.ChatResponse) error {
			if r.Done {
				final = r
				return nil
			}
			require.Equal(t, "assistant", r.Message.Role)
			chunks++
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, n, chunks)
		require.True(t, final.Done)
		require.Equal(t, n, final.EvalCount)
		require.Positive(t, final.PromptEvalCount)
		require.Positive(t, final.TotalDuration)
		require.NotEmpty(t, final.DoneReason)
		require.Equal(t, "tiny", final.Model)
	})

	t.Run("generate stream and not", func(t *testing.T) {
		const n = 6
		chunks := 0
		var text strings.Builder
		err := client.Generate(ctx, &api.GenerateRequest{Model: "tiny", Prompt: "hello", Options: map[string]any{"num_predict": n}},
			func(r api.GenerateResponse) error {
				if !r.Done {
					chunks++
					text.WriteString(r.Response)
				} else {
					require.Equal(t, n, r.EvalCount)
				}
				return nil
			})
		require.NoError(t, err)
		require.Equal(t, n, chunks)
		require.NotEmpty(t, text.String())

		stream := false
		calls := 0
		err = client.Generate(ctx, &api.GenerateRequest{Model: "tiny", Prompt: "hello", Stream: &stream, System: "be brief",
			KeepAlive: &api.Duration{Duration: time.Minute}, Options: map[string]any{"num_predict": n}},
			func(r api.GenerateResponse) error {
				calls++
				require.True(t, r.Done)
				require.NotEmpty(t, r.Response)
				require.Equal(t, n, r.EvalCount)
				return nil
			})
		require.NoError(t, err)
		require.Equal(t, 1, calls, "stream false answers one object")
	})

	t.Run("embed", func(t *testing.T) {
		resp, err := client.Embed(ctx, &api.EmbedRequest{Model: "tiny", Input: []string{"a", "bc"}})
		require.NoError(t, err)
		require.Len(t, resp.Embeddings, 2)
		require.NotEmpty(t, resp.Embeddings[0])
		one, err := client.Embed(ctx, &api.EmbedRequest{Model: "tiny", Input: "abc"})
		require.NoError(t, err)
		require.Len(t, one.Embeddings, 1)
		legacy, err := client.Embeddings(ctx, &api.EmbeddingRequest{Model: "tiny", Prompt: "abc"})
		require.NoError(t, err)
		require.Len(t, legacy.Embedding, len(one.Embeddings[0]))
	})

	t.Run("ps", func(t *testing.T) {
		// The chats above loaded tiny on the node; discovery reports it within a probe.
		require.Eventually(t, func() bool {
			ps, err := client.ListRunning(ctx)
			return err == nil && len(ps.Models) == 1 && ps.Models[0].Name == "tiny:latest"
		}, 30*time.Second, 50*time.Millisecond)
	})

	t.Run("unknown model", func(t *testing.T) {
		err := client.Chat(ctx, &api.ChatRequest{Model: "nope", Messages: []api.Message{{Role: "user", Content: "hi"}}},
			func(api.ChatResponse) error { return nil })
		var se api.StatusError
		require.ErrorAs(t, err, &se)
		require.Equal(t, http.StatusNotFound, se.StatusCode)
		require.Contains(t, se.ErrorMessage, "model 'nope' not found")
	})

	t.Run("metrics", func(t *testing.T) {
		// Requests through the Ollama API count in the router's own metrics.
		require.Positive(t, h.counterValue(t, "sollol_router_requests_total", "pool"))
		require.Zero(t, h.counterValue(t, "sollol_router_requests_total", "shard"))
		require.Positive(t, h.counterValue(t, "sollol_router_errors_total", "NotFound"), "the unknown model")
	})
}

// The real ollama CLI, with OLLAMA_HOST pointed at the router.
func TestHTTPOllamaCLI(t *testing.T) {
	h := startHTTPMesh(t)
	bin := ollamatest.Binary(t)
	// `ollama run` sends no options, and the tiny model never stops by itself: a model
	// derived with a num_predict bounds the answer without any client change.
	h.deriveModel(t, "tiny8", map[string]any{"num_predict": 8})

	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(environWithout("OLLAMA_", "HOME"), "OLLAMA_HOST="+h.addr, "HOME="+t.TempDir(), "TERM=dumb")
		var out, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		if err != nil {
			t.Logf("ollama %v: %v\nstderr: %s", args, err, stderr.String())
		}
		return out.String(), err
	}

	out, err := cli("list")
	require.NoError(t, err)
	require.Contains(t, out, "tiny:latest")
	require.Contains(t, out, "tiny8:latest")

	out, err = cli("show", "tiny8")
	require.NoError(t, err)
	require.Contains(t, out, "completion")

	out, err = cli("run", "tiny8", "hello")
	require.NoError(t, err)
	require.NotEmpty(t, strings.TrimSpace(out), "the answer is printed")
	t.Logf("ollama run tiny8 hello: %q", out)

	stats, err := h.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.GetRequests().GetPool(), "the run went through the router to the pool")

	_, err = cli("run", "nope", "hello")
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "an unknown model fails the CLI: %v", err)
}

// environWithout is this process's environment minus variables with the given prefixes.
func environWithout(prefixes ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		keep := true
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
