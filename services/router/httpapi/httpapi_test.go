package httpapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// The end-to-end tests (services/e2e/httpapi*_test.go) run real clients against a real
// mesh; these cover the translation rules that need no mesh.

func TestOllamaOptionsMapping(t *testing.T) {
	o, err := ollamaOptions(json.RawMessage(`{"temperature":0.5,"top_p":0.9,"top_k":40,"min_p":0.1,"repeat_penalty":1.1,
		"seed":7,"stop":["\n","User:"],"num_predict":12,"num_ctx":2048,"mirostat":2,"num_thread":1}`))
	require.NoError(t, err)
	require.True(t, proto.Equal(&commonv1.GenerationOptions{
		Temperature: proto.Float64(0.5), TopP: proto.Float64(0.9), TopK: proto.Int32(40), MinP: proto.Float64(0.1),
		RepeatPenalty: proto.Float64(1.1), Seed: proto.Int64(7), Stop: []string{"\n", "User:"},
		MaxTokens: proto.Int32(12), ContextSize: proto.Int32(2048),
	}, o), "%v", o)

	o, err = ollamaOptions(json.RawMessage(`{"num_predict":-1,"stop":"x"}`))
	require.NoError(t, err)
	require.Nil(t, o.MaxTokens, "-1 is Ollama's 'no limit'")
	require.Equal(t, []string{"x"}, o.Stop)

	for body, field := range map[string]string{
		`{"temperature":"hot"}`: "options.temperature",
		`{"top_k":1.5}`:         "options.top_k",
		`{"stop":[1]}`:          "options.stop",
		`[1,2]`:                 "options",
	} {
		_, err := ollamaOptions(json.RawMessage(body))
		require.ErrorContains(t, err, field, body)
	}
}

func TestParseKeepAlive(t *testing.T) {
	for raw, want := range map[string]time.Duration{`300`: 5 * time.Minute, `"1h"`: time.Hour, `-1`: -time.Second, `"-5m"`: -time.Second, `0`: 0} {
		d, err := parseKeepAlive(json.RawMessage(raw))
		require.NoError(t, err, raw)
		require.Equal(t, want, d.AsDuration(), raw)
	}
	d, err := parseKeepAlive(nil)
	require.NoError(t, err)
	require.Nil(t, d)
	for _, raw := range []string{`"soon"`, `true`, `{}`} {
		_, err := parseKeepAlive(json.RawMessage(raw))
		require.ErrorContains(t, err, "keep_alive", raw)
	}
}

func TestErrorStatusTable(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		code   string
	}{
		{rpcerr.InvalidArgument("messages[0].role", "bad"), 400, "invalid_argument"},
		{rpcerr.New(rpcerr.KindNotFound, "MODEL_NOT_FOUND", "x"), 404, "model_not_found"},
		{rpcerr.New(rpcerr.KindFailedPrecondition, "NO_PATH", "configure"), 503, "no_path"},
		{status.Error(codes.ResourceExhausted, "queue full"), 429, "resource_exhausted"},
		{status.Error(codes.Unavailable, "down"), 503, "unavailable"},
		{status.Error(codes.DeadlineExceeded, "slow"), 504, "deadline_exceeded"},
		{status.Error(codes.Aborted, "node died"), 502, "aborted"},
		{io.ErrUnexpectedEOF, 500, "internal"},
	} {
		e := toAPIError(tt.err)
		require.Equal(t, tt.status, e.status, "%v", tt.err)
		require.Equal(t, tt.code, e.code, "%v", tt.err)
	}
	require.Equal(t, "messages[0].role", toAPIError(rpcerr.InvalidArgument("messages[0].role", "bad")).field)
}

func TestDecodeNamesTheProblem(t *testing.T) {
	a := &api{opts: Options{MaxBodyBytes: 64}}
	var dst struct {
		Model    string `json:"model"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	for body, want := range map[string]string{
		``:                             "missing request body",
		`{"model":`:                    "invalid JSON",
		`{"model" 1}`:                  "invalid JSON at byte",
		`{"messages":"hi"}`:            "messages: must be an array, got string",
		`{"messages":[{"content":1}]}`: "messages.content: must be a string, got number",
		`{"model":"` + strings.Repeat("a", 100) + `"}`: "larger than the limit of 64 bytes",
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/chat", strings.NewReader(body))
		err := a.decode(httptest.NewRecorder(), r, &dst)
		require.ErrorContains(t, err, want, body)
	}
	r := httptest.NewRequest(http.MethodPost, "/api/chat", strings.NewReader(`{"model":"m","bogus":true}`))
	require.NoError(t, a.decode(httptest.NewRecorder(), r, &dst), "unknown fields are ignored")
}

func TestOpenAIStreamEnd(t *testing.T) {
	done := &commonv1.Done{Usage: &commonv1.Usage{PromptTokens: 3, CompletionTokens: 4}, DoneReason: "length"}
	enc := newOpenAIEncoder("m", true, &streamOptions{IncludeUsage: true})
	first := string(enc.chunk("a"))
	require.Contains(t, first, `"delta":{"role":"assistant","content":"a"}`)
	require.NotContains(t, string(enc.chunk("b")), `"role"`, "only the first delta names the role")
	end := string(enc.end(done, 0))
	events := strings.Split(strings.TrimSpace(end), "\n\n")
	require.Len(t, events, 3)
	require.Contains(t, events[0], `"finish_reason":"length"`)
	require.Contains(t, events[1], `"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`)
	require.Equal(t, "data: [DONE]", events[2])

	p := string(enc.progress(&commonv1.LoadProgress{Model: "m", Stage: commonv1.LoadStage_LOAD_STAGE_LOADING, Fraction: proto.Float32(0.5)}, 0))
	require.True(t, strings.HasPrefix(p, ": "), "progress is an SSE comment: %q", p)
	require.Contains(t, p, "50%")
}

func TestOllamaDropsProgressButKeepsTheConnectionAlive(t *testing.T) {
	enc := &ollamaEncoder{model: "m", chat: true}
	require.Nil(t, enc.progress(&commonv1.LoadProgress{}, time.Second))
	line := enc.progress(&commonv1.LoadProgress{}, keepAliveEvery)
	var ev map[string]any
	require.NoError(t, json.Unmarshal(line, &ev))
	require.Equal(t, false, ev["done"])
	require.Equal(t, "", ev["message"].(map[string]any)["content"], "an empty chunk, which clients print as nothing")
}

func TestRecoverAnswersInTheAPIsShape(t *testing.T) {
	a := &api{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h := a.recoverPanics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("late") {
			_, _ = w.Write([]byte("partial"))
		}
		panic("boom")
	}))
	for path, shape := range map[string]string{"/api/chat": `{"error":"internal error`, "/v1/chat/completions": `{"error":{"message":"internal error`} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		require.Equal(t, http.StatusInternalServerError, rec.Code)
		require.True(t, strings.HasPrefix(rec.Body.String(), shape), rec.Body.String())
	}
	require.PanicsWithValue(t, http.ErrAbortHandler, func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/chat?late", nil))
	}, "after the first byte the stream is aborted, which net/http turns into a closed connection")
}

func TestHeaderSafeAndVersions(t *testing.T) {
	require.Equal(t, "a b  c", headerSafe("a\nb\r\tc"))
	require.Len(t, headerSafe(strings.Repeat("x", 2000)), 512)
	require.True(t, versionLess("0.9.1", "0.17.4"))
	require.False(t, versionLess("0.17.4", "0.17.4"))
	require.True(t, versionLess("0.17.4-rc1", "0.18.0"))
}
