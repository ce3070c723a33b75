package ollamatest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
	"github.com/sollol/mesh/services/shared/tinymodel"
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

	// Long generations with Ollama's default sampler (temperature 0.8,
	// repeat penalty) also run to their limit: the model never repeats a
	// token text, which Ollama would cut short after 30 repeats.
	long := stream(t, srv, "/api/generate", map[string]any{
		"model": "tiny", "prompt": "Go on for a while.",
		"options": map[string]any{"num_predict": 200, "seed": 1},
	})
	require.Equal(t, 200, long.final.EvalCount)
	requirePrintableASCII(t, long.text)

	// The OpenAI-compatible endpoint streams too (SSE).
	openAIChatStream(t, srv, "tiny")

	// A runner serves the model, in the server's process group.
	procs := srv.Processes()
	require.GreaterOrEqual(t, len(procs), 2, "server and runner: %v", procs)

	srv.Stop()
	require.Empty(t, srv.Processes(), "no process of the group survives Stop")
	srv.Stop() // idempotent
}

func openAIChatStream(t *testing.T, srv *ollamatest.Server, model string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"model": model, "stream": true, "max_tokens": numPredict, "temperature": 0,
		"stream_options": map[string]any{"include_usage": true},
		"messages":       []map[string]string{{"role": "user", "content": "Hi"}},
	})
	resp, err := srv.Client().Post(srv.URL()+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/event-stream")
	var text string
	var events, completionTokens int
	sawDone := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			sawDone = true
			break
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		require.NoError(t, json.Unmarshal([]byte(data), &ev))
		for _, c := range ev.Choices {
			text += c.Delta.Content
		}
		if ev.Usage != nil {
			completionTokens = ev.Usage.CompletionTokens
		}
		events++
	}
	require.NoError(t, sc.Err())
	require.True(t, sawDone)
	require.GreaterOrEqual(t, events, numPredict/2)
	require.Equal(t, numPredict, completionTokens)
	requirePrintableASCII(t, text)
}

// TestOllamaEngine runs the tiny model (in f16) on Ollama's own Go engine
// instead of the llama.cpp runner that Ollama picks for "llama" models.
func TestOllamaEngine(t *testing.T) {
	srv := ollamatest.Start(t, ollamatest.WithEnv("OLLAMA_NEW_ENGINE", "1"))
	srv.CreateTinyModelWith(t, "tiny16", tinymodel.Options{F16: true, Seed: 3})
	r := generate(t, srv, "tiny16", "Hello")
	t.Logf("ollama engine: %q", r.text)
	requireExact(t, r)
	require.Equal(t, r.text, generate(t, srv, "tiny16", "Hello").text)
	require.Contains(t, srv.Log(), "--ollama-engine --model", "runner used Ollama's engine")
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

// TestCrashedTestLeavesNoProcesses runs a test binary that starts a server,
// loads a model (so a runner child exists) and then dies by SIGKILL without
// any cleanup: the watchdog must take the whole group down.
func TestCrashedTestLeavesNoProcesses(t *testing.T) {
	if os.Getenv("OLLAMATEST_CRASH_CHILD") == "1" {
		srv := ollamatest.Start(t)
		srv.CreateTinyModel(t, "tiny")
		generate(t, srv, "tiny", "hi")
		fmt.Printf("PGID=%d PROCS=%d\n", srv.PID(), len(srv.Processes()))
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	bin := ollamatest.Binary(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashedTestLeavesNoProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OLLAMATEST_CRASH_CHILD=1", ollamatest.EnvBinary+"="+bin, "TMPDIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.Error(t, err, "the child kills itself")
	var pgid, procs int
	_, scanErr := fmt.Sscanf(string(out[bytes.Index(out, []byte("PGID=")):]), "PGID=%d PROCS=%d", &pgid, &procs)
	require.NoError(t, scanErr, "child output: %s\n%s", out, stderr.Bytes())
	require.GreaterOrEqual(t, procs, 2, "server and runner were running")
	require.Eventually(t, func() bool { return len(ollamatest.GroupMembers(pgid)) == 0 },
		10*time.Second, 20*time.Millisecond, "processes of group %d outlive the crashed test", pgid)
}

func TestBinaryMissing(t *testing.T) {
	t.Setenv(ollamatest.EnvBinary, filepath.Join(t.TempDir(), "no-ollama"))
	t.Setenv("CI", "")
	t.Setenv(ollamatest.EnvRequire, "")
	tb := &fakeTB{TB: t}
	require.Empty(t, ollamatest.Binary(tb))
	require.Empty(t, tb.fatal)
	require.Contains(t, tb.skip, "scripts/build-ollama.sh")

	t.Setenv("CI", "true")
	tb = &fakeTB{TB: t}
	ollamatest.Binary(tb)
	require.Contains(t, tb.fatal, "scripts/build-ollama.sh")

	t.Setenv("CI", "")
	t.Setenv(ollamatest.EnvRequire, "1")
	tb = &fakeTB{TB: t}
	ollamatest.Binary(tb)
	require.Contains(t, tb.fatal, "scripts/build-ollama.sh")
}

// fakeTB records Skip and Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	skip, fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	if f.skip == "" && f.fatal == "" {
		f.skip = fmt.Sprint(args...)
	}
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	if f.fatal == "" {
		f.fatal = fmt.Sprintf(format, args...)
	}
}

func TestBinaryPath(t *testing.T) {
	t.Setenv(ollamatest.EnvBinary, "")
	t.Setenv(ollamatest.EnvCache, "/some/cache")
	require.Equal(t, "/some/cache/ollama/"+ollamatest.Version+"/bin/ollama", ollamatest.DefaultBinaryPath())
}
