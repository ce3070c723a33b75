// Package modelstore turns a model name into the GGUF file that holds it, from three places in
// this order: an explicit name → file mapping, folders of .gguf files, and an Ollama model
// store (the manifest of the name's tag names the model layer's digest, whose blob is the
// GGUF file). It reads the file system only; nothing is downloaded.
package modelstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Sources of a resolved model.
const (
	SourceMapping = "mapping"
	SourceFolder  = "folder"
	SourceOllama  = "ollama"
)

// Model is a resolved model.
type Model struct {
	// Name is the name it was asked for.
	Name string
	// Path is the GGUF file.
	Path string
	// Source says where it was found: SourceMapping, SourceFolder or SourceOllama.
	Source string
	// Digest is the content digest ("sha256:…") for models from an Ollama store; empty
	// otherwise.
	Digest string
	// Size is the file's size in bytes.
	Size int64
}

// Resolver finds models. The zero value finds nothing; set at least one source.
type Resolver struct {
	// Mapping maps names to GGUF files; it wins over every other source.
	Mapping map[string]string
	// Dirs are folders holding <name>.gguf files.
	Dirs []string
	// OllamaRoot is an Ollama model store (what OLLAMA_MODELS names); empty disables it.
	OllamaRoot string
}

// NotFoundError says a model is in none of the sources, and where each source looked.
type NotFoundError struct {
	Name string
	// Looked lists every place that was tried, as "what: where (why not)".
	Looked []string
}

func (e *NotFoundError) Error() string {
	if len(e.Looked) == 0 {
		return fmt.Sprintf("model %q not found: no model source is configured (a name mapping, a model folder or an Ollama store)", e.Name)
	}
	return fmt.Sprintf("model %q not found; looked in %s", e.Name, strings.Join(e.Looked, "; "))
}

// ErrBadName is returned for names that cannot name a model (empty, or trying to leave a
// folder).
var ErrBadName = errors.New("modelstore: invalid model name")

// DefaultOllamaRoot is the Ollama store Ollama itself uses: $OLLAMA_MODELS, else
// ~/.ollama/models. It returns "" when neither can be determined.
func DefaultOllamaRoot(getenv func(string) string) string {
	if v := getenv("OLLAMA_MODELS"); v != "" {
		return v
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return ""
		}
	}
	return filepath.Join(home, ".ollama", "models")
}

// Resolve finds name's GGUF file. A missing model is a *NotFoundError; a name with path
// tricks is ErrBadName.
func (r *Resolver) Resolve(name string) (*Model, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	nf := &NotFoundError{Name: name}
	if len(r.Mapping) > 0 {
		if p, ok := r.Mapping[name]; ok {
			return found(name, p, SourceMapping, "")
		}
		keys := make([]string, 0, len(r.Mapping))
		for k := range r.Mapping {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		nf.Looked = append(nf.Looked, fmt.Sprintf("the name mapping (has %s)", strings.Join(keys, ", ")))
	}
	for _, dir := range r.Dirs {
		p := filepath.Join(dir, fileName(name))
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return found(name, p, SourceFolder, "")
		}
		nf.Looked = append(nf.Looked, fmt.Sprintf("folder %s (no %s)", dir, fileName(name)))
	}
	if r.OllamaRoot != "" {
		m, why := r.resolveOllama(name)
		if m != nil {
			return m, nil
		}
		nf.Looked = append(nf.Looked, fmt.Sprintf("Ollama store %s (%s)", r.OllamaRoot, why))
	}
	return nil, nf
}

func found(name, path, source, digest string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("modelstore: %s for %q: %w", source, name, err)
	}
	return &Model{Name: name, Path: path, Source: source, Digest: digest, Size: st.Size()}, nil
}

func fileName(name string) string {
	if strings.HasSuffix(name, ".gguf") {
		return name
	}
	return name + ".gguf"
}

func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "\\\x00") || filepath.IsAbs(name) {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." || part == "." || part == "" {
			return fmt.Errorf("%w: %q", ErrBadName, name)
		}
	}
	return nil
}

// List names every model the sources hold, sorted, for "not found" answers that say what
// exists.
func (r *Resolver) List() []string {
	seen := map[string]bool{}
	for k := range r.Mapping {
		seen[k] = true
	}
	for _, dir := range r.Dirs {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if n, ok := strings.CutSuffix(e.Name(), ".gguf"); ok && !e.IsDir() {
				seen[n] = true
			}
		}
	}
	for _, n := range r.listOllama() {
		seen[n] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
