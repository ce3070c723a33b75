// Package relay talks to llama-server's HTTP API: it maps the mesh's requests and generation
// options onto OpenAI chat completions (/v1/chat/completions) and llama.cpp completions
// (/completion), streams the answer token by token, and turns every way a stream can fail
// into an error that says what was sent and what came back.
package relay

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// ChatRequest is a chat completion for llama-server.
type ChatRequest struct {
	// Model is the name the mesh knows the model by (llama-server serves one model and
	// ignores it, but it shows in logs).
	Model    string
	Messages []*commonv1.ChatMessage
	Options  *commonv1.GenerationOptions
}

// CompletionRequest is a raw completion of a prompt, sent without a chat template.
type CompletionRequest struct {
	Model   string
	Prompt  string
	Options *commonv1.GenerationOptions
}

// sampling are the generation options both endpoints take under the same names.
type sampling struct {
	Temperature   *float64 `json:"temperature,omitempty"`
	TopP          *float64 `json:"top_p,omitempty"`
	TopK          *int32   `json:"top_k,omitempty"`
	MinP          *float64 `json:"min_p,omitempty"`
	RepeatPenalty *float64 `json:"repeat_penalty,omitempty"`
	Seed          *int64   `json:"seed,omitempty"`
	Stop          []string `json:"stop,omitempty"`
}

func samplingOf(o *commonv1.GenerationOptions) sampling {
	if o == nil {
		return sampling{}
	}
	return sampling{
		Temperature: o.Temperature, TopP: o.TopP, TopK: o.TopK, MinP: o.MinP,
		RepeatPenalty: o.RepeatPenalty, Seed: o.Seed, Stop: o.GetStop(),
	}
}

type wireMessage struct {
	Role    string `json:"role"`
	Content any    `json:"content"` // a string, or parts when there are images
}

type wirePart struct {
	Type     string         `json:"type"`
	Text     string         `json:"text,omitempty"`
	ImageURL *wireImagePart `json:"image_url,omitempty"`
}

type wireImagePart struct {
	URL string `json:"url"`
}

type chatWire struct {
	Model         string         `json:"model,omitempty"`
	Messages      []wireMessage  `json:"messages"`
	Stream        bool           `json:"stream"`
	StreamOptions map[string]any `json:"stream_options,omitempty"`
	MaxTokens     *int32         `json:"max_tokens,omitempty"`
	Format        map[string]any `json:"response_format,omitempty"`
	sampling
}

type completionWire struct {
	Prompt     string          `json:"prompt"`
	Stream     bool            `json:"stream"`
	NPredict   *int32          `json:"n_predict,omitempty"`
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
	sampling
}

var roleNames = map[commonv1.Role]string{
	commonv1.Role_ROLE_SYSTEM:    "system",
	commonv1.Role_ROLE_USER:      "user",
	commonv1.Role_ROLE_ASSISTANT: "assistant",
	commonv1.Role_ROLE_TOOL:      "tool",
}

// chatBody is the OpenAI request; redact replaces every text and image with its length.
func chatBody(r ChatRequest, redact bool) chatWire {
	w := chatWire{Model: r.Model, Stream: true, StreamOptions: map[string]any{"include_usage": true},
		MaxTokens: maxTokensOf(r.Options), sampling: samplingOf(r.Options)}
	if r.Options.GetFormat() == "json" {
		w.Format = map[string]any{"type": "json_object"}
	}
	for _, m := range r.Messages {
		text := m.GetContent()
		if redact {
			text = redacted(text)
		}
		if len(m.GetImages()) == 0 {
			w.Messages = append(w.Messages, wireMessage{Role: roleNames[m.GetRole()], Content: text})
			continue
		}
		parts := []wirePart{{Type: "text", Text: text}}
		for _, img := range m.GetImages() {
			url := fmt.Sprintf("<redacted: %d bytes of image>", len(img))
			if !redact {
				url = "data:" + http.DetectContentType(img) + ";base64," + base64.StdEncoding.EncodeToString(img)
			}
			parts = append(parts, wirePart{Type: "image_url", ImageURL: &wireImagePart{URL: url}})
		}
		w.Messages = append(w.Messages, wireMessage{Role: roleNames[m.GetRole()], Content: parts})
	}
	return w
}

func completionBody(r CompletionRequest, redact bool) completionWire {
	w := completionWire{Prompt: r.Prompt, Stream: true, NPredict: maxTokensOf(r.Options), sampling: samplingOf(r.Options)}
	if redact {
		w.Prompt = redacted(r.Prompt)
	}
	if r.Options.GetFormat() == "json" {
		w.JSONSchema = json.RawMessage(`{}`) // any JSON value
	}
	return w
}

func maxTokensOf(o *commonv1.GenerationOptions) *int32 {
	if o == nil {
		return nil
	}
	return o.MaxTokens
}

func redacted(s string) string { return fmt.Sprintf("<redacted: %d chars>", len(s)) }

// describe renders a request for logs and error details: prompt text redacted unless
// showText, cut to limit bytes.
func describe(body any, limit int) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<redacted: …>" readable
	if err := enc.Encode(body); err != nil {
		return "<unprintable request>"
	}
	s := strings.TrimSpace(buf.String())
	if len(s) > limit {
		s = s[:limit] + fmt.Sprintf("…(%d more bytes)", len(s)-limit)
	}
	return s
}

// truncate cuts s to n bytes for error messages.
func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
