// Package ollama is the pool's client of Ollama's HTTP API: streamed /api/chat and
// /api/generate read chunk by chunk, /api/embed, and model warm-up, with every failure
// classified so the pool can tell a busy node from a broken one.
package ollama

import (
	"encoding/json"
	"time"
)

// Message is one chat turn in Ollama's wire format (images are base64 in JSON, which
// encoding/json does for []byte).
type Message struct {
	Role    string   `json:"role"`
	Content string   `json:"content"`
	Images  [][]byte `json:"images,omitempty"`
}

// Options are Ollama's sampling and runtime options; nil fields are left to the node.
type Options struct {
	Temperature   *float64 `json:"temperature,omitempty"`
	TopP          *float64 `json:"top_p,omitempty"`
	TopK          *int32   `json:"top_k,omitempty"`
	MinP          *float64 `json:"min_p,omitempty"`
	RepeatPenalty *float64 `json:"repeat_penalty,omitempty"`
	Seed          *int64   `json:"seed,omitempty"`
	Stop          []string `json:"stop,omitempty"`
	NumPredict    *int32   `json:"num_predict,omitempty"`
	NumCtx        *int32   `json:"num_ctx,omitempty"`
}

// KeepAlive is Ollama's keep_alive: seconds as a number; negative keeps the model loaded.
type KeepAlive struct{ D time.Duration }

// MarshalJSON writes seconds, which every Ollama version accepts.
func (k KeepAlive) MarshalJSON() ([]byte, error) { return json.Marshal(k.D.Seconds()) }

// ChatRequest is the body of POST /api/chat.
type ChatRequest struct {
	Model     string     `json:"model"`
	Messages  []Message  `json:"messages"`
	Stream    bool       `json:"stream"`
	Format    string     `json:"format,omitempty"`
	Options   *Options   `json:"options,omitempty"`
	KeepAlive *KeepAlive `json:"keep_alive,omitempty"`
}

// GenerateRequest is the body of POST /api/generate. With an empty prompt it only loads the
// model, which is how warm-up works.
type GenerateRequest struct {
	Model     string     `json:"model"`
	Prompt    string     `json:"prompt"`
	System    string     `json:"system,omitempty"`
	Raw       bool       `json:"raw,omitempty"`
	Stream    bool       `json:"stream"`
	Format    string     `json:"format,omitempty"`
	Options   *Options   `json:"options,omitempty"`
	KeepAlive *KeepAlive `json:"keep_alive,omitempty"`
}

// EmbedRequest is the body of POST /api/embed.
type EmbedRequest struct {
	Model      string     `json:"model"`
	Input      []string   `json:"input"`
	Truncate   *bool      `json:"truncate,omitempty"`
	Dimensions *int32     `json:"dimensions,omitempty"`
	KeepAlive  *KeepAlive `json:"keep_alive,omitempty"`
}

// EmbedResponse is the answer of POST /api/embed.
type EmbedResponse struct {
	Embeddings      [][]float32 `json:"embeddings"`
	PromptEvalCount uint32      `json:"prompt_eval_count"`
}

// Chunk is one line of a streamed answer, chat or generate. The last one has Done set and
// carries the counts and durations (nanoseconds, as Ollama reports them).
type Chunk struct {
	Message *struct {
		Content string `json:"content"`
	} `json:"message,omitempty"`
	Response           string `json:"response,omitempty"`
	Done               bool   `json:"done"`
	DoneReason         string `json:"done_reason,omitempty"`
	TotalDuration      int64  `json:"total_duration,omitempty"`
	LoadDuration       int64  `json:"load_duration,omitempty"`
	PromptEvalCount    uint32 `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64  `json:"prompt_eval_duration,omitempty"`
	EvalCount          uint32 `json:"eval_count,omitempty"`
	EvalDuration       int64  `json:"eval_duration,omitempty"`
	Error              string `json:"error,omitempty"`
}

// Text is the chunk's new text, whichever endpoint produced it.
func (c *Chunk) Text() string {
	if c.Message != nil {
		return c.Message.Content
	}
	return c.Response
}
