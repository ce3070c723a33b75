package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
)

// An OpenAI SDK, unchanged, against the router's /v1: chat (streamed and not), legacy
// completions, embeddings and the model list, served by the pool.
func TestHTTPOpenAIGoClient(t *testing.T) {
	h := startHTTPMesh(t)
	client := openai.NewClient(option.WithBaseURL(h.url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx := context.Background()
	user := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("hello")}

	t.Run("chat", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "tiny", Messages: user, MaxTokens: openai.Int(8), Temperature: openai.Float(0.2), Seed: openai.Int(1),
		})
		require.NoError(t, err)
		require.Equal(t, "chat.completion", string(resp.Object))
		require.Len(t, resp.Choices, 1)
		require.NotEmpty(t, resp.Choices[0].Message.Content)
		require.Equal(t, "length", resp.Choices[0].FinishReason, "the tiny model never stops by itself")
		require.EqualValues(t, 8, resp.Usage.CompletionTokens)
		require.Equal(t, resp.Usage.PromptTokens+resp.Usage.CompletionTokens, resp.Usage.TotalTokens)
	})

	t.Run("chat stream with usage", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "tiny", Messages: user, MaxCompletionTokens: openai.Int(7),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		var acc openai.ChatCompletionAccumulator
		contentChunks, finishes := 0, 0
		var usage *openai.CompletionUsage
		for stream.Next() {
			c := stream.Current()
			acc.AddChunk(c)
			require.Equal(t, "chat.completion.chunk", string(c.Object))
			if len(c.Choices) == 0 {
				usage = &c.Usage
				continue
			}
			if c.Choices[0].Delta.Content != "" {
				contentChunks++
			}
			if c.Choices[0].FinishReason != "" {
				finishes++
			}
		}
		require.NoError(t, stream.Err())
		require.NoError(t, stream.Close())
		require.Equal(t, 7, contentChunks, "one chunk per token")
		require.Equal(t, 1, finishes)
		require.NotNil(t, usage, "include_usage adds a usage chunk")
		require.EqualValues(t, 7, usage.CompletionTokens)
		require.NotEmpty(t, acc.Choices[0].Message.Content)
	})

	t.Run("completions", func(t *testing.T) {
		resp, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")}, MaxTokens: openai.Int(5),
			Stop: openai.CompletionNewParamsStopUnion{OfStringArray: []string{"\n\n\n\n"}},
		})
		require.NoError(t, err)
		require.Len(t, resp.Choices, 1)
		require.NotEmpty(t, resp.Choices[0].Text)
		require.EqualValues(t, 5, resp.Usage.CompletionTokens)

		stream := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
			Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")}, MaxTokens: openai.Int(4),
		})
		texts := 0
		for stream.Next() {
			if c := stream.Current(); len(c.Choices) > 0 && c.Choices[0].Text != "" {
				texts++
			}
		}
		require.NoError(t, stream.Err())
		require.Equal(t, 4, texts)
	})

	t.Run("embeddings", func(t *testing.T) {
		resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "tiny", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "bc"}},
		})
		require.NoError(t, err)
		require.Len(t, resp.Data, 2)
		require.EqualValues(t, 1, resp.Data[1].Index)
		require.NotEmpty(t, resp.Data[0].Embedding)
		b64, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "tiny", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("a")},
			EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64,
		})
		require.NoError(t, err)
		require.InDeltaSlice(t, resp.Data[0].Embedding, b64.Data[0].Embedding, 1e-6, "base64 decodes to the same floats")
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		require.NoError(t, err)
		require.Len(t, page.Data, 1)
		require.Equal(t, "tiny:latest", page.Data[0].ID)
		m, err := client.Models.Get(ctx, "tiny")
		require.NoError(t, err)
		require.Equal(t, "tiny:latest", m.ID)
	})

	t.Run("errors", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "nope", Messages: user})
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
		require.Equal(t, "model_not_found", apiErr.Code)
		require.Equal(t, "invalid_request_error", apiErr.Type)

		_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "tiny", Messages: user, N: openai.Int(2)})
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		require.Equal(t, "n", apiErr.Param)
	})
}

// The REST gateway mounted beside the Ollama and OpenAI APIs still streams NDJSON from the
// router's gRPC Chat, through the pool.
func TestHTTPRESTGatewayBesideTheCompatAPIs(t *testing.T) {
	h := startHTTPMesh(t)
	resp := h.post(t, context.Background(), "/sollol/v1/chat", map[string]any{
		"model":    "tiny",
		"messages": []map[string]any{{"role": "ROLE_USER", "content": "hello"}},
		"options":  map[string]any{"max_tokens": 5},
	})
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	chunks := 0
	var done map[string]any
	for _, l := range lines(t, resp.Body) {
		var ev struct {
			Result map[string]any `json:"result"`
			Error  map[string]any `json:"error"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &ev), l)
		require.Nil(t, ev.Error, l)
		if _, ok := ev.Result["chunk"]; ok {
			chunks++
		}
		if d, ok := ev.Result["done"].(map[string]any); ok {
			done = d
		}
	}
	require.Equal(t, 5, chunks)
	require.NotNil(t, done)
	route, _ := done["route"].(map[string]any)
	require.Equal(t, "ROUTE_PATH_POOL", route["path"])

	var models map[string]any
	h.get(t, "/sollol/v1/models", &models)
	require.Contains(t, strings.ToLower(func() string { b, _ := json.Marshal(models); return string(b) }()), "tiny")
}
