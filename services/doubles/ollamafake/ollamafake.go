// Package ollamafake is a fast in-process stand-in for an Ollama server, for benchmarks
// that must measure the mesh rather than a model, and for unit tests of protocol cases a
// real Ollama cannot be made to produce on demand (an error line mid-stream, a stream cut
// short, silence). It speaks Ollama's wire format: NDJSON streams from /api/chat and
// /api/generate with the final chunk's counts, /api/embed, /api/tags, /api/ps, /api/version.
// Everything that can run a real Ollama uses the real one (testutil/ollamatest).
package ollamafake

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Token gaps for benchmarks.
const (
	// TypicalGap streams 100 tokens/s per stream: what the real Ollama with the tiny model
	// delivers per stream at 64 concurrent streams on the project's 2-core machine (about
	// 6,000 tokens/s in all, see BENCHMARKS.md), and the fast end of what real models
	// stream to one client.
	TypicalGap = 10 * time.Millisecond
	// StressGap is ten times that rate, to load the relay path with tokens.
	StressGap = time.Millisecond
)

// Behaviour tunes what the fake answers.
type Behaviour struct {
	// Tokens is how many chunks a stream sends when the request sets no num_predict.
	Tokens int
	// Gap is the pause between two chunks. The first chunk goes out at once, so a client's
	// time to first token is the path's own overhead.
	Gap time.Duration
	// FirstGap, when set, is the pause before the first chunk (a model "thinking").
	FirstGap time.Duration
	// Status, when not 0 or 200, is answered to every inference request instead.
	Status int
	// CutAfter, when > 0, ends the stream after that many chunks without the final one.
	CutAfter int
	// ErrorAfter, when > 0, sends an {"error": …} line after that many chunks.
	ErrorAfter int
	// StallAfter, when > 0, goes silent after that many chunks until the client leaves.
	StallAfter int
	// Models are the installed models /api/tags lists; default "fake:latest".
	Models []string
}

// Server is a running fake.
type Server struct {
	srv       *http.Server
	lis       net.Listener
	behaviour atomic.Pointer[Behaviour]
	requests  atomic.Int64
	cancelled atomic.Int64
}

// Start serves on a free loopback port.
func Start(b Behaviour) (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{lis: lis}
	s.Set(b)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/chat", s.stream)
	mux.HandleFunc("POST /api/generate", s.stream)
	mux.HandleFunc("POST /api/embed", s.embed)
	mux.HandleFunc("GET /api/version", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, map[string]string{"version": "0.0.0-fake"}) })
	mux.HandleFunc("GET /api/tags", s.tags)
	mux.HandleFunc("GET /api/ps", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, map[string]any{"models": []any{}}) })
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

// Addr is host:port.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Set changes the behaviour for later requests.
func (s *Server) Set(b Behaviour) {
	if b.Tokens <= 0 {
		b.Tokens = 16
	}
	if len(b.Models) == 0 {
		b.Models = []string{"fake:latest"}
	}
	s.behaviour.Store(&b)
}

// Requests counts inference requests received; Cancelled those whose client left mid-way.
func (s *Server) Requests() int64  { return s.requests.Load() }
func (s *Server) Cancelled() int64 { return s.cancelled.Load() }

// Close stops the server and its open streams.
func (s *Server) Close() error { return s.srv.Close() }

type request struct {
	Model   string `json:"model"`
	Options struct {
		NumPredict int `json:"num_predict"`
	} `json:"options"`
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	b := *s.behaviour.Load()
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
		return
	}
	if b.Status != 0 && b.Status != http.StatusOK {
		w.WriteHeader(b.Status)
		writeJSON(w, map[string]string{"error": http.StatusText(b.Status)})
		return
	}
	tokens := b.Tokens
	if req.Options.NumPredict > 0 {
		tokens = req.Options.NumPredict
	}
	chat := r.URL.Path == "/api/chat"
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher := w.(http.Flusher)
	enc := json.NewEncoder(w)
	start := time.Now()
	for i := range tokens {
		switch {
		case b.CutAfter > 0 && i == b.CutAfter:
			return
		case b.ErrorAfter > 0 && i == b.ErrorAfter:
			_ = enc.Encode(map[string]string{"error": "fake failure after " + strconv.Itoa(i) + " chunks"})
			return
		case b.StallAfter > 0 && i == b.StallAfter:
			<-r.Context().Done()
			s.cancelled.Add(1)
			return
		}
		pause := b.Gap
		if i == 0 {
			pause = b.FirstGap
		}
		if pause > 0 {
			select {
			case <-time.After(pause):
			case <-r.Context().Done():
				s.cancelled.Add(1)
				return
			}
		}
		text := fmt.Sprintf("t%d ", i)
		if err := enc.Encode(chunk(req.Model, chat, text, false)); err != nil {
			s.cancelled.Add(1)
			return
		}
		flusher.Flush()
	}
	final := chunk(req.Model, chat, "", true)
	final["done_reason"] = "length"
	final["eval_count"] = tokens
	final["prompt_eval_count"] = 8
	final["total_duration"] = time.Since(start).Nanoseconds()
	final["eval_duration"] = time.Since(start).Nanoseconds()
	_ = enc.Encode(final)
	flusher.Flush()
}

func chunk(model string, chat bool, text string, done bool) map[string]any {
	c := map[string]any{"model": model, "created_at": time.Now().UTC().Format(time.RFC3339Nano), "done": done}
	if chat {
		c["message"] = map[string]string{"role": "assistant", "content": text}
	} else {
		c["response"] = text
	}
	return c
}

func (s *Server) embed(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	var req struct {
		Input []string `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
		return
	}
	out := make([][]float32, len(req.Input))
	for i, in := range req.Input {
		out[i] = []float32{float32(len(in)), float32(i)}
	}
	writeJSON(w, map[string]any{"embeddings": out, "prompt_eval_count": len(req.Input)})
}

func (s *Server) tags(w http.ResponseWriter, _ *http.Request) {
	var models []map[string]any
	for _, m := range s.behaviour.Load().Models {
		models = append(models, map[string]any{"name": m, "model": m, "size": 1 << 20, "digest": "fake"})
	}
	writeJSON(w, map[string]any{"models": models})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// StartT starts a fake for a test or benchmark, failing it when the fake cannot listen, and
// closes the fake when it ends.
func StartT(tb testing.TB, b Behaviour) *Server {
	tb.Helper()
	s, err := Start(b)
	if err != nil {
		tb.Fatalf("ollamafake: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}
