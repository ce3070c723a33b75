package inference_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

func user(text string) *commonv1.ChatMessage {
	return &commonv1.ChatMessage{Role: commonv1.Role_ROLE_USER, Content: text}
}

func TestValidationNamesTheField(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		field string
	}{
		{"empty model", inference.Model("model", " "), "model"},
		{"model with space", inference.Model("model", "llama 3"), "model"},
		{"no messages", inference.Messages("messages", nil), "messages"},
		{"unknown role", inference.Messages("messages", []*commonv1.ChatMessage{user("hi"), {Role: 42, Content: "x"}}), "messages[1].role"},
		{"unset role", inference.Messages("messages", []*commonv1.ChatMessage{{Content: "x"}}), "messages[0].role"},
		{"empty message", inference.Messages("messages", []*commonv1.ChatMessage{user("")}), "messages[0].content"},
		{"bad utf-8", inference.Messages("messages", []*commonv1.ChatMessage{user("\xff")}), "messages[0].content"},
		{"negative temperature", inference.Options("options", &commonv1.GenerationOptions{Temperature: proto.Float64(-1)}), "options.temperature"},
		{"top_p zero", inference.Options("options", &commonv1.GenerationOptions{TopP: proto.Float64(0)}), "options.top_p"},
		{"max_tokens zero", inference.Options("options", &commonv1.GenerationOptions{MaxTokens: proto.Int32(0)}), "options.max_tokens"},
		{"absurd context", inference.Options("options", &commonv1.GenerationOptions{ContextSize: proto.Int32(1 << 30)}), "options.context_size"},
		{"empty stop", inference.Options("options", &commonv1.GenerationOptions{Stop: []string{"a", ""}}), "options.stop[1]"},
		{"bad format", inference.Options("options", &commonv1.GenerationOptions{Format: "xml"}), "options.format"},
		{"bad keep_alive", inference.Options("options", &commonv1.GenerationOptions{KeepAlive: &durationpb.Duration{Seconds: 1, Nanos: -1}}), "options.keep_alive"},
		{"bad prompt", inference.Prompt("prompt", "\xc3"), "prompt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Error(t, tt.err)
			st := status.Convert(rpcerr.ToStatus(tt.err))
			require.Equal(t, codes.InvalidArgument, st.Code())
			require.Contains(t, st.Message(), tt.field)
		})
	}
}

func TestValidInputPasses(t *testing.T) {
	require.NoError(t, inference.Model("model", "llama3.2:3b"))
	require.NoError(t, inference.Messages("messages", []*commonv1.ChatMessage{
		{Role: commonv1.Role_ROLE_SYSTEM, Content: "be brief"}, user("hi"),
		{Role: commonv1.Role_ROLE_USER, Images: [][]byte{{1}}},
	}))
	require.NoError(t, inference.Options("options", nil))
	require.NoError(t, inference.Options("options", &commonv1.GenerationOptions{
		Temperature: proto.Float64(0), TopP: proto.Float64(1), TopK: proto.Int32(0), MaxTokens: proto.Int32(16),
		Stop: []string{"\n"}, Format: "json", KeepAlive: durationpb.New(-1),
	}))
	for _, p := range []int32{0, 1, 10} {
		got, err := inference.Priority("priority", p)
		require.NoError(t, err)
		require.True(t, got >= 1 && got <= 10)
	}
	_, err := inference.Priority("priority", 11)
	require.ErrorContains(t, err, "priority")
}
