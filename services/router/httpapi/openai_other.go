package httpapi

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/inference"
)

// openaiEmbeddings serves POST /v1/embeddings: input (a string or strings) → a list of
// embeddings, as floats or, with encoding_format "base64", little-endian float32 bytes.
func (a *api) openaiEmbeddings(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
		Dimensions     int32           `json:"dimensions"`
		Hint           string          `json:"hint"`
		Priority       int32           `json:"priority"`
	}
	if err := a.decode(w, r, &req); err != nil {
		writeOpenAIError(w, toAPIError(err))
		return
	}
	inputs, err := embedInputs("input", req.Input)
	switch {
	case err != nil:
	case len(inputs) == 0:
		err = badRequest("input", "must be a non-empty string or array of strings")
	case req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64":
		err = badRequest("encoding_format", `must be "float" or "base64", got %q`, req.EncodingFormat)
	default:
		err = inference.Model("model", req.Model)
	}
	hint, herr := parseHint(req.Hint)
	if err == nil {
		err = herr
	}
	if err != nil {
		writeOpenAIError(w, toAPIError(err))
		return
	}
	er := &routerv1.EmbedRequest{Model: req.Model, Inputs: inputs, Truncate: true, Hint: hint, Priority: req.Priority}
	if req.Dimensions > 0 {
		er.Dimensions = proto.Int32(req.Dimensions)
	}
	resp, e := a.embed(w, r, arrived, er)
	if e != nil {
		if e.status != statusClientClosed {
			writeOpenAIError(w, e)
		}
		return
	}
	type embedding struct {
		Object    string `json:"object"`
		Embedding any    `json:"embedding"`
		Index     int    `json:"index"`
	}
	data := make([]embedding, 0, len(resp.GetEmbeddings()))
	for i, v := range resp.GetEmbeddings() {
		var vec any = v.GetValues()
		if req.EncodingFormat == "base64" {
			buf := make([]byte, 4*len(v.GetValues()))
			for j, f := range v.GetValues() {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(f))
			}
			vec = base64.StdEncoding.EncodeToString(buf)
		}
		data = append(data, embedding{Object: "embedding", Embedding: vec, Index: i})
	}
	n := resp.GetUsage().GetPromptTokens()
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": req.Model,
		"usage": map[string]uint32{"prompt_tokens": n, "total_tokens": n},
	})
}

type openaiModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func toOpenAIModel(m *meshModel) openaiModel {
	owner := "library" // Ollama's word for models without a namespace
	if ns, _, ok := strings.Cut(m.info.GetName(), "/"); ok {
		owner = ns
	}
	var created int64
	if t := timeOf(m.info.GetModifiedAt()); !t.IsZero() {
		created = t.Unix()
	}
	return openaiModel{ID: m.info.GetName(), Object: "model", Created: created, OwnedBy: owner}
}

// openaiModels serves GET /v1/models: the models the mesh's Ollama nodes have.
func (a *api) openaiModels(w http.ResponseWriter, _ *http.Request) {
	data := []openaiModel{}
	for _, m := range a.installed() {
		data = append(data, toOpenAIModel(m))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// openaiModel serves GET /v1/models/{model}.
func (a *api) openaiModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	m := a.findModel(name)
	if m == nil {
		writeOpenAIError(w, toAPIError(modelNotFound(name, nil)))
		return
	}
	writeJSON(w, http.StatusOK, toOpenAIModel(m))
}
