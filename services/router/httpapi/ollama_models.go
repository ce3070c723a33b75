package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/shared/inference"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// timeOf is a timestamp as JSON clients expect it: the zero time (Ollama's "never") when
// unknown, not 1970.
func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime().UTC()
}

// ollamaRoot serves GET and HEAD /, the liveness check Ollama clients start with.
func (a *api) ollamaRoot(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("Ollama is running"))
}

// ollamaVersion serves GET /api/version. Clients gate features on it, so it reports the
// oldest Ollama the mesh routes to (what every request can rely on), or the version this
// layer follows when no node is known; the SOLLOL version rides along.
func (a *api) ollamaVersion(w http.ResponseWriter, _ *http.Request) {
	v := ""
	for _, b := range a.ollamaNodes() {
		if b.GetVersion() != "" && (v == "" || versionLess(b.GetVersion(), v)) {
			v = b.GetVersion()
		}
	}
	if v == "" {
		v = ollamaCompatVersion
	}
	writeJSON(w, http.StatusOK, map[string]string{"version": v, "sollol_version": a.opts.Version})
}

// versionLess compares dotted versions numerically ("0.9.1" < "0.17.4").
func versionLess(a, b string) bool {
	pa, pb := strings.Split(strings.TrimPrefix(a, "v"), "."), strings.Split(strings.TrimPrefix(b, "v"), ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(strings.SplitN(pa[i], "-", 2)[0])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(strings.SplitN(pb[i], "-", 2)[0])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// ollamaNodes are the Ollama backends that can serve now (healthy or degraded); a node that
// is down serves nothing, so its models are not offered.
func (a *api) ollamaNodes() []*commonv1.Backend {
	var out []*commonv1.Backend
	for _, b := range a.r.Backends() {
		h := b.GetHealth()
		if b.GetKind() == commonv1.BackendKind_BACKEND_KIND_OLLAMA &&
			(h == commonv1.HealthState_HEALTH_STATE_HEALTHY || h == commonv1.HealthState_HEALTH_STATE_DEGRADED) {
			out = append(out, b)
		}
	}
	return out
}

// meshModel is one model as the mesh offers it: the first listing of it (nodes in id
// order) and every node that has it.
type meshModel struct {
	info  *commonv1.InstalledModel
	nodes []string
}

// installed lists the models on the usable Ollama nodes, one entry per model however many
// nodes have it, then those only the coordinator-manager has (served by sharding, on no
// node), sorted by name.
func (a *api) installed() []*meshModel {
	byName := map[string]*meshModel{}
	for _, b := range a.ollamaNodes() {
		for _, m := range b.GetInstalledModels() {
			key := inference.NormalizeModel(m.GetName())
			if byName[key] == nil {
				byName[key] = &meshModel{info: m}
			}
			byName[key].nodes = append(byName[key].nodes, b.GetId())
		}
	}
	for _, m := range a.r.ShardModels() {
		if key := inference.NormalizeModel(m.GetName()); byName[key] == nil {
			byName[key] = &meshModel{info: m}
		}
	}
	out := make([]*meshModel, 0, len(byName))
	for _, m := range byName {
		out = append(out, m)
	}
	slices.SortFunc(out, func(x, y *meshModel) int { return strings.Compare(x.info.GetName(), y.info.GetName()) })
	return out
}

func (a *api) findModel(name string) *meshModel {
	for _, m := range a.installed() {
		if inference.SameModel(m.info.GetName(), name) {
			return m
		}
	}
	return nil
}

// ollamaDetails is Ollama's ModelDetails. Every model an Ollama node serves is GGUF.
type ollamaDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

func detailsOf(m *commonv1.InstalledModel) ollamaDetails {
	d := ollamaDetails{Format: "gguf", Family: m.GetFamily(), ParameterSize: m.GetParameterSize(), QuantizationLevel: m.GetQuantization()}
	if d.Family != "" {
		d.Families = []string{d.Family}
	}
	return d
}

// digestOf is the model's digest as /api/tags shows it (hex, no "sha256:"). Clients slice
// it (the ollama CLI prints digest[:12]), so a node that reported none gets a stable stand-in.
func digestOf(m *commonv1.InstalledModel) string {
	if d := strings.TrimPrefix(m.GetDigest(), "sha256:"); len(d) >= 12 {
		return d
	}
	sum := sha256.Sum256([]byte(inference.NormalizeModel(m.GetName())))
	return hex.EncodeToString(sum[:])
}

type ollamaListModel struct {
	Name       string        `json:"name"`
	Model      string        `json:"model"`
	ModifiedAt time.Time     `json:"modified_at"`
	Size       int64         `json:"size"`
	Digest     string        `json:"digest"`
	Details    ollamaDetails `json:"details"`
}

// ollamaTags serves GET /api/tags: every model any usable node has, once.
func (a *api) ollamaTags(w http.ResponseWriter, _ *http.Request) {
	models := []ollamaListModel{}
	for _, m := range a.installed() {
		models = append(models, ollamaListModel{
			Name: m.info.GetName(), Model: m.info.GetName(), ModifiedAt: timeOf(m.info.GetModifiedAt()),
			Size: int64(m.info.GetSizeBytes()), Digest: digestOf(m.info), Details: detailsOf(m.info),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": models})
}

type ollamaRunningModel struct {
	Name          string        `json:"name"`
	Model         string        `json:"model"`
	Size          int64         `json:"size"`
	Digest        string        `json:"digest"`
	Details       ollamaDetails `json:"details"`
	ExpiresAt     time.Time     `json:"expires_at"`
	SizeVRAM      int64         `json:"size_vram"`
	ContextLength int           `json:"context_length"`
}

// ollamaPS serves GET /api/ps: the models loaded on any usable node, once each (the
// largest context and the latest expiry win when several nodes have one loaded).
func (a *api) ollamaPS(w http.ResponseWriter, _ *http.Request) {
	models := []ollamaRunningModel{}
	index := map[string]int{}
	for _, b := range a.ollamaNodes() {
		for _, l := range b.GetLoadedModels() {
			key := inference.NormalizeModel(l.GetName())
			if i, ok := index[key]; ok {
				m := &models[i]
				m.ContextLength = max(m.ContextLength, int(l.GetContextLength()))
				if exp := timeOf(l.GetExpiresAt()); exp.After(m.ExpiresAt) {
					m.ExpiresAt = exp
				}
				continue
			}
			m := ollamaRunningModel{Name: l.GetName(), Model: l.GetName(), Size: int64(l.GetSizeBytes()),
				SizeVRAM: int64(l.GetVramBytes()), ContextLength: int(l.GetContextLength()), ExpiresAt: timeOf(l.GetExpiresAt())}
			info := &commonv1.InstalledModel{Name: l.GetName()}
			if im := a.findModel(l.GetName()); im != nil {
				info = im.info
			}
			m.Digest, m.Details = digestOf(info), detailsOf(info)
			index[key] = len(models)
			models = append(models, m)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": models})
}

// ollamaShow serves POST /api/show from what discovery knows of the model (the node's own
// /api/show, as discovery recorded it). The ollama CLI's `run` needs capabilities ("embedding"
// → it embeds, else it chats; "vision" → images) and details.
func (a *api) ollamaShow(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string `json:"model"`
		Name  string `json:"name"` // the older spelling, still sent by some clients
	}
	if err := a.decode(w, r, &req); err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	name := req.Model
	if name == "" {
		name = req.Name
	}
	if name == "" {
		writeOllamaError(w, toAPIError(badRequest("model", "is required")))
		return
	}
	m := a.findModel(name)
	if m == nil {
		writeOllamaError(w, toAPIError(modelNotFound(name, nil)))
		return
	}
	info := map[string]any{}
	if arch := m.info.GetFamily(); arch != "" {
		info["general.architecture"] = arch
		if n := m.info.GetContextLength(); n > 0 {
			info[arch+".context_length"] = n
		}
	}
	// What the node said the model can do; a model only sharding serves completes text.
	capabilities := m.info.GetCapabilities()
	if len(capabilities) == 0 {
		capabilities = []string{"completion"}
	}
	servedBy := "Ollama node(s): " + strings.Join(m.nodes, ", ")
	if len(m.nodes) == 0 {
		servedBy = "llama.cpp RPC sharding (the coordinator-manager's model store)"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"modelfile":    "# served through SOLLOL by " + servedBy + "\nFROM " + m.info.GetName() + "\n",
		"details":      detailsOf(m.info),
		"model_info":   info,
		"capabilities": capabilities,
		"modified_at":  timeOf(m.info.GetModifiedAt()),
	})
}

// ollamaManage answers the model-management endpoints (pull, push, create, copy, delete,
// blobs): the router routes to Ollama nodes and does not manage what is on them.
func (a *api) ollamaManage(w http.ResponseWriter, r *http.Request) {
	writeOllamaError(w, &apiError{status: http.StatusNotImplemented, code: "unimplemented",
		message: r.URL.Path + " is not supported by the SOLLOL router: manage models on an Ollama node directly " +
			"(OLLAMA_HOST=<node> ollama pull ...); the router offers every model its nodes have"})
}
