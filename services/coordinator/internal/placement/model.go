// Package placement sizes a model with gguf-parser-go and chooses the rpc backends that hold
// it: the fewest backends (most free memory first) whose devices each fit their share, with a
// tensor split in proportion to free memory.
package placement

import (
	"fmt"
	"os"
	"sync"
	"time"

	gguf "github.com/gpustack/gguf-parser-go"
)

// Model is what placement knows of a GGUF file.
type Model struct {
	Path string
	// FileSize is the file's size in bytes (what a load transfers, roughly).
	FileSize int64
	// Architecture is general.architecture, e.g. "llama".
	Architecture string
	// Layers is the block count (n_layer).
	Layers uint64
	// MaxContext is the trained context length (n_ctx_train); 0 when unknown.
	MaxContext uint64

	file *gguf.GGUFFile

	profileOnce    sync.Once
	base, perToken uint64
}

// Inspect parses path's GGUF metadata (not its weights).
func Inspect(path string) (m *Model, err error) {
	defer func() {
		// The parser is large and third-party; a malformed file must not take the manager down.
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%s is not a readable GGUF file: %v", path, r)
		}
	}()
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	f, err := gguf.ParseGGUFFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s is not a readable GGUF file: %w", path, err)
	}
	arch := f.Architecture()
	return &Model{Path: path, FileSize: st.Size(), Architecture: arch.Architecture, Layers: arch.BlockCount,
		MaxContext: arch.MaximumContextLength, file: f}, nil
}

// Inspector caches Inspect by path, size and modification time: a model is sized once, not on
// every request.
type Inspector struct {
	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	size  int64
	mtime time.Time
	model *Model
}

// Inspect returns path's model, parsing it only when the file changed.
func (in *Inspector) Inspect(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	c, ok := in.cache[path]
	in.mu.Unlock()
	if ok && c.size == st.Size() && c.mtime.Equal(st.ModTime()) {
		return c.model, nil
	}
	m, err := Inspect(path)
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	if in.cache == nil {
		in.cache = map[string]cached{}
	}
	in.cache[path] = cached{size: st.Size(), mtime: st.ModTime(), model: m}
	in.mu.Unlock()
	return m, nil
}
