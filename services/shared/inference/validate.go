// Package inference holds the rules every service applies to the shared inference messages,
// so the router, the pool and the coordinator reject the same bad input with the same words.
package inference

import (
	"strconv"
	"strings"
	"unicode/utf8"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// Limits on request fields: wide enough for any real use, narrow enough that absurd values
// fail at the front door instead of deep inside a backend.
const (
	MaxModelNameLen  = 256
	MaxMessages      = 10000
	MaxStopSequences = 16
	MaxTokens        = 1 << 20
	MaxContextSize   = 1 << 22
	DefaultPriority  = 5
)

// Priority returns the effective priority (0 means the default) or an error naming field.
func Priority(field string, p int32) (int32, error) {
	switch {
	case p == 0:
		return DefaultPriority, nil
	case p < 1 || p > 10:
		return 0, rpcerr.InvalidArgument(field, "must be between 1 and 10, got %d", p)
	}
	return p, nil
}

// Model checks a model name.
func Model(field, name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return rpcerr.InvalidArgument(field, "is required")
	case len(name) > MaxModelNameLen:
		return rpcerr.InvalidArgument(field, "is longer than %d bytes", MaxModelNameLen)
	case strings.ContainsAny(name, " \t\n\r"):
		return rpcerr.InvalidArgument(field, "%q contains white space", name)
	}
	return nil
}

// Messages checks a conversation: at least one message, known roles, valid UTF-8, and text
// or images in each.
func Messages(field string, msgs []*commonv1.ChatMessage) error {
	if len(msgs) == 0 {
		return rpcerr.InvalidArgument(field, "must hold at least one message")
	}
	if len(msgs) > MaxMessages {
		return rpcerr.InvalidArgument(field, "holds %d messages; the limit is %d", len(msgs), MaxMessages)
	}
	for i, m := range msgs {
		name := field + "[" + strconv.Itoa(i) + "]"
		if _, ok := commonv1.Role_name[int32(m.GetRole())]; !ok || m.GetRole() == commonv1.Role_ROLE_UNSPECIFIED {
			return rpcerr.InvalidArgument(name+".role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL, got %d", m.GetRole())
		}
		if !utf8.ValidString(m.GetContent()) {
			return rpcerr.InvalidArgument(name+".content", "is not valid UTF-8")
		}
		if m.GetContent() == "" && len(m.GetImages()) == 0 {
			return rpcerr.InvalidArgument(name+".content", "is empty and the message has no images")
		}
	}
	return nil
}

// Prompt checks a completion prompt.
func Prompt(field, prompt string) error {
	if !utf8.ValidString(prompt) {
		return rpcerr.InvalidArgument(field, "is not valid UTF-8")
	}
	return nil
}

// Options checks generation options; unset fields are always fine.
func Options(field string, o *commonv1.GenerationOptions) error {
	if o == nil {
		return nil
	}
	f := func(name string) string { return field + "." + name }
	switch {
	case o.Temperature != nil && (o.GetTemperature() < 0 || o.GetTemperature() > 100):
		return rpcerr.InvalidArgument(f("temperature"), "must be between 0 and 100, got %v", o.GetTemperature())
	case o.TopP != nil && (o.GetTopP() <= 0 || o.GetTopP() > 1):
		return rpcerr.InvalidArgument(f("top_p"), "must be in (0, 1], got %v", o.GetTopP())
	case o.TopK != nil && o.GetTopK() < 0:
		return rpcerr.InvalidArgument(f("top_k"), "must not be negative, got %d", o.GetTopK())
	case o.MinP != nil && (o.GetMinP() < 0 || o.GetMinP() > 1):
		return rpcerr.InvalidArgument(f("min_p"), "must be in [0, 1], got %v", o.GetMinP())
	case o.RepeatPenalty != nil && o.GetRepeatPenalty() <= 0:
		return rpcerr.InvalidArgument(f("repeat_penalty"), "must be positive, got %v", o.GetRepeatPenalty())
	case o.MaxTokens != nil && (o.GetMaxTokens() <= 0 || o.GetMaxTokens() > MaxTokens):
		return rpcerr.InvalidArgument(f("max_tokens"), "must be between 1 and %d, got %d", MaxTokens, o.GetMaxTokens())
	case o.ContextSize != nil && (o.GetContextSize() <= 0 || o.GetContextSize() > MaxContextSize):
		return rpcerr.InvalidArgument(f("context_size"), "must be between 1 and %d, got %d", MaxContextSize, o.GetContextSize())
	case len(o.GetStop()) > MaxStopSequences:
		return rpcerr.InvalidArgument(f("stop"), "holds %d sequences; the limit is %d", len(o.GetStop()), MaxStopSequences)
	case o.GetFormat() != "" && o.GetFormat() != "json":
		return rpcerr.InvalidArgument(f("format"), `must be "" or "json", got %q`, o.GetFormat())
	case o.GetKeepAlive() != nil && o.GetKeepAlive().CheckValid() != nil:
		return rpcerr.InvalidArgument(f("keep_alive"), "is not a valid duration")
	}
	for i, s := range o.GetStop() {
		if s == "" {
			return rpcerr.InvalidArgument(f("stop")+"["+strconv.Itoa(i)+"]", "is empty")
		}
	}
	return nil
}
