package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
)

// Bad input gets the status and the error shape each API's clients expect, naming the field
// in the gRPC API's words; unknown fields are ignored, as Ollama and OpenAI ignore them.
func TestHTTPBadInputTable(t *testing.T) {
	h := startHTTPMesh(t)
	msgs := []map[string]any{{"role": "user", "content": "hi"}}
	oversize := `{"model":"tiny","messages":[{"role":"user","content":"` + strings.Repeat("a", testMaxBody+1) + `"}]}`

	ollama := []struct {
		name, path string
		body       any
		status     int
		contains   string
	}{
		{"malformed JSON", "/api/chat", `{"model":`, 400, "invalid JSON"},
		{"syntax error", "/api/chat", `{"model": tiny}`, 400, "invalid JSON at byte"},
		{"empty body", "/api/chat", ``, 400, "missing request body"},
		{"messages not an array", "/api/chat", map[string]any{"model": "tiny", "messages": "hi"}, 400, "messages: must be an array, got string"},
		{"missing model", "/api/chat", map[string]any{"messages": msgs}, 400, "model: is required"},
		{"bad role", "/api/chat", map[string]any{"model": "tiny", "messages": []map[string]any{{"role": "bot", "content": "hi"}}}, 400, "messages[0].role"},
		{"empty content", "/api/chat", map[string]any{"model": "tiny", "messages": []map[string]any{{"role": "user"}}}, 400, "messages[0].content"},
		{"bad option type", "/api/chat", map[string]any{"model": "tiny", "messages": msgs, "options": map[string]any{"temperature": "hot"}}, 400, "options.temperature"},
		{"option out of range", "/api/chat", map[string]any{"model": "tiny", "messages": msgs, "options": map[string]any{"top_p": 7}}, 400, "options.top_p"},
		{"bad keep_alive", "/api/chat", map[string]any{"model": "tiny", "messages": msgs, "keep_alive": "soon"}, 400, "keep_alive"},
		{"schema format", "/api/chat", map[string]any{"model": "tiny", "messages": msgs, "format": map[string]any{"type": "object"}}, 400, "format"},
		{"bad hint", "/api/chat", map[string]any{"model": "tiny", "messages": msgs, "hint": "gpu"}, 400, "hint"},
		{"oversize body", "/api/chat", oversize, 413, "larger than the limit"},
		{"unknown model", "/api/chat", map[string]any{"model": "nope", "messages": msgs}, 404, "model 'nope' not found; the mesh has: tiny:latest"},
		{"prompt not a string", "/api/generate", map[string]any{"model": "tiny", "prompt": 42}, 400, "prompt: must be a string"},
		{"generate unknown model", "/api/generate", map[string]any{"model": "nope", "prompt": "hi"}, 404, "not found"},
		{"images not base64", "/api/generate", map[string]any{"model": "tiny", "prompt": "hi", "images": []string{"%%%"}}, 400, "images"},
		{"embed input a number", "/api/embed", map[string]any{"model": "tiny", "input": 3}, 400, "input"},
		{"embed unknown model", "/api/embed", map[string]any{"model": "nope", "input": "x"}, 404, "not found"},
		{"show unknown model", "/api/show", map[string]any{"model": "nope"}, 404, "model 'nope' not found"},
		{"pull is not ours", "/api/pull", map[string]any{"model": "tiny"}, 501, "Ollama node"},
		{"unknown fields ignored", "/api/chat", map[string]any{"model": "tiny", "messages": msgs, "stream": false, "bogus": 1,
			"options": map[string]any{"num_predict": 2, "mirostat": 1}}, 200, `"done":true`},
		{"no messages is a load request", "/api/chat", map[string]any{"model": "tiny"}, 200, `"done_reason":"load"`},
	}
	for _, tt := range ollama {
		t.Run("ollama "+tt.name, func(t *testing.T) {
			resp := h.post(t, context.Background(), tt.path, tt.body)
			body := decodeBody(t, resp)
			raw, _ := json.Marshal(body)
			require.Equal(t, tt.status, resp.StatusCode, "%s", raw)
			if tt.status >= 400 {
				msg, ok := body["error"].(string)
				require.True(t, ok, "Ollama's shape is {\"error\": \"...\"}: %s", raw)
				require.Contains(t, msg, tt.contains)
				return
			}
			require.Contains(t, string(raw), tt.contains)
		})
	}

	openai := []struct {
		name, path  string
		body        any
		status      int
		param, code string
	}{
		{"malformed JSON", "/v1/chat/completions", `{"model": "tiny", "messages": [`, 400, "", "invalid_json"},
		{"messages a string", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": "hi"}, 400, "messages", "invalid_argument"},
		{"missing model", "/v1/chat/completions", map[string]any{"messages": msgs}, 400, "model", "invalid_argument"},
		{"missing messages", "/v1/chat/completions", map[string]any{"model": "tiny"}, 400, "messages", "invalid_argument"},
		{"n=2", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": msgs, "n": 2}, 400, "n", "invalid_argument"},
		{"stop a number", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": msgs, "stop": 3}, 400, "stop", "invalid_argument"},
		{"content a number", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": []map[string]any{{"role": "user", "content": 5}}}, 400, "messages[0].content", "invalid_argument"},
		{"image by URL", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": []map[string]any{{"role": "user", "content": []map[string]any{
			{"type": "image_url", "image_url": map[string]any{"url": "http://example.invalid/cat.png"}}}}}}, 400, "messages[0].content[0].image_url.url", "invalid_argument"},
		{"temperature out of range", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": msgs, "temperature": -1}, 400, "options.temperature", "invalid_argument"},
		{"max_tokens zero", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": msgs, "max_tokens": 0}, 400, "options.max_tokens", "invalid_argument"},
		{"oversize body", "/v1/chat/completions", oversize, 413, "", "request_too_large"},
		{"unknown model", "/v1/chat/completions", map[string]any{"model": "nope", "messages": msgs}, 404, "", "model_not_found"},
		{"completions without prompt", "/v1/completions", map[string]any{"model": "tiny"}, 400, "prompt", "invalid_argument"},
		{"completions n=3", "/v1/completions", map[string]any{"model": "tiny", "prompt": "hi", "n": 3}, 400, "n", "invalid_argument"},
		{"embeddings without input", "/v1/embeddings", map[string]any{"model": "tiny"}, 400, "input", "invalid_argument"},
		{"embeddings unknown model", "/v1/embeddings", map[string]any{"model": "nope", "input": "x"}, 404, "", "model_not_found"},
	}
	for _, tt := range openai {
		t.Run("openai "+tt.name, func(t *testing.T) {
			resp := h.post(t, context.Background(), tt.path, tt.body)
			body := decodeBody(t, resp)
			raw, _ := json.Marshal(body)
			require.Equal(t, tt.status, resp.StatusCode, "%s", raw)
			e, ok := body["error"].(map[string]any)
			require.True(t, ok, "OpenAI's shape is {\"error\": {...}}: %s", raw)
			require.NotEmpty(t, e["message"])
			require.Equal(t, tt.code, e["code"], "%s", raw)
			if tt.param != "" {
				require.Equal(t, tt.param, e["param"], "%s", raw)
				require.Contains(t, e["message"], tt.param)
			}
			wantType := "invalid_request_error"
			require.Equal(t, wantType, e["type"])
		})
	}

	t.Run("openai unknown model by id", func(t *testing.T) {
		resp, err := http.Get(h.url + "/v1/models/nope")
		require.NoError(t, err)
		body := decodeBody(t, resp)
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		require.Equal(t, "model_not_found", body["error"].(map[string]any)["code"])
	})
	t.Run("paths outside the APIs are 404", func(t *testing.T) {
		resp, err := http.Get(h.url + "/nowhere")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
	})
}

// Every inference response names its route: a header before the first byte and, on a
// stream, trailers with the final route, the backend and the timings.
func TestHTTPRouteHeaders(t *testing.T) {
	h := startHTTPMesh(t)
	msgs := []map[string]any{{"role": "user", "content": "hi"}}
	ctx := context.Background()

	for _, tt := range []struct {
		name, path string
		body       map[string]any
		stream     bool
	}{
		{"ollama chat stream", "/api/chat", map[string]any{"model": "tiny", "messages": msgs, "options": map[string]any{"num_predict": 3}}, true},
		{"ollama generate whole", "/api/generate", map[string]any{"model": "tiny", "prompt": "hi", "stream": false, "options": map[string]any{"num_predict": 3}}, false},
		{"openai chat stream", "/v1/chat/completions", map[string]any{"model": "tiny", "messages": msgs, "max_tokens": 3, "stream": true}, true},
		{"openai completion whole", "/v1/completions", map[string]any{"model": "tiny", "prompt": "hi", "max_tokens": 3}, false},
		{"ollama embed", "/api/embed", map[string]any{"model": "tiny", "input": "hi"}, false},
		{"openai embeddings", "/v1/embeddings", map[string]any{"model": "tiny", "input": []string{"hi"}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.post(t, ctx, tt.path, tt.body)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "pool", resp.Header.Get("X-Sollol-Route"))
			require.Equal(t, "test", resp.Header.Get("X-Sollol-Version"))
			if tt.stream {
				require.Contains(t, resp.Trailer, "X-Sollol-Route", "the trailers are announced")
			}
			lines(t, resp.Body) // to the end, so the trailers arrive
			final := resp.Header
			if tt.stream {
				final = resp.Trailer
			}
			require.Equal(t, "pool", final.Get("X-Sollol-Route"))
			require.Contains(t, final.Get("X-Sollol-Backend"), "ollama@")
			require.NotEmpty(t, final.Get("X-Sollol-Attempts"))
			require.Contains(t, final.Get("Server-Timing"), "total;dur=")
			if !strings.Contains(tt.path, "embed") {
				require.Contains(t, final.Get("Server-Timing"), "decide;dur=")
				require.Contains(t, final.Get("Server-Timing"), "ttft;dur=")
			}
		})
	}
}

// A client that hangs up mid-stream cancels the request downstream: the router and the pool
// let go of it (nothing stays in flight) and the router counts it as canceled.
func TestHTTPClientDisconnectCancelsDownstream(t *testing.T) {
	for _, tt := range []struct{ name, path, body string }{
		{"ollama", "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":100000}}`},
		{"openai", "/v1/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":100000,"stream":true}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A mesh and an Ollama of its own: Ollama 0.17.4 can stall the request after a
			// cancelled one that ran past the tiny model's context, which would make the
			// second case hang on the first's node.
			h := startHTTPMesh(t)
			before := canceledCount(t, h)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			resp := h.post(t, ctx, tt.path, tt.body)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			sc := bufio.NewScanner(resp.Body)
			require.True(t, sc.Scan(), "the first chunk arrives")
			require.NotEmpty(t, sc.Text())
			ps, err := h.pool.GetStats(context.Background(), nil)
			require.NoError(t, err)
			require.EqualValues(t, 1, ps.GetInFlight(), "the pool is serving the stream")

			cancel()
			resp.Body.Close()
			h.waitInFlightZero(t)
			require.Eventually(t, func() bool { return canceledCount(t, h) == before+1 }, 30*time.Second, 20*time.Millisecond,
				"the router saw the request end by cancellation, not by finishing: %v", errorCounts(t, h))
		})
	}
}

func canceledCount(t *testing.T, h *httpMesh) uint64 { return errorCounts(t, h)["Canceled"] }

func errorCounts(t *testing.T, h *httpMesh) map[string]uint64 {
	t.Helper()
	s, err := h.client.GetStats(context.Background(), &routerv1.GetStatsRequest{})
	require.NoError(t, err)
	return s.GetErrorsByCode()
}

// A backend that dies after the first token cannot be retried (the client has text already):
// the stream ends with an error in the API's own shape as its last event, since the status
// line is long gone, and the trailers still name the route.
func TestHTTPBackendDyingMidStreamEndsWithAnErrorEvent(t *testing.T) {
	for _, tt := range []struct {
		name, path, body string
		isError          func(last string) bool
	}{
		{"ollama", "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":100000}}`,
			func(last string) bool {
				var ev map[string]any
				return json.Unmarshal([]byte(last), &ev) == nil && ev["error"] != nil
			}},
		{"openai", "/v1/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":100000,"stream":true}`,
			func(last string) bool {
				var ev struct {
					Error struct{ Message, Type string } `json:"error"`
				}
				data, ok := strings.CutPrefix(last, "data: ")
				return ok && json.Unmarshal([]byte(data), &ev) == nil && ev.Error.Message != "" && ev.Error.Type != ""
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startHTTPMesh(t)
			resp := h.post(t, context.Background(), tt.path, tt.body)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			sc := bufio.NewScanner(resp.Body)
			require.True(t, sc.Scan(), "the first chunk arrives")
			h.ollama.Stop()
			var last string
			for sc.Scan() {
				if l := strings.TrimSpace(sc.Text()); l != "" {
					last = l
				}
			}
			require.True(t, tt.isError(last), "the last event is an error: %q", last)
			require.Equal(t, "pool", resp.Trailer.Get("X-Sollol-Route"))
			t.Logf("last event: %s", last)
		})
	}
}
