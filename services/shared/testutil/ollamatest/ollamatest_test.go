package ollamatest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
)

const numPredict = 16

// chunk is one NDJSON line of /api/generate or /api/chat.
type chunk struct {
	Model    string `json:"model"`
	Response string `json:"response"`
	Message  *struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"message"`
	Done            bool   `json:"done"`
	DoneReason      string `json:"done_reason"`
	EvalCount       int    `json:"eval_count"`
	PromptEvalCount int    `json:"prompt_eval_count"`
	Error           string `json:"error"`
}

type result struct {
	text   string
	chunks int // chunks with text before the final one
	final  chunk
}

// stream posts body to path with "stream": true and reads the NDJSON answer.
func stream(t *testing.T, srv *ollamatest.Server, path string, body map[string]any) result {
	t.Helper()
	body["stream"] = true
	b, err := json.Marshal(body)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL()+path, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))

	var r result
	var text bytes.Buffer
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var c chunk
		require.NoError(t, json.Unmarshal(sc.Bytes(), &c), "line %q", sc.Text())
		require.Empty(t, c.Error)
		piece := c.Response
		if c.Message != nil {
			require.Equal(t, "assistant", c.Message.Role)
			piece = c.Message.Content
		}
		text.WriteString(piece)
		if c.Done {
			r.final = c
			break
		}
		if piece != "" {
			r.chunks++
		}
	}
	require.NoError(t, sc.Err())
	require.True(t, r.final.Done, "stream ended without a done chunk")
	r.text = text.String()
	return r
}

func requirePrintableASCII(t *testing.T, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		require.True(t, s[i] >= 0x20 && s[i] <= 0x7e, "byte %d of %q is not printable ASCII", i, s)
	}
}

func generate(t *testing.T, srv *ollamatest.Server, model, prompt string) result {
	t.Helper()
	return stream(t, srv, "/api/generate", map[string]any{
		"model":   model,
		"prompt":  prompt,
		"options": map[string]any{"num_predict": numPredict, "temperature": 0},
	})
}

func requireExact(t *testing.T, r result) {
	t.Helper()
	require.Equal(t, numPredict, r.final.EvalCount, "every request runs to its token limit")
	require.Equal(t, "length", r.final.DoneReason)
	require.GreaterOrEqual(t, r.chunks, numPredict/2, "tokens arrive as separate chunks before done")
	require.NotEmpty(t, r.text)
	requirePrintableASCII(t, r.text)
}

func TestGenerateAndChatStream(t *testing.T) {
	srv := ollamatest.Start(t)
	require.NotEmpty(t, srv.Processes())
	srv.CreateTinyModel(t, "tiny")

	start := time.Now()
	first := generate(t, srv, "tiny", "Hello, how are you?")
	t.Logf("generate (incl. load): %v, %d chunks, %q", time.Since(start), first.chunks, first.text)
	requireExact(t, first)
	require.Positive(t, first.final.PromptEvalCount)

	start = time.Now()
	second := generate(t, srv, "tiny", "Hello, how are you?")
	t.Logf("generate (loaded): %v", time.Since(start))
	requireExact(t, second)
	require.Equal(t, first.text, second.text, "temperature 0 is deterministic")

	other := generate(t, srv, "tiny", "Something else entirely, with unicode: é ✓ \n")
	requireExact(t, other)

	chat := stream(t, srv, "/api/chat", map[string]any{
		"model": "tiny",
		"messages": []map[string]string{
			{"role": "system", "content": "Be brief."},
			{"role": "user", "content": "Hi"},
			{"role": "assistant", "content": "Hello"},
			{"role": "user", "content": "Tell me more."},
		},
		"options": map[string]any{"num_predict": numPredict, "temperature": 0},
	})
	t.Logf("chat: %d chunks, %q", chat.chunks, chat.text)
	requireExact(t, chat)

	// A runner serves the model, in the server's process group.
	procs := srv.Processes()
	require.GreaterOrEqual(t, len(procs), 2, "server and runner: %v", procs)

	srv.Stop()
	require.Empty(t, srv.Processes(), "no process of the group survives Stop")
	srv.Stop() // idempotent
}

func TestTwoServers(t *testing.T) {
	a := ollamatest.Start(t, ollamatest.WithNumParallel(1))
	b := ollamatest.Start(t, ollamatest.WithNumParallel(1))
	require.NotEqual(t, a.Addr(), b.Addr())
	require.NotEqual(t, a.Dir(), b.Dir())
	a.CreateTinyModel(t, "tiny")
	b.CreateTinyModel(t, "tiny")

	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, srv := range []*ollamatest.Server{a, b} {
		wg.Go(func() {
			// require in a goroutine would only stop that goroutine; stream
			// uses t.Fatal, so check the outcome in the test goroutine below.
			results[i] = generateNoFatal(t, srv)
		})
	}
	wg.Wait()
	for _, r := range results {
		requireExact(t, r)
	}
	require.Equal(t, results[0].text, results[1].text, "same model, same engine, same text")

	a.Stop()
	b.Stop()
	require.Empty(t, a.Processes())
	require.Empty(t, b.Processes())
}

// generateNoFatal runs generate in a subtest-free way that is safe off the
// test goroutine: failures are reported with Errorf and an empty result.
func generateNoFatal(t *testing.T, srv *ollamatest.Server) result {
	body, _ := json.Marshal(map[string]any{
		"model": "tiny", "prompt": "Hello", "stream": true,
		"options": map[string]any{"num_predict": numPredict, "temperature": 0},
	})
	resp, err := srv.Client().Post(srv.URL()+"/api/generate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Errorf("generate on %s: %v", srv.Addr(), err)
		return result{}
	}
	defer resp.Body.Close()
	var r result
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var c chunk
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Errorf("generate on %s: %v", srv.Addr(), err)
			return result{}
		}
		r.text += c.Response
		if c.Done {
			r.final = c
			break
		}
		if c.Response != "" {
			r.chunks++
		}
	}
	return r
}

func TestKill(t *testing.T) {
	srv := ollamatest.Start(t)
	srv.CreateTinyModel(t, "tiny")
	requireExact(t, generate(t, srv, "tiny", "load the runner"))
	require.GreaterOrEqual(t, len(srv.Processes()), 2)

	srv.Kill()
	select {
	case <-srv.Exited():
	default:
		t.Fatal("server still running after Kill")
	}
	require.Empty(t, srv.Processes(), "Kill takes the runner down too")
	_, err := http.Get(srv.URL() + "/api/version")
	require.Error(t, err)
}

func TestBinaryPath(t *testing.T) {
	t.Setenv(ollamatest.EnvBinary, "")
	t.Setenv(ollamatest.EnvCache, "/some/cache")
	require.Equal(t, "/some/cache/ollama/"+ollamatest.Version+"/bin/ollama", ollamatest.DefaultBinaryPath())
}
