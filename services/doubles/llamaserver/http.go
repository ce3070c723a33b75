package llamaserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /v1/health", s.health)
	mux.HandleFunc("GET /v1/models", s.loaded(s.models))
	mux.HandleFunc("GET /models", s.loaded(s.models))
	mux.HandleFunc("GET /props", s.loaded(s.props))
	mux.HandleFunc("POST /v1/chat/completions", s.loaded(s.chat))
	mux.HandleFunc("POST /chat/completions", s.loaded(s.chat))
	mux.HandleFunc("POST /completion", s.loaded(s.completion))
	mux.HandleFunc("POST /completions", s.loaded(s.completion))
	return mux
}

// writeError answers with llama-server's error object.
func writeError(w http.ResponseWriter, code int, typ, msg string, extra map[string]any) {
	body := map[string]any{"code": code, "message": msg, "type": typ}
	for k, v := range extra {
		body[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": body})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		writeError(w, http.StatusServiceUnavailable, "unavailable_error", "Loading model", nil)
		return
	}
	writeJSON(w, map[string]string{"status": "ok"})
}

// loaded answers 503 "Loading model" until the model is loaded, as every endpoint of the real
// server does.
func (s *Server) loaded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeError(w, http.StatusServiceUnavailable, "unavailable_error", "Loading model", nil)
			return
		}
		h(w, r)
	}
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"object": "list", "data": []map[string]any{{
		"id": s.modelName(), "object": "model", "created": time.Now().Unix(), "owned_by": "llamacpp",
		"meta": map[string]any{"n_ctx_train": s.model.contextLen, "size": s.model.fileSize},
	}}})
}

func (s *Server) props(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{
		"default_generation_settings": map[string]any{"n_ctx": s.nSlot},
		"total_slots":                 s.opts.Parallel,
		"model_path":                  s.opts.Model,
		"build_info":                  "b0-sollol-double",
	})
}

// sse writes Server-Sent Events the way llama-server does: "data: <json>\n\n", flushed.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

func newSSE(w http.ResponseWriter) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	return &sse{w: w, f: f}
}

func (e *sse) data(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return e.raw("data: " + string(b) + "\n\n")
}

func (e *sse) raw(line string) bool {
	if _, err := fmt.Fprint(e.w, line); err != nil {
		return false
	}
	if e.f != nil {
		e.f.Flush()
	}
	return true
}

// timings is the real server's per-request timing object.
func timings(promptN, predictedN int, started time.Time) map[string]any {
	promptMS := float64(promptN) * 0.01
	predictedMS := float64(time.Since(started).Microseconds()) / 1000
	perToken, perSecond := 0.0, 0.0
	if predictedN > 0 && predictedMS > 0 {
		perToken = predictedMS / float64(predictedN)
		perSecond = 1000 / perToken
	}
	return map[string]any{
		"cache_n": 0, "prompt_n": promptN, "prompt_ms": promptMS,
		"prompt_per_token_ms": 0.01, "prompt_per_second": 100000.0,
		"predicted_n": predictedN, "predicted_ms": predictedMS,
		"predicted_per_token_ms": perToken, "predicted_per_second": perSecond,
	}
}

// stopList reads "stop" as a string or a list of strings.
func stopList(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("\"stop\" must be a string or an array of strings")
	}
	return many, nil
}

// checkContext refuses a prompt that does not fit a slot, with the real server's answer.
func (s *Server) checkContext(w http.ResponseWriter, prompt string) bool {
	n := promptTokens(prompt)
	if n < s.nSlot {
		return true
	}
	writeError(w, http.StatusBadRequest, "exceed_context_size_error",
		fmt.Sprintf("request (%d tokens) exceeds the available context size (%d tokens), try increasing it", n, s.nSlot),
		map[string]any{"n_prompt_tokens": n, "n_ctx": s.nSlot})
	return false
}

func containsCrash(parts ...string) bool {
	for _, p := range parts {
		if strings.Contains(p, CrashMarker) {
			return true
		}
	}
	return false
}
