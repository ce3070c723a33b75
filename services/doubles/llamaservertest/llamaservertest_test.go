package llamaservertest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sollol/mesh/services/doubles/llamaserver"
	"github.com/sollol/mesh/services/doubles/llamaservertest"
	"github.com/sollol/mesh/services/doubles/rpcserver"
	"github.com/sollol/mesh/services/doubles/rpcservertest"
	"github.com/sollol/mesh/services/shared/ggmlrpc"
	"github.com/sollol/mesh/services/shared/netutil"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

// Every test here runs the double, or the real llama-server and rpc-server when
// SOLLOL_LLAMA_SERVER and SOLLOL_RPC_SERVER name them; with the real ones only what they
// really do is asserted.
func TestMain(m *testing.M) {
	code := rpcservertest.Main(m)
	llamaservertest.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func tinyModel(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, tinymodel.WriteFile(path, tinymodel.Options{}))
	return path
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// post sends a JSON body and returns the response.
func post(t *testing.T, url string, body any) *http.Response {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(ctxTimeout(t, 30*time.Second), http.MethodPost, url, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// events reads an SSE body into its data payloads.
func events(t *testing.T, r io.Reader) []string {
	t.Helper()
	out, err := readEvents(r)
	require.NoError(t, err)
	return out
}

// readEvents reads data payloads until the body ends or breaks.
func readEvents(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	return out, sc.Err()
}

func TestHealthLoadingThenReadyAndChatStream(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	p := llamaservertest.Start(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}})

	resp, err := p.Get(ctxTimeout(t, 5*time.Second), "/health")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"status":"ok"}`, string(body))

	const n = 12
	chat := post(t, p.URL()+"/v1/chat/completions", map[string]any{
		"messages": []map[string]string{{"role": "user", "content": "hello"}},
		"stream":   true, "stream_options": map[string]bool{"include_usage": true},
		"max_tokens": n, "temperature": 0, "seed": 1,
	})
	require.Equal(t, http.StatusOK, chat.StatusCode)
	require.Contains(t, chat.Header.Get("Content-Type"), "text/event-stream")
	evs := events(t, chat.Body)
	require.Equal(t, "[DONE]", evs[len(evs)-1], "an OpenAI stream ends with [DONE]")
	var text strings.Builder
	var finish string
	var completion int
	for _, e := range evs[:len(evs)-1] {
		var c struct {
			Choices []struct {
				FinishReason *string `json:"finish_reason"`
				Delta        struct {
					Content *string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		require.NoError(t, json.Unmarshal([]byte(e), &c), e)
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				text.WriteString(*ch.Delta.Content)
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			completion = c.Usage.CompletionTokens
		}
	}
	require.Equal(t, "length", finish)
	require.Equal(t, n, completion, "max_tokens is honoured exactly")
	require.NotEmpty(t, text.String())
	for _, r := range text.String() {
		require.True(t, r >= 0x20 && r < 0x7f, "printable ASCII, got %q", r)
	}
}

func TestHealthAnswers503WhileLoading(t *testing.T) {
	if llamaservertest.Real() {
		t.Skip("the real llama-server loads the tiny model too fast to observe the 503 reliably")
	}
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	port, err := netutil.FreeLoopbackPort()
	require.NoError(t, err)
	var log bytes.Buffer
	srv, err := llamaserver.Start(ctx, llamaserver.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}, Port: port,
		LoadTime: time.Second, Log: &syncWriter{w: &log}})
	require.NoError(t, err)
	defer func() {
		cancel()
		require.NoError(t, srv.Wait(ctx))
	}()
	resp, err := http.Get("http://" + srv.Addr() + "/health")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.JSONEq(t, `{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}`, string(body))
	require.Eventually(t, srv.Ready, 10*time.Second, 10*time.Millisecond)
}

func TestCompletionStreamAndStopWord(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	p := llamaservertest.Start(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}})

	resp := post(t, p.URL()+"/completion", map[string]any{"prompt": "Once upon", "n_predict": 7, "stream": true, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	evs := events(t, resp.Body)
	var last struct {
		Stop            bool   `json:"stop"`
		TokensPredicted int    `json:"tokens_predicted"`
		StopType        string `json:"stop_type"`
		Timings         *struct {
			PredictedN int `json:"predicted_n"`
		} `json:"timings"`
	}
	require.NoError(t, json.Unmarshal([]byte(evs[len(evs)-1]), &last))
	require.True(t, last.Stop)
	require.Equal(t, 7, last.TokensPredicted)
	require.Equal(t, "limit", last.StopType)
	require.NotNil(t, last.Timings)
	require.Len(t, evs, 8, "seven tokens and the final object, no [DONE] on /completion")
}

func TestPromptLargerThanTheSlotIsRefused(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	p := llamaservertest.Start(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}, CtxSize: 256, Parallel: 1})
	resp := post(t, p.URL()+"/v1/chat/completions", map[string]any{
		"messages": []map[string]string{{"role": "user", "content": strings.Repeat("many words here ", 200)}},
	})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var e struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	require.Equal(t, "exceed_context_size_error", e.Error.Type)
}

func TestUnreachableBackendAbortsAtStart(t *testing.T) {
	closed, err := netutil.FreeLoopbackAddr()
	require.NoError(t, err)
	p, err := llamaservertest.TryStart(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{closed}, StartTimeout: 30 * time.Second})
	require.Error(t, err)
	<-p.Exited()
	require.Equal(t, llamaserver.ExitAbort, p.ExitStatus(), p.Output())
	require.Contains(t, p.Output(), "Failed to connect to "+closed)
}

func TestBackendLostUnderARunningServerAbortsIt(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	p := llamaservertest.Start(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}})
	rpc.Kill()
	// The real server notices on its next command to the backend; a request makes it talk.
	req, _ := http.NewRequestWithContext(ctxTimeout(t, 10*time.Second), http.MethodPost, p.URL()+"/completion",
		strings.NewReader(`{"prompt":"hi","n_predict":4}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("llama-server still runs after its rpc backend died")
	}
	require.Equal(t, llamaserver.ExitAbort, p.ExitStatus())
	require.Contains(t, p.Output(), "Remote RPC server crashed or returned malformed response")
}

func TestServerHoldsItsBackends(t *testing.T) {
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	llamaservertest.Start(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}})
	_, err := ggmlrpc.Probe(ctxTimeout(t, 300*time.Millisecond), rpc.Addr())
	require.ErrorIs(t, err, ggmlrpc.ErrNoReply, "an rpc-server serves one client at a time: llama-server holds it")
}

func TestModelThatDoesNotFitFailsToLoad(t *testing.T) {
	if rpcservertest.Real() || llamaservertest.Real() {
		t.Skip("the real rpc-server reports the machine's memory, which the tiny model always fits")
	}
	rpc := rpcservertest.Start(t, rpcservertest.Options{Devices: []rpcserver.DeviceMemory{{Free: 0, Total: 1 << 20}}})
	p, err := llamaservertest.TryStart(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}})
	require.Error(t, err)
	<-p.Exited()
	require.Equal(t, llamaserver.ExitFailure, p.ExitStatus())
	require.Contains(t, p.Output(), "unable to allocate RPC0["+rpc.Addr()+"] buffer")
}

func TestCrashOnDemandMidStream(t *testing.T) {
	if llamaservertest.Real() {
		t.Skip("crash on demand is a feature of the double")
	}
	rpc := rpcservertest.Start(t, rpcservertest.Options{})
	p := llamaservertest.Start(t, llamaservertest.Options{Model: tinyModel(t), RPC: []string{rpc.Addr()}})
	resp := post(t, p.URL()+"/v1/chat/completions", map[string]any{
		"messages": []map[string]string{{"role": "user", "content": llamaserver.CrashMarker}}, "stream": true, "max_tokens": 50,
	})
	evs, _ := readEvents(resp.Body)
	require.NotContains(t, evs, "[DONE]", "the stream is cut, never finished")
	<-p.Exited()
	require.Equal(t, llamaserver.ExitAbort, p.ExitStatus())
}

// syncWriter serialises writes to a buffer read after the server stopped.
type syncWriter struct{ w io.Writer }

func (s *syncWriter) Write(b []byte) (int, error) { return s.w.Write(b) }
