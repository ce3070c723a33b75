package probe

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// showsPerProbe bounds the /api/show calls of one probe: a node with hundreds of models is
// described over several probes instead of making one probe slow.
const showsPerProbe = 8

// maxShowCache bounds the facts kept; past it the cache starts over.
const maxShowCache = 4096

// modelFacts is what /api/show adds to a model listing: its capabilities and, from its GGUF
// metadata, its trained context and KV-cache cost per token.
type modelFacts struct {
	capabilities    []string
	contextLength   uint64
	kvBytesPerToken uint64
}

// showRetry is how long a model whose /api/show failed is left alone (an old Ollama without
// it, a model deleted meanwhile) before it is asked about again.
const showRetry = time.Minute

// showCache keeps facts by model digest: equal digests are identical models, on any node, and
// a model's facts never change.
type showCache struct {
	mu     sync.Mutex
	facts  map[string]modelFacts
	failed map[string]time.Time // digest → when /api/show last failed
}

// recentlyFailed says whether asking about digest again is too soon.
func (c *showCache) recentlyFailed(digest string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.failed[digest]
	return ok && now.Sub(at) < showRetry
}

func (c *showCache) fail(digest string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil || len(c.failed) >= maxShowCache {
		c.failed = map[string]time.Time{}
	}
	c.failed[digest] = now
}

func (c *showCache) get(digest string) (modelFacts, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.facts[digest]
	return f, ok
}

func (c *showCache) put(digest string, f modelFacts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.facts == nil || len(c.facts) >= maxShowCache {
		c.facts = map[string]modelFacts{}
	}
	c.facts[digest] = f
}

type ollamaShow struct {
	Capabilities []string       `json:"capabilities"`
	ModelInfo    map[string]any `json:"model_info"`
}

// show asks the node about one model.
func (p *Prober) show(ctx context.Context, base, model string) (modelFacts, error) {
	var s ollamaShow
	if err := p.callJSON(ctx, http.MethodPost, base+"/api/show", map[string]string{"model": model}, &s); err != nil {
		return modelFacts{}, err
	}
	f := modelFacts{capabilities: s.Capabilities}
	f.contextLength, f.kvBytesPerToken = kvFacts(s.ModelInfo)
	return f, nil
}

// kvFacts reads the trained context and the f16 KV cache per token from GGUF metadata keys as
// Ollama shows them ("llama.block_count", "llama.attention.head_count_kv", …). Unknown
// architectures or missing keys give zeros, never a wrong figure.
func kvFacts(info map[string]any) (contextLength, kvBytesPerToken uint64) {
	arch, _ := info["general.architecture"].(string)
	if arch == "" {
		return 0, 0
	}
	num := func(key string) uint64 {
		switch v := info[arch+"."+key].(type) {
		case float64:
			return uint64(max(v, 0))
		case []any: // per-layer values (some architectures): the largest bounds the cache
			var most float64
			for _, x := range v {
				if f, ok := x.(float64); ok {
					most = max(most, f)
				}
			}
			return uint64(most)
		}
		return 0
	}
	contextLength = num("context_length")
	layers, embd, heads := num("block_count"), num("embedding_length"), num("attention.head_count")
	kvHeads := num("attention.head_count_kv")
	if kvHeads == 0 {
		kvHeads = heads
	}
	keyLen, valueLen := num("attention.key_length"), num("attention.value_length")
	if heads > 0 && keyLen == 0 {
		keyLen = embd / heads
	}
	if heads > 0 && valueLen == 0 {
		valueLen = embd / heads
	}
	return contextLength, layers * kvHeads * (keyLen + valueLen) * 2
}
