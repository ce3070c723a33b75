package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake is a hand-written stand-in for llama-server's HTTP API: it records the request body
// and answers with the given status and body.
func fake(t *testing.T, status int, body string) (addr string, got *map[string]any) {
	t.Helper()
	var seen map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &seen)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &seen
}

func client(t *testing.T, showText bool) *Client {
	c := &Client{HTTP: NewHTTPClient(), ShowText: showText}
	t.Cleanup(c.HTTP.CloseIdleConnections)
	return c
}

func chunk(content string) string {
	return fmt.Sprintf(`data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":%q}}],"object":"chat.completion.chunk"}`+"\n\n", content)
}

const finish = `data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}]}` + "\n\n" +
	`data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2},"timings":{"prompt_n":7,"prompt_ms":1.5,"predicted_n":2,"predicted_ms":3}}` + "\n\n" +
	"data: [DONE]\n\n"

func TestChatMapsEveryOptionAndStreams(t *testing.T) {
	addr, seen := fake(t, 200, chunk("Hel")+chunk("lo")+finish)
	maxTok, temp, topP, topK, minP, rep, seed := int32(2), 0.5, 0.9, int32(40), 0.05, 1.1, int64(42)
	req := ChatRequest{Model: "m", Messages: []*commonv1.ChatMessage{
		{Role: commonv1.Role_ROLE_SYSTEM, Content: "be brief"},
		{Role: commonv1.Role_ROLE_USER, Content: "look", Images: [][]byte{[]byte("\x89PNG\r\n\x1a\n....")}},
	}, Options: &commonv1.GenerationOptions{MaxTokens: &maxTok, Temperature: &temp, TopP: &topP, TopK: &topK, MinP: &minP,
		RepeatPenalty: &rep, Seed: &seed, Stop: []string{"\n\n"}, Format: "json"}}
	var text []string
	res, err := client(t, false).Chat(context.Background(), addr, req, func(s string) error { text = append(text, s); return nil })
	require.NoError(t, err)
	require.Equal(t, []string{"Hel", "lo"}, text, "relayed piece by piece")
	require.Equal(t, Result{PromptTokens: 7, CompletionTokens: 2, FinishReason: "length", PromptEval: 1500 * time.Microsecond, Eval: 3 * time.Millisecond}, *res)

	b := *seen
	require.Equal(t, true, b["stream"])
	require.Equal(t, map[string]any{"include_usage": true}, b["stream_options"])
	for k, v := range map[string]any{"max_tokens": 2.0, "temperature": 0.5, "top_p": 0.9, "top_k": 40.0, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 42.0} {
		require.Equal(t, v, b[k], k)
	}
	require.Equal(t, []any{"\n\n"}, b["stop"])
	require.Equal(t, map[string]any{"type": "json_object"}, b["response_format"])
	msgs := b["messages"].([]any)
	require.Equal(t, map[string]any{"role": "system", "content": "be brief"}, msgs[0])
	parts := msgs[1].(map[string]any)["content"].([]any)
	require.Equal(t, "look", parts[0].(map[string]any)["text"])
	require.True(t, strings.HasPrefix(parts[1].(map[string]any)["image_url"].(map[string]any)["url"].(string), "data:image/png;base64,"))
}

func TestUnsetOptionsAreLeftToTheServer(t *testing.T) {
	addr, seen := fake(t, 200, chunk("x")+finish)
	_, err := client(t, false).Chat(context.Background(), addr, ChatRequest{Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "hi"}}},
		func(string) error { return nil })
	require.NoError(t, err)
	for _, k := range []string{"max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "response_format"} {
		require.NotContains(t, *seen, k)
	}
}

func TestStreamWithoutItsFinalChunkIsAnError(t *testing.T) {
	for name, body := range map[string]string{
		"cut after tokens":       chunk("a") + chunk("b"),
		"cut before [DONE]":      chunk("a") + `data: {"choices":[{"finish_reason":"stop","index":0,"delta":{}}]}` + "\n\n",
		"[DONE] without a final": chunk("a") + "data: [DONE]\n\n",
		"malformed chunk":        chunk("a") + "data: {nope\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := fake(t, 200, body)
			n := 0
			_, err := client(t, false).Chat(context.Background(), addr, ChatRequest{}, func(string) error { n++; return nil })
			var se *StreamError
			require.ErrorAs(t, err, &se)
			require.Equal(t, n, se.Tokens)
			require.False(t, se.BeforeFirstToken())
		})
	}
}

func TestRefusalsCarryTheRedactedRequest(t *testing.T) {
	body := `{"error":{"code":400,"message":"request (900 tokens) exceeds the available context size (256 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":900,"n_ctx":256}}`
	addr, _ := fake(t, 400, body)
	req := ChatRequest{Model: "m", Messages: []*commonv1.ChatMessage{{Role: commonv1.Role_ROLE_USER, Content: "my secret plan"}}}
	_, err := client(t, false).Chat(context.Background(), addr, req, func(string) error { return nil })
	var ue *UpstreamError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, 400, ue.Status)
	require.Equal(t, "exceed_context_size_error", ue.Type)
	require.Contains(t, ue.Request, `"content":"<redacted: 14 chars>"`)
	require.NotContains(t, ue.Request, "secret")
	pub := ue.Public("m")
	require.Equal(t, rpcerr.KindInvalidArgument, pub.Kind)
	require.Equal(t, "COORDINATOR_REJECTED_REQUEST", pub.Reason)
	require.Contains(t, pub.Metadata["response"], "exceeds the available context size")

	_, err = client(t, true).Chat(context.Background(), addr, req, func(string) error { return nil })
	require.ErrorAs(t, err, &ue)
	require.Contains(t, ue.Request, "my secret plan", "debug shows the text")
}

func TestErrorEventsInsideAStream(t *testing.T) {
	for _, ev := range []string{
		`error: {"code":500,"message":"slot died","type":"server_error"}` + "\n\n",
		`data: {"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}` + "\n\n",
	} {
		addr, _ := fake(t, 200, chunk("a")+ev)
		_, err := client(t, false).Chat(context.Background(), addr, ChatRequest{}, func(string) error { return nil })
		var ue *UpstreamError
		require.ErrorAs(t, err, &ue, ev)
		require.NotZero(t, ue.Status)
	}
}

func TestCompletionEndpoint(t *testing.T) {
	body := `data: {"index":0,"content":"a","stop":false}` + "\n\n" + `data: {"index":0,"content":"b","stop":false}` + "\n\n" +
		`data: {"index":0,"content":"","stop":true,"tokens_predicted":2,"tokens_evaluated":5,"stop_type":"word","timings":{"prompt_ms":1,"predicted_ms":2}}` + "\n\n"
	addr, seen := fake(t, 200, body)
	n := int32(2)
	res, err := client(t, false).Complete(context.Background(), addr, CompletionRequest{Prompt: "raw text",
		Options: &commonv1.GenerationOptions{MaxTokens: &n, Format: "json"}}, func(string) error { return nil })
	require.NoError(t, err)
	require.Equal(t, "stop", res.FinishReason)
	require.EqualValues(t, 2, res.CompletionTokens)
	require.EqualValues(t, 5, res.PromptTokens)
	require.Equal(t, "raw text", (*seen)["prompt"])
	require.Equal(t, 2.0, (*seen)["n_predict"])
	require.Equal(t, map[string]any{}, (*seen)["json_schema"])
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	_, err := client(t, false).Chat(context.Background(), addr, ChatRequest{}, func(string) error { return nil })
	var se *StreamError
	require.ErrorAs(t, err, &se)
	require.True(t, se.BeforeFirstToken())
}

func TestCancellationReachesTheServer(t *testing.T) {
	gone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, chunk("a"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the client went away
		close(gone)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	_, err := client(t, false).Chat(ctx, strings.TrimPrefix(srv.URL, "http://"), ChatRequest{}, func(string) error { cancel(); return nil })
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the cancellation")
	}
}

func TestLongLinesAreRead(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	addr, _ := fake(t, 200, chunk(long)+finish)
	var got string
	_, err := client(t, false).Chat(context.Background(), addr, ChatRequest{}, func(s string) error { got += s; return nil })
	require.NoError(t, err)
	require.Equal(t, long, got)
}
