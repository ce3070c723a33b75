package llamaserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// chatRequest is the part of an OpenAI chat request the double reads.
type chatRequest struct {
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream        bool `json:"stream"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	NPredict            *int            `json:"n_predict"`
	Stop                json.RawMessage `json:"stop"`
	Seed                *int64          `json:"seed"`
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// render turns the conversation into the prompt, a plain "Role: text" template.
func (r *chatRequest) render() (string, error) {
	var b strings.Builder
	for i, m := range r.Messages {
		var text string
		if err := json.Unmarshal(m.Content, &text); err != nil {
			var parts []contentPart
			if err := json.Unmarshal(m.Content, &parts); err != nil {
				return "", fmt.Errorf("messages[%d]: content must be a string or an array of parts", i)
			}
			for _, p := range parts {
				if p.Type != "text" {
					return "", fmt.Errorf("image input is not supported - hint: if this is unexpected, you may need to provide the mmproj")
				}
				text += p.Text
			}
		}
		fmt.Fprintf(&b, "%s: %s\n", m.Role, text)
	}
	b.WriteString("assistant:")
	return b.String(), nil
}

func firstSet(vals ...*int) int {
	for _, v := range vals {
		if v != nil {
			return *v
		}
	}
	return -1
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "[json.exception.parse_error] "+err.Error(), nil)
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "'messages' is required", nil)
		return
	}
	prompt, err := req.render()
	stops, serr := stopList(req.Stop)
	if err == nil {
		err = serr
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error(), nil)
		return
	}
	if !s.checkContext(w, prompt) {
		return
	}
	g := genRequest{prompt: prompt, nPredict: firstSet(req.MaxTokens, req.MaxCompletionTokens, req.NPredict),
		stop: stops, crash: containsCrash(prompt), usage: req.StreamOptions.IncludeUsage, streaming: req.Stream}
	if req.Seed != nil {
		g.seed = uint64(*req.Seed)
	}
	id := fmt.Sprintf("chatcmpl-%d%08d", time.Now().Unix()%100000, s.seq.Add(1))
	base := func() map[string]any {
		return map[string]any{"created": time.Now().Unix(), "id": id, "model": s.modelName(),
			"system_fingerprint": "b0-sollol-double", "object": "chat.completion.chunk"}
	}
	started := time.Now()
	nPrompt := promptTokens(prompt)
	if !req.Stream {
		var text strings.Builder
		var last genEvent
		if err := s.generate(r.Context(), g, func(e genEvent) bool { text.WriteString(e.text); last = e; return true }); err != nil {
			return
		}
		resp := base()
		resp["object"] = "chat.completion"
		resp["choices"] = []map[string]any{{"finish_reason": finishReason(last), "index": 0,
			"message": map[string]any{"role": "assistant", "content": text.String()}}}
		resp["usage"] = usage(nPrompt, last.predicted)
		resp["timings"] = timings(nPrompt, last.predicted, started)
		writeJSON(w, resp)
		return
	}
	out := newSSE(w)
	first := base()
	first["choices"] = []map[string]any{{"finish_reason": nil, "index": 0, "delta": map[string]any{"role": "assistant", "content": nil}}}
	if !out.data(first) {
		return
	}
	_ = s.generate(r.Context(), g, func(e genEvent) bool {
		if !e.final {
			c := base()
			c["choices"] = []map[string]any{{"finish_reason": nil, "index": 0, "delta": map[string]any{"content": e.text}}}
			return out.data(c)
		}
		fin := base()
		fin["choices"] = []map[string]any{{"finish_reason": finishReason(e), "index": 0, "delta": map[string]any{}}}
		chunks := []map[string]any{fin}
		if g.usage {
			u := base()
			u["choices"] = []map[string]any{}
			u["usage"] = usage(nPrompt, e.predicted)
			chunks = append(chunks, u)
		}
		chunks[len(chunks)-1]["timings"] = timings(nPrompt, e.predicted, started)
		for _, c := range chunks {
			if !out.data(c) {
				return false
			}
		}
		return out.raw("data: [DONE]\n\n")
	})
}

func finishReason(e genEvent) string {
	if e.stopType == "word" || e.stopType == "eos" {
		return "stop"
	}
	return "length"
}

func usage(prompt, completion int) map[string]any {
	return map[string]any{"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion,
		"prompt_tokens_details": map[string]any{"cached_tokens": 0}}
}

// completionRequest is the part of a /completion request the double reads.
type completionRequest struct {
	Prompt   json.RawMessage `json:"prompt"`
	NPredict *int            `json:"n_predict"`
	Max      *int            `json:"max_tokens"`
	Stream   bool            `json:"stream"`
	Stop     json.RawMessage `json:"stop"`
	Seed     *int64          `json:"seed"`
}

func (s *Server) completion(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "[json.exception.parse_error] "+err.Error(), nil)
		return
	}
	var prompt string
	if err := json.Unmarshal(req.Prompt, &prompt); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "\"prompt\" must be a string", nil)
		return
	}
	stops, err := stopList(req.Stop)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error(), nil)
		return
	}
	if !s.checkContext(w, prompt) {
		return
	}
	g := genRequest{prompt: prompt, nPredict: firstSet(req.NPredict, req.Max), stop: stops, crash: containsCrash(prompt), streaming: req.Stream}
	if req.Seed != nil {
		g.seed = uint64(*req.Seed)
	}
	started := time.Now()
	nPrompt := promptTokens(prompt)
	final := func(e genEvent, content string) map[string]any {
		return map[string]any{"index": 0, "content": content, "tokens": []int{}, "id_slot": 0, "stop": true,
			"model": s.modelName(), "tokens_predicted": e.predicted, "tokens_evaluated": nPrompt,
			"prompt": prompt, "has_new_line": false, "truncated": false, "stop_type": e.stopType,
			"stopping_word": e.stopWord, "tokens_cached": nPrompt + e.predicted,
			"timings": timings(nPrompt, e.predicted, started)}
	}
	if !req.Stream {
		var text strings.Builder
		var last genEvent
		if err := s.generate(r.Context(), g, func(e genEvent) bool { text.WriteString(e.text); last = e; return true }); err != nil {
			return
		}
		writeJSON(w, final(last, text.String()))
		return
	}
	out := newSSE(w)
	_ = s.generate(r.Context(), g, func(e genEvent) bool {
		if e.final {
			return out.data(final(e, ""))
		}
		return out.data(map[string]any{"index": 0, "content": e.text, "tokens": []int{e.id}, "stop": false,
			"id_slot": -1, "tokens_predicted": e.predicted, "tokens_evaluated": nPrompt})
	})
}
