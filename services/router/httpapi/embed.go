package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/inference"
)

// embed runs an embedding request through the router (the pool serves embeddings) and
// reports the route in headers. Errors come back already in the API's terms.
func (a *api) embed(w http.ResponseWriter, r *http.Request, arrived time.Time, req *routerv1.EmbedRequest) (*routerv1.EmbedResponse, *apiError) {
	start := time.Now()
	resp, err := a.r.EmbedInputs(r.Context(), req)
	if err != nil {
		if r.Context().Err() != nil {
			return nil, &apiError{status: statusClientClosed, message: "client went away"}
		}
		d := a.r.Decide(req.GetModel(), 0, commonv1.RouteHint_ROUTE_HINT_POOL)
		e := toAPIError(a.classify(err, req.GetModel(), d, req.GetHint()))
		if e.status >= 500 {
			a.log.Warn("embedding failed", "model", req.GetModel(), "status", e.status, "err", err)
		}
		return nil, e
	}
	h := w.Header()
	h.Set(headerRoute, pathName(resp.GetRoute().GetPath()))
	if b := resp.GetRoute().GetBackend(); b != "" {
		h.Set(headerBackend, headerSafe(b))
	}
	if n := resp.GetRoute().GetAttempts(); n > 0 {
		h.Set(headerAttempts, strconv.Itoa(int(n)))
	}
	h.Set(headerServerTiming, metric("router", time.Since(start))+", "+metric("total", time.Since(arrived)))
	return resp, nil
}

// embedInputs reads an embedding input: a string or an array of strings (token arrays are
// not carried by the mesh).
func embedInputs(field string, raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, badRequest(field, "must be a string or an array of strings")
	}
	return many, nil
}

// ollamaEmbed serves POST /api/embed: "input" (a string or strings) → "embeddings".
func (a *api) ollamaEmbed(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var req struct {
		Model      string          `json:"model"`
		Input      json.RawMessage `json:"input"`
		Truncate   *bool           `json:"truncate"`
		Dimensions int32           `json:"dimensions"`
		Hint       string          `json:"hint"`
		Priority   int32           `json:"priority"`
	}
	if err := a.decode(w, r, &req); err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	inputs, err := embedInputs("input", req.Input)
	if err == nil {
		err = inference.Model("model", req.Model)
	}
	if err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	hint, err := parseHint(req.Hint)
	if err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	out := map[string]any{"model": req.Model, "embeddings": [][]float32{}}
	if len(inputs) == 0 {
		// Ollama answers an empty input with no embeddings (clients use it to preload).
		writeJSON(w, http.StatusOK, out)
		return
	}
	er := &routerv1.EmbedRequest{Model: req.Model, Inputs: inputs, Truncate: req.Truncate == nil || *req.Truncate, Hint: hint, Priority: req.Priority}
	if req.Dimensions > 0 {
		er.Dimensions = proto.Int32(req.Dimensions)
	}
	resp, e := a.embed(w, r, arrived, er)
	if e != nil {
		if e.status != statusClientClosed {
			writeOllamaError(w, e)
		}
		return
	}
	vecs := make([][]float32, 0, len(resp.GetEmbeddings()))
	for _, v := range resp.GetEmbeddings() {
		vecs = append(vecs, v.GetValues())
	}
	out["embeddings"] = vecs
	out["total_duration"] = int64(time.Since(arrived))
	if n := resp.GetUsage().GetPromptTokens(); n > 0 {
		out["prompt_eval_count"] = n
	}
	writeJSON(w, http.StatusOK, out)
}

// ollamaEmbeddings serves the legacy POST /api/embeddings: "prompt" → one "embedding".
func (a *api) ollamaEmbeddings(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var req struct {
		Model    string `json:"model"`
		Prompt   string `json:"prompt"`
		Hint     string `json:"hint"`
		Priority int32  `json:"priority"`
	}
	if err := a.decode(w, r, &req); err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	hint, err := parseHint(req.Hint)
	if err == nil {
		err = inference.Model("model", req.Model)
	}
	if err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	if req.Prompt == "" {
		writeJSON(w, http.StatusOK, map[string]any{"embedding": []float64{}}) // as Ollama does
		return
	}
	resp, e := a.embed(w, r, arrived, &routerv1.EmbedRequest{Model: req.Model, Inputs: []string{req.Prompt}, Truncate: true, Hint: hint, Priority: req.Priority})
	if e != nil {
		if e.status != statusClientClosed {
			writeOllamaError(w, e)
		}
		return
	}
	vec := []float64{}
	if embs := resp.GetEmbeddings(); len(embs) > 0 {
		for _, f := range embs[0].GetValues() {
			vec = append(vec, float64(f))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"embedding": vec})
}
