package coordinator

import (
	"fmt"
	"math"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// maxContext bounds a requested context; no model comes close, and it keeps int32 maths safe.
const maxContext = 1 << 24

func validateModel(model string) error {
	if model == "" {
		return rpcerr.InvalidArgument("model", "is required")
	}
	if len(model) > 512 {
		return rpcerr.InvalidArgument("model", "is longer than 512 bytes")
	}
	return nil
}

// validatePriority checks the range. The manager keeps no queue of its own (llama-server's
// slots queue requests in arrival order), so the priority is not otherwise used yet.
func validatePriority(p int32) error {
	if p < 0 || p > 10 {
		return rpcerr.InvalidArgument("priority", "must be 0 (default) or 1 to 10, got %d", p)
	}
	return nil
}

func validateMessages(msgs []*commonv1.ChatMessage) error {
	if len(msgs) == 0 {
		return rpcerr.InvalidArgument("messages", "at least one message is required")
	}
	for i, m := range msgs {
		if _, ok := commonv1.Role_name[int32(m.GetRole())]; !ok || m.GetRole() == commonv1.Role_ROLE_UNSPECIFIED {
			return rpcerr.InvalidArgument(fmt.Sprintf("messages[%d].role", i), "must be system, user, assistant or tool")
		}
		if m.GetContent() == "" && len(m.GetImages()) == 0 {
			return rpcerr.InvalidArgument(fmt.Sprintf("messages[%d].content", i), "is empty and the message has no images")
		}
	}
	return nil
}

// validateOptions checks every option's range and the options against each other.
func validateOptions(o *commonv1.GenerationOptions) error {
	if o == nil {
		return nil
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case o.Temperature != nil && (!finite(o.GetTemperature()) || o.GetTemperature() < 0):
		return rpcerr.InvalidArgument("options.temperature", "must be >= 0, got %v", o.GetTemperature())
	case o.TopP != nil && (!finite(o.GetTopP()) || o.GetTopP() <= 0 || o.GetTopP() > 1):
		return rpcerr.InvalidArgument("options.top_p", "must be in (0, 1], got %v", o.GetTopP())
	case o.TopK != nil && o.GetTopK() < 0:
		return rpcerr.InvalidArgument("options.top_k", "must be >= 0, got %d", o.GetTopK())
	case o.MinP != nil && (!finite(o.GetMinP()) || o.GetMinP() < 0 || o.GetMinP() > 1):
		return rpcerr.InvalidArgument("options.min_p", "must be in [0, 1], got %v", o.GetMinP())
	case o.RepeatPenalty != nil && (!finite(o.GetRepeatPenalty()) || o.GetRepeatPenalty() <= 0):
		return rpcerr.InvalidArgument("options.repeat_penalty", "must be > 0, got %v", o.GetRepeatPenalty())
	case o.MaxTokens != nil && o.GetMaxTokens() <= 0:
		return rpcerr.InvalidArgument("options.max_tokens", "must be > 0, got %d", o.GetMaxTokens())
	case o.ContextSize != nil && (o.GetContextSize() <= 0 || o.GetContextSize() > maxContext):
		return rpcerr.InvalidArgument("options.context_size", "must be between 1 and %d, got %d", maxContext, o.GetContextSize())
	case o.GetFormat() != "" && o.GetFormat() != "json":
		return rpcerr.InvalidArgument("options.format", "must be \"\" or \"json\", got %q", o.GetFormat())
	case o.MaxTokens != nil && o.ContextSize != nil && o.GetMaxTokens() >= o.GetContextSize():
		return rpcerr.InvalidArgument("options.max_tokens", "%d tokens cannot fit in options.context_size %d with any prompt",
			o.GetMaxTokens(), o.GetContextSize())
	}
	for i, s := range o.GetStop() {
		if s == "" {
			return rpcerr.InvalidArgument(fmt.Sprintf("options.stop[%d]", i), "is empty")
		}
	}
	if ka := o.GetKeepAlive(); ka != nil {
		if err := ka.CheckValid(); err != nil {
			return rpcerr.InvalidArgument("options.keep_alive", "%v", err)
		}
	}
	return nil
}

// keepAliveOf is the option as a duration pointer (nil when unset).
func keepAliveOf(o *commonv1.GenerationOptions) *time.Duration {
	if o.GetKeepAlive() == nil {
		return nil
	}
	d := o.GetKeepAlive().AsDuration()
	return &d
}

// slotContextOf is the context the request asks for (0: the default).
func slotContextOf(o *commonv1.GenerationOptions) uint32 {
	if o == nil || o.ContextSize == nil {
		return 0
	}
	return uint32(o.GetContextSize())
}
