package relay

import (
	"encoding/json"
	"fmt"
	"time"
)

// timingsWire is llama-server's per-request timing object.
type timingsWire struct {
	PromptN     int     `json:"prompt_n"`
	PromptMS    float64 `json:"prompt_ms"`
	PredictedN  int     `json:"predicted_n"`
	PredictedMS float64 `json:"predicted_ms"`
}

func (t *timingsWire) apply(res *Result) {
	if t == nil {
		return
	}
	res.PromptEval = time.Duration(t.PromptMS * float64(time.Millisecond))
	res.Eval = time.Duration(t.PredictedMS * float64(time.Millisecond))
	if res.PromptTokens == 0 {
		res.PromptTokens = uint32(t.PromptN)
	}
	if res.CompletionTokens == 0 {
		res.CompletionTokens = uint32(t.PredictedN)
	}
}

// chatDecoder reads OpenAI chat.completion.chunk objects: deltas, a chunk with the
// finish_reason, then (with include_usage) a chunk with usage; "[DONE]" ends the stream.
type chatDecoder struct{}

type chatChunk struct {
	Choices []struct {
		FinishReason *string `json:"finish_reason"`
		Delta        struct {
			Content *string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     uint32 `json:"prompt_tokens"`
		CompletionTokens uint32 `json:"completion_tokens"`
	} `json:"usage"`
	Timings *timingsWire `json:"timings"`
}

func (chatDecoder) needsDone() bool { return true }

func (chatDecoder) event(data []byte, res *Result) (string, bool, error) {
	var c chatChunk
	if err := json.Unmarshal(data, &c); err != nil {
		return "", false, fmt.Errorf("malformed chunk %q: %w", truncate(string(data), 200), err)
	}
	var text string
	final := false
	for _, ch := range c.Choices {
		if ch.Delta.Content != nil {
			text += *ch.Delta.Content
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			res.FinishReason = *ch.FinishReason
			final = true
		}
	}
	if c.Usage != nil {
		res.PromptTokens, res.CompletionTokens = c.Usage.PromptTokens, c.Usage.CompletionTokens
		final = final || res.FinishReason != ""
	}
	c.Timings.apply(res)
	return text, final, nil
}

// completionDecoder reads llama.cpp's /completion stream: {"content":…,"stop":false} per
// token, then one object with "stop":true, counts and timings (and no [DONE]).
type completionDecoder struct{}

type completionChunk struct {
	Content         string       `json:"content"`
	Stop            bool         `json:"stop"`
	StopType        string       `json:"stop_type"`
	TokensPredicted uint32       `json:"tokens_predicted"`
	TokensEvaluated uint32       `json:"tokens_evaluated"`
	Timings         *timingsWire `json:"timings"`
}

func (completionDecoder) needsDone() bool { return false }

func (completionDecoder) event(data []byte, res *Result) (string, bool, error) {
	var c completionChunk
	if err := json.Unmarshal(data, &c); err != nil {
		return "", false, fmt.Errorf("malformed chunk %q: %w", truncate(string(data), 200), err)
	}
	if !c.Stop {
		return c.Content, false, nil
	}
	res.PromptTokens, res.CompletionTokens = c.TokensEvaluated, c.TokensPredicted
	switch c.StopType {
	case "eos", "word":
		res.FinishReason = "stop"
	case "limit", "":
		res.FinishReason = "length"
	default:
		res.FinishReason = c.StopType
	}
	c.Timings.apply(res)
	return c.Content, true, nil
}
