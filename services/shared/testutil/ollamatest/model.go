package ollamatest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sollol/mesh/services/shared/tinymodel"
)

// TinyTemplate is the chat template of models made by CreateTinyModel. It
// renders a conversation as "User: ...\nAssistant: ...\n" lines and ends with
// "Assistant:" for the model to continue. /api/generate renders the prompt
// (and system) through it as one user message.
const TinyTemplate = `{{- range .Messages }}
{{- if eq .Role "system" }}System: {{ .Content }}
{{ else if eq .Role "user" }}User: {{ .Content }}
{{ else if eq .Role "assistant" }}Assistant: {{ .Content }}
{{ end }}
{{- end }}Assistant:`

// TinyParameters returns the Modelfile parameters of models made by
// CreateTinyModel. One thread per model keeps several servers on a small
// machine from oversubscribing the CPU.
func TinyParameters() map[string]any {
	return map[string]any{
		"num_thread": 1,
		"num_ctx":    tinymodel.ContextLen,
	}
}

// TinyModelfile is the Modelfile equivalent of what CreateTinyModel creates,
// written next to the GGUF file for reference and for `ollama create -f`.
func TinyModelfile(ggufName string) string {
	return fmt.Sprintf("FROM ./%s\nTEMPLATE \"\"\"%s\"\"\"\nPARAMETER num_thread %d\nPARAMETER num_ctx %d\n",
		ggufName, TinyTemplate, TinyParameters()["num_thread"], TinyParameters()["num_ctx"])
}

// CreateTinyModel creates model name on the server from tinymodel's default
// model, and checks that /api/tags lists it. The model emits only printable
// ASCII and never stops early: a generation always produces exactly
// num_predict tokens.
func (s *Server) CreateTinyModel(t testing.TB, name string) {
	t.Helper()
	s.CreateTinyModelWith(t, name, tinymodel.Options{})
}

// CreateTinyModelWith is CreateTinyModel with the given generator options
// (another seed gives another model, F16 a smaller file).
func (s *Server) CreateTinyModelWith(t testing.TB, name string, opts tinymodel.Options) {
	t.Helper()
	dir := t.TempDir()
	const ggufName = "tiny.gguf"
	gguf := filepath.Join(dir, ggufName)
	if err := tinymodel.WriteFile(gguf, opts); err != nil {
		t.Fatalf("ollamatest: writing tiny model: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Modelfile"), []byte(TinyModelfile(ggufName)), 0o644); err != nil {
		t.Fatalf("ollamatest: %v", err)
	}
	data, err := os.ReadFile(gguf)
	if err != nil {
		t.Fatalf("ollamatest: %v", err)
	}
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Upload the blob, then create the model from it (the API that
	// `ollama create` uses).
	if _, err := s.do(ctx, http.MethodPost, "/api/blobs/"+digest, "application/octet-stream", bytes.NewReader(data)); err != nil {
		t.Fatalf("ollamatest: uploading %s: %v", ggufName, err)
	}
	stream := false
	req := map[string]any{
		"model":      name,
		"files":      map[string]string{ggufName: digest},
		"template":   TinyTemplate,
		"parameters": TinyParameters(),
		"stream":     &stream,
	}
	body, _ := json.Marshal(req)
	resp, err := s.do(ctx, http.MethodPost, "/api/create", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("ollamatest: creating model %s: %v", name, err)
	}
	var st struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(resp, &st); err != nil || st.Status != "success" {
		t.Fatalf("ollamatest: creating model %s: unexpected answer %q (%v)", name, resp, err)
	}

	if !s.hasModel(ctx, t, name) {
		t.Fatalf("ollamatest: model %s missing from /api/tags after create", name)
	}
}

func (s *Server) hasModel(ctx context.Context, t testing.TB, name string) bool {
	t.Helper()
	b, err := s.do(ctx, http.MethodGet, "/api/tags", "", nil)
	if err != nil {
		t.Fatalf("ollamatest: /api/tags: %v", err)
	}
	var tags struct {
		Models []struct {
			Name  string `json:"name"`
			Model string `json:"model"`
		} `json:"models"`
	}
	if err := json.Unmarshal(b, &tags); err != nil {
		t.Fatalf("ollamatest: /api/tags: %v: %q", err, b)
	}
	want := name
	if !strings.Contains(want, ":") {
		want += ":latest"
	}
	for _, m := range tags.Models {
		if m.Name == want || m.Model == want || m.Name == name {
			return true
		}
	}
	return false
}

// do sends a request and returns the body of a 2xx answer.
func (s *Server) do(ctx context.Context, method, path, contentType string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}
