package modelstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Ollama's defaults for a short name like "llama3": registry.ollama.ai/library/llama3:latest.
const (
	DefaultOllamaHost      = "registry.ollama.ai"
	DefaultOllamaNamespace = "library"
	DefaultOllamaTag       = "latest"
	// OllamaModelMediaType marks the manifest layer that holds the GGUF weights.
	OllamaModelMediaType = "application/vnd.ollama.image.model"
)

// OllamaName is a parsed Ollama model name: [host/][namespace/]model[:tag].
type OllamaName struct {
	Host, Namespace, Model, Tag string
}

// ParseOllamaName fills in Ollama's defaults for the parts a name leaves out.
func ParseOllamaName(name string) OllamaName {
	n := OllamaName{Host: DefaultOllamaHost, Namespace: DefaultOllamaNamespace, Tag: DefaultOllamaTag}
	rest := name
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		n.Tag, rest = rest[i+1:], rest[:i]
	}
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 1:
		n.Model = parts[0]
	case 2:
		n.Namespace, n.Model = parts[0], parts[1]
	default:
		n.Host = parts[0]
		n.Namespace = strings.Join(parts[1:len(parts)-1], "/")
		n.Model = parts[len(parts)-1]
	}
	return n
}

// String is the full name, host/namespace/model:tag.
func (n OllamaName) String() string {
	return n.Host + "/" + n.Namespace + "/" + n.Model + ":" + n.Tag
}

// ShortName is how Ollama lists the model: without the default host and namespace.
func (n OllamaName) ShortName() string {
	s := n.Model + ":" + n.Tag
	if n.Host == DefaultOllamaHost && n.Namespace == DefaultOllamaNamespace {
		return s
	}
	if n.Host == DefaultOllamaHost {
		return n.Namespace + "/" + s
	}
	return n.Host + "/" + n.Namespace + "/" + s
}

// manifest is the part of an Ollama manifest this package reads.
type manifest struct {
	Layers []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	} `json:"layers"`
}

// manifestPath is where the store keeps a name's manifest.
func (r *Resolver) manifestPath(n OllamaName) string {
	return filepath.Join(r.OllamaRoot, "manifests", n.Host, filepath.FromSlash(n.Namespace), n.Model, n.Tag)
}

// blobPath is where the store keeps a blob: blobs/sha256-<hex>.
func (r *Resolver) blobPath(digest string) string {
	return filepath.Join(r.OllamaRoot, "blobs", strings.Replace(digest, ":", "-", 1))
}

// resolveOllama reads the manifest of name and returns its model layer's blob, or why not.
func (r *Resolver) resolveOllama(name string) (*Model, string) {
	n := ParseOllamaName(name)
	path := r.manifestPath(n)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		// Ollama matches names without regard to case; so does this lookup.
		if alt := r.findFold(n); alt != "" {
			path = alt
			data, err = os.ReadFile(path)
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Sprintf("no manifest %s", path)
		}
		return nil, fmt.Sprintf("manifest %s: %v", path, err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Sprintf("manifest %s does not parse: %v", path, err)
	}
	for _, l := range m.Layers {
		if l.MediaType != OllamaModelMediaType {
			continue
		}
		if !strings.HasPrefix(l.Digest, "sha256:") || strings.ContainsAny(l.Digest, "/\\") {
			return nil, fmt.Sprintf("manifest %s has a malformed model digest %q", path, l.Digest)
		}
		blob := r.blobPath(l.Digest)
		model, err := found(name, blob, SourceOllama, l.Digest)
		if err != nil {
			return nil, fmt.Sprintf("manifest %s names blob %s, which is missing", path, blob)
		}
		return model, ""
	}
	return nil, fmt.Sprintf("manifest %s has no %s layer", path, OllamaModelMediaType)
}

// findFold finds a manifest whose path matches n's without regard to case.
func (r *Resolver) findFold(n OllamaName) string {
	dir := filepath.Join(r.OllamaRoot, "manifests")
	want := strings.ToLower(filepath.Join(n.Host, filepath.FromSlash(n.Namespace), n.Model, n.Tag))
	var hit string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || hit != "" {
			return nil
		}
		if rel, err := filepath.Rel(dir, p); err == nil && strings.ToLower(rel) == want {
			hit = p
			return fs.SkipAll
		}
		return nil
	})
	return hit
}

// listOllama names every model in the store, as Ollama lists them.
func (r *Resolver) listOllama() []string {
	if r.OllamaRoot == "" {
		return nil
	}
	dir := filepath.Join(r.OllamaRoot, "manifests")
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return nil
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) < 4 {
			return nil
		}
		n := OllamaName{Host: parts[0], Namespace: strings.Join(parts[1:len(parts)-2], "/"),
			Model: parts[len(parts)-2], Tag: parts[len(parts)-1]}
		out = append(out, n.ShortName())
		return nil
	})
	return out
}
