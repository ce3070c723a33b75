package probe

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestKVFactsFromGGUFMetadata(t *testing.T) {
	cases := []struct {
		name            string
		info            map[string]any
		context, kvByte uint64
	}{
		{"llama 3 8B (GQA)", map[string]any{"general.architecture": "llama", "llama.context_length": 8192.0, "llama.block_count": 32.0,
			"llama.embedding_length": 4096.0, "llama.attention.head_count": 32.0, "llama.attention.head_count_kv": 8.0}, 8192, 32 * 8 * 256 * 2},
		{"explicit key and value lengths", map[string]any{"general.architecture": "gemma2", "gemma2.block_count": 26.0,
			"gemma2.embedding_length": 2304.0, "gemma2.attention.head_count": 8.0, "gemma2.attention.head_count_kv": 4.0,
			"gemma2.attention.key_length": 256.0, "gemma2.attention.value_length": 256.0}, 0, 26 * 4 * 512 * 2},
		{"no KV head count: as many as heads", map[string]any{"general.architecture": "gpt2", "gpt2.block_count": 12.0,
			"gpt2.embedding_length": 768.0, "gpt2.attention.head_count": 12.0}, 0, 12 * 12 * 128 * 2},
		{"per-layer KV heads: the largest", map[string]any{"general.architecture": "x", "x.block_count": 2.0,
			"x.embedding_length": 64.0, "x.attention.head_count": 4.0, "x.attention.head_count_kv": []any{2.0, 4.0}}, 0, 2 * 4 * 32 * 2},
		{"no architecture", map[string]any{"llama.block_count": 32.0}, 0, 0},
		{"no head count", map[string]any{"general.architecture": "bert", "bert.block_count": 12.0, "bert.context_length": 512.0}, 512, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, kv := kvFacts(c.info)
			require.Equal(t, c.context, ctx)
			require.Equal(t, c.kvByte, kv)
		})
	}
}

func TestAFailedShowIsNotAskedAgainAtOnce(t *testing.T) {
	var c showCache
	now := time.Now()
	require.False(t, c.recentlyFailed("sha256:a", now))
	c.fail("sha256:a", now)
	require.True(t, c.recentlyFailed("sha256:a", now.Add(showRetry/2)))
	require.False(t, c.recentlyFailed("sha256:a", now.Add(showRetry)), "asked again after a while")
	require.False(t, c.recentlyFailed("sha256:b", now))
}
