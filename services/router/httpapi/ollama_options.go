package httpapi

import (
	"encoding/json"
	"math"

	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// ollamaOptions maps Ollama's free-form "options" object onto the mesh's GenerationOptions.
// Like Ollama, it ignores options it does not know (num_thread, mirostat, ...), and refuses a
// known option with a value of the wrong type, naming it.
func ollamaOptions(raw json.RawMessage) (*commonv1.GenerationOptions, error) {
	o := &commonv1.GenerationOptions{}
	if len(raw) == 0 || string(raw) == "null" {
		return o, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, badRequest("options", "must be an object")
	}
	var err error
	num := func(key string) *float64 {
		v, ok := m[key]
		if !ok || v == nil || err != nil {
			return nil
		}
		f, isNum := v.(float64)
		if !isNum {
			err = badRequest("options."+key, "must be a number, got %s", jsonKindOf(v))
			return nil
		}
		return &f
	}
	integer := func(key string) *int64 {
		f := num(key)
		if f == nil {
			return nil
		}
		if *f != math.Trunc(*f) || math.Abs(*f) > 1<<53 {
			err = badRequest("options."+key, "must be an integer, got %v", *f)
			return nil
		}
		i := int64(*f)
		return &i
	}
	o.Temperature = num("temperature")
	o.TopP = num("top_p")
	o.MinP = num("min_p")
	o.RepeatPenalty = num("repeat_penalty")
	if k := integer("top_k"); k != nil {
		o.TopK = proto.Int32(clamp32(*k))
	}
	o.Seed = integer("seed")
	// num_predict: -1 (infinite) and -2 (fill the context) mean "no limit" to the mesh;
	// Ollama's runner reads 0 the same way.
	if n := integer("num_predict"); n != nil && *n > 0 {
		o.MaxTokens = proto.Int32(clamp32(*n))
	}
	if n := integer("num_ctx"); n != nil {
		o.ContextSize = proto.Int32(clamp32(*n))
	}
	if err != nil {
		return nil, err
	}
	stop, err := stopList("options.stop", m["stop"])
	if err != nil {
		return nil, err
	}
	o.Stop = stop
	return o, nil
}

// stopList reads stop sequences: a string or an array of strings.
func stopList(field string, v any) ([]string, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{t}, nil
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, badRequest(field, "must be a string or an array of strings")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, badRequest(field, "must be a string or an array of strings, got %s", jsonKindOf(v))
}

// clamp32 keeps an absurd value absurd (so validation rejects it with the field's range)
// instead of letting it wrap around into a plausible one.
func clamp32(v int64) int32 {
	return int32(max(min(v, math.MaxInt32), math.MinInt32))
}

// jsonKindOf names the JSON kind of a decoded value.
func jsonKindOf(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "null"
}
