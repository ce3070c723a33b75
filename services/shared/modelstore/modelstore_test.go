package modelstore_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/modelstore"
	"github.com/sollol/mesh/services/shared/testutil/ollamatest"
	"github.com/sollol/mesh/services/shared/tinymodel"
)

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, data, 0o644))
}

// fakeOllamaStore lays out a store the way Ollama does: a manifest per name and tag whose
// model layer's digest names a blob.
func fakeOllamaStore(t *testing.T, host, namespace, model, tag string, gguf []byte) (root, digest string) {
	t.Helper()
	root = t.TempDir()
	sum := sha256.Sum256(gguf)
	digest = "sha256:" + hex.EncodeToString(sum[:])
	write(t, filepath.Join(root, "blobs", "sha256-"+hex.EncodeToString(sum[:])), gguf)
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
		"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:00","size":2},
		"layers":[{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:11","size":3},
		          {"mediaType":"application/vnd.ollama.image.model","digest":"` + digest + `","size":4}]}`
	write(t, filepath.Join(root, "manifests", host, namespace, model, tag), []byte(manifest))
	return root, digest
}

func TestResolvesFromEachSourceInOrder(t *testing.T) {
	data := []byte("GGUF-not-really")
	mapped := filepath.Join(t.TempDir(), "anything.bin")
	write(t, mapped, data)
	folder := t.TempDir()
	write(t, filepath.Join(folder, "folded.gguf"), data)
	write(t, filepath.Join(folder, "both.gguf"), data)
	root, digest := fakeOllamaStore(t, modelstore.DefaultOllamaHost, "library", "llama3", "8b", data)

	r := &modelstore.Resolver{Mapping: map[string]string{"both": mapped}, Dirs: []string{folder}, OllamaRoot: root}

	m, err := r.Resolve("both")
	require.NoError(t, err)
	require.Equal(t, modelstore.SourceMapping, m.Source, "the mapping wins")
	require.Equal(t, mapped, m.Path)

	m, err = r.Resolve("folded")
	require.NoError(t, err)
	require.Equal(t, modelstore.SourceFolder, m.Source)
	require.EqualValues(t, len(data), m.Size)

	m, err = r.Resolve("llama3:8b")
	require.NoError(t, err)
	require.Equal(t, modelstore.SourceOllama, m.Source)
	require.Equal(t, digest, m.Digest)
	require.FileExists(t, m.Path)

	m, err = r.Resolve("LLaMA3:8B")
	require.NoError(t, err, "Ollama names match without regard to case")
	require.Equal(t, digest, m.Digest)

	require.Equal(t, []string{"both", "folded", "llama3:8b"}, r.List())
}

func TestNotFoundSaysWhereItLooked(t *testing.T) {
	folder := t.TempDir()
	root := t.TempDir()
	r := &modelstore.Resolver{Mapping: map[string]string{"a": "/x"}, Dirs: []string{folder}, OllamaRoot: root}
	_, err := r.Resolve("ghost")
	var nf *modelstore.NotFoundError
	require.ErrorAs(t, err, &nf)
	require.Len(t, nf.Looked, 3)
	require.Contains(t, err.Error(), "the name mapping (has a)")
	require.Contains(t, err.Error(), "folder "+folder+" (no ghost.gguf)")
	require.Contains(t, err.Error(), filepath.Join(root, "manifests", "registry.ollama.ai", "library", "ghost", "latest"))

	_, err = (&modelstore.Resolver{}).Resolve("ghost")
	require.ErrorContains(t, err, "no model source is configured")

	for _, bad := range []string{"", "../etc/passwd", "/abs", "a//b", "a/./b"} {
		_, err := r.Resolve(bad)
		require.True(t, errors.Is(err, modelstore.ErrBadName), "%q: %v", bad, err)
	}
}

func TestBrokenManifestsAreExplained(t *testing.T) {
	root, _ := fakeOllamaStore(t, modelstore.DefaultOllamaHost, "library", "m", "latest", []byte("x"))
	require.NoError(t, os.RemoveAll(filepath.Join(root, "blobs")))
	_, err := (&modelstore.Resolver{OllamaRoot: root}).Resolve("m")
	require.ErrorContains(t, err, "which is missing")

	write(t, filepath.Join(root, "manifests", modelstore.DefaultOllamaHost, "library", "n", "latest"), []byte(`{"layers":[]}`))
	_, err = (&modelstore.Resolver{OllamaRoot: root}).Resolve("n")
	require.ErrorContains(t, err, "has no application/vnd.ollama.image.model layer")
}

func TestParseOllamaName(t *testing.T) {
	for in, want := range map[string]string{
		"llama3":                    "registry.ollama.ai/library/llama3:latest",
		"llama3:8b":                 "registry.ollama.ai/library/llama3:8b",
		"user/model":                "registry.ollama.ai/user/model:latest",
		"host.example:5000/ns/m:v1": "host.example:5000/ns/m:v1",
	} {
		require.Equal(t, want, modelstore.ParseOllamaName(in).String(), in)
	}
	require.Equal(t, "llama3:8b", modelstore.ParseOllamaName("llama3:8b").ShortName())
}

func TestDefaultOllamaRoot(t *testing.T) {
	env := map[string]string{"HOME": "/home/u"}
	require.Equal(t, "/home/u/.ollama/models", modelstore.DefaultOllamaRoot(func(k string) string { return env[k] }))
	env["OLLAMA_MODELS"] = "/data/models"
	require.Equal(t, "/data/models", modelstore.DefaultOllamaRoot(func(k string) string { return env[k] }))
}

// A model created in a real Ollama resolves to the very bytes it was created from.
func TestResolvesFromARealOllamaStore(t *testing.T) {
	srv := ollamatest.Start(t)
	srv.CreateTinyModel(t, "tiny")
	r := &modelstore.Resolver{OllamaRoot: filepath.Join(srv.Dir(), "models")}
	m, err := r.Resolve("tiny")
	require.NoError(t, err)
	got, err := os.ReadFile(m.Path)
	require.NoError(t, err)
	require.Equal(t, tinymodel.Bytes(tinymodel.Options{}), got)
	sum := sha256.Sum256(got)
	require.Equal(t, "sha256:"+hex.EncodeToString(sum[:]), m.Digest)
	require.Contains(t, r.List(), "tiny:latest")
}
