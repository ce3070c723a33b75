package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// systemFingerprint identifies the backend configuration, as OpenAI's field does; the mesh
// has one configuration per route, named in the X-Sollol-* headers instead.
const systemFingerprint = "fp_sollol"

// openaiEncoder renders chat completions (chat) or legacy text completions in OpenAI's
// shapes: SSE "data:" events ending with [DONE] when streamed, one object otherwise.
type openaiEncoder struct {
	id           string
	created      int64
	model        string
	chat         bool
	includeUsage bool
	sentRole     bool
}

func newOpenAIEncoder(model string, chat bool, so *streamOptions) *openaiEncoder {
	prefix := "cmpl-"
	if chat {
		prefix = "chatcmpl-"
	}
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return &openaiEncoder{id: prefix + hex.EncodeToString(b[:]), created: time.Now().Unix(), model: model,
		chat: chat, includeUsage: so != nil && so.IncludeUsage}
}

type openaiUsage struct {
	PromptTokens     uint32 `json:"prompt_tokens"`
	CompletionTokens uint32 `json:"completion_tokens"`
	TotalTokens      uint32 `json:"total_tokens"`
}

func usageOf(done *commonv1.Done) *openaiUsage {
	u := done.GetUsage()
	return &openaiUsage{PromptTokens: u.GetPromptTokens(), CompletionTokens: u.GetCompletionTokens(),
		TotalTokens: u.GetPromptTokens() + u.GetCompletionTokens()}
}

// openaiDelta is a chat message or a streamed delta of one.
type openaiDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type openaiChoice struct {
	Index        int          `json:"index"`
	Delta        *openaiDelta `json:"delta,omitempty"`
	Message      *openaiDelta `json:"message,omitempty"`
	Text         *string      `json:"text,omitempty"`
	Logprobs     *struct{}    `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

type openaiObject struct {
	ID                string         `json:"id"`
	Object            string         `json:"object"`
	Created           int64          `json:"created"`
	Model             string         `json:"model"`
	SystemFingerprint string         `json:"system_fingerprint"`
	Choices           []openaiChoice `json:"choices"`
	Usage             *openaiUsage   `json:"usage,omitempty"`
}

func (e *openaiEncoder) object(stream bool, choices ...openaiChoice) *openaiObject {
	kind := "text_completion"
	switch {
	case e.chat && stream:
		kind = "chat.completion.chunk"
	case e.chat:
		kind = "chat.completion"
	}
	if choices == nil {
		choices = []openaiChoice{}
	}
	return &openaiObject{ID: e.id, Object: kind, Created: e.created, Model: e.model, SystemFingerprint: systemFingerprint, Choices: choices}
}

// choice is the single choice holding text; a chat stream's first delta carries the role.
func (e *openaiEncoder) choice(text string, stream bool, finish *string) openaiChoice {
	c := openaiChoice{FinishReason: finish}
	switch {
	case !e.chat:
		c.Text = &text
	case stream:
		c.Delta = &openaiDelta{}
		if !e.sentRole {
			c.Delta.Role, e.sentRole = "assistant", true
		}
		if text != "" {
			c.Delta.Content = &text
		}
	default:
		c.Message = &openaiDelta{Role: "assistant", Content: &text}
	}
	return c
}

// finishReason maps the backend's done reason onto OpenAI's: "length" when the token limit
// cut the answer, "stop" otherwise.
func finishReason(done *commonv1.Done) *string {
	r := "stop"
	if done.GetDoneReason() == "length" {
		r = "length"
	}
	return &r
}

func sse(v any) []byte {
	b, _ := json.Marshal(v) // plain structs of strings and numbers: cannot fail
	out := make([]byte, 0, len(b)+8)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, '\n', '\n')
}

func (e *openaiEncoder) streamContentType() string { return "text/event-stream" }

func (e *openaiEncoder) chunk(text string) []byte {
	return sse(e.object(true, e.choice(text, true, nil)))
}

// progress goes out as an SSE comment, which every SSE client skips and which keeps the
// connection visibly alive while a coordinator loads.
func (e *openaiEncoder) progress(p *commonv1.LoadProgress, _ time.Duration) []byte {
	msg := fmt.Sprintf(": sollol loading %s: %s", p.GetModel(), p.GetStage())
	if p.Fraction != nil {
		msg += fmt.Sprintf(" %.0f%%", p.GetFraction()*100)
	}
	return []byte(headerSafe(msg) + "\n\n")
}

// end closes a stream: the finishing chunk, the usage chunk (empty choices) when the client
// asked for it with stream_options.include_usage, and [DONE].
func (e *openaiEncoder) end(done *commonv1.Done, _ time.Duration) []byte {
	out := sse(e.object(true, e.choice("", true, finishReason(done))))
	if e.includeUsage {
		o := e.object(true)
		o.Usage = usageOf(done)
		out = append(out, sse(o)...)
	}
	return append(out, "data: [DONE]\n\n"...)
}

func (e *openaiEncoder) whole(done *commonv1.Done, text string, _ time.Duration) any {
	o := e.object(false, e.choice(text, false, finishReason(done)))
	o.Usage = usageOf(done)
	return o
}

// streamError is the stream's last event, in the error shape OpenAI's SDKs look for.
func (e *openaiEncoder) streamError(ae *apiError) []byte { return sse(openaiError(ae)) }

func (e *openaiEncoder) writeError(w http.ResponseWriter, ae *apiError) { writeOpenAIError(w, ae) }
