package decide

import (
	"regexp"
	"strconv"
	"strings"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
)

// Size estimates the memory a model needs at a context size, from the best source at hand:
// GGUF metadata (exact), an Ollama node's model listing (file size), or, last, the parameter
// count in the name — which is reported as a guess.
type Size struct {
	Bytes  uint64
	Source routerv1.ModelSizeSource
}

// IsGuess says the estimate may be far off.
func (s Size) IsGuess() bool {
	return s.Source == routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_NAME_GUESS || s.Source == routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_UNKNOWN
}

// Proto is the API form.
func (s Size) Proto() *routerv1.ModelSize {
	return &routerv1.ModelSize{Bytes: s.Bytes, Source: s.Source, IsGuess: s.IsGuess()}
}

// kvBytesPerToken is a conservative KV-cache cost per context token when the architecture is
// unknown (an 8B model in f16 needs about 128 KiB per token).
const kvBytesPerToken = 128 << 10

// defaultContext is the context assumed when the request names none (Ollama's default).
const defaultContext = 4096

// FromOllama estimates from the installed model's file size plus the KV cache: its cost per
// token from the model's GGUF shape when the node described it (/api/show), else a
// conservative constant.
func FromOllama(m *commonv1.InstalledModel, contextSize int32) Size {
	perToken := m.GetKvBytesPerToken()
	if perToken == 0 {
		perToken = kvBytesPerToken
	}
	return Size{Bytes: m.GetSizeBytes() + contextFor(contextSize, m.GetContextLength())*perToken,
		Source: routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_OLLAMA_METADATA}
}

// contextFor is the context a request runs with: as asked, else the default, within the
// trained context when that is known (as Ollama and a coordinator start a model).
func contextFor(contextSize int32, trained uint64) uint64 {
	switch {
	case contextSize > 0:
		return uint64(contextSize)
	case trained > 0:
		return min(defaultContext, trained)
	}
	return defaultContext
}

// paramsInName finds "70b", "8x7b", "3.8b", "500m" in a model name.
var paramsInName = regexp.MustCompile(`(?i)(?:^|[^a-z0-9])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?:$|[^a-z0-9])`)

// FromName guesses from the parameter count in the name, at 4-bit quantisation (about 0.6
// bytes per parameter with overhead). It is the Python SOLLOL's method and only a last
// resort: the decision says so.
func FromName(model string, contextSize int32) Size {
	m := paramsInName.FindStringSubmatch(model)
	if m == nil {
		return Size{Source: routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_UNKNOWN}
	}
	n, err := strconv.ParseFloat(m[2], 64)
	if err != nil {
		return Size{Source: routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_UNKNOWN}
	}
	if m[1] != "" {
		experts, _ := strconv.ParseFloat(m[1], 64)
		n *= experts
	}
	unit := 1e9
	if strings.EqualFold(m[3], "m") {
		unit = 1e6
	}
	return Size{Bytes: uint64(n*unit*0.6) + contextFor(contextSize, 0)*kvBytesPerToken, Source: routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_NAME_GUESS}
}

// GGUF is a model's memory line from its GGUF metadata, as the coordinator-manager's model
// catalogue gives it: base bytes plus KV-cache bytes per context token.
type GGUF struct {
	BaseBytes       uint64
	KVBytesPerToken uint64
	// MaxContext is the trained context; 0 when unknown.
	MaxContext uint64
}

// FromGGUF sizes the model at contextSize (the default within the trained context when 0).
func FromGGUF(g GGUF, contextSize int32) Size {
	return Size{Bytes: g.BaseBytes + contextFor(contextSize, g.MaxContext)*g.KVBytesPerToken,
		Source: routerv1.ModelSizeSource_MODEL_SIZE_SOURCE_GGUF_METADATA}
}
