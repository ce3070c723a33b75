package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/router"
)

// ollamaMessage is one message of Ollama's /api/chat. Images are base64 in JSON, which
// encoding/json decodes into bytes. Tool calls and thinking are not carried by the mesh.
type ollamaMessage struct {
	Role    string   `json:"role"`
	Content string   `json:"content"`
	Images  [][]byte `json:"images,omitempty"`
}

// ollamaCommon are the fields /api/chat and /api/generate share, plus the mesh's "hint" and
// "priority" extensions.
type ollamaCommon struct {
	Model     string          `json:"model"`
	Stream    *bool           `json:"stream"`
	Format    json.RawMessage `json:"format"`
	KeepAlive json.RawMessage `json:"keep_alive"`
	Options   json.RawMessage `json:"options"`
	Hint      string          `json:"hint"`
	Priority  int32           `json:"priority"`
}

type ollamaChatRequest struct {
	ollamaCommon
	Messages []ollamaMessage `json:"messages"`
}

type ollamaGenerateRequest struct {
	ollamaCommon
	Prompt string   `json:"prompt"`
	System string   `json:"system"`
	Raw    bool     `json:"raw"`
	Images [][]byte `json:"images"`
}

// inference builds the router's request from the shared fields.
func (c *ollamaCommon) inference() (*router.Inference, error) {
	opts, err := ollamaOptions(c.Options)
	if err != nil {
		return nil, err
	}
	if opts.Format, err = parseFormat("format", c.Format); err != nil {
		return nil, err
	}
	if opts.KeepAlive, err = parseKeepAlive(c.KeepAlive); err != nil {
		return nil, err
	}
	hint, err := parseHint(c.Hint)
	if err != nil {
		return nil, err
	}
	return &router.Inference{Model: c.Model, Options: opts, Hint: hint, Priority: c.Priority}, nil
}

// streaming is Ollama's default: stream unless "stream": false.
func (c *ollamaCommon) streaming() bool { return c.Stream == nil || *c.Stream }

var ollamaRoles = map[string]commonv1.Role{
	"system": commonv1.Role_ROLE_SYSTEM, "user": commonv1.Role_ROLE_USER,
	"assistant": commonv1.Role_ROLE_ASSISTANT, "tool": commonv1.Role_ROLE_TOOL,
}

func ollamaMessages(msgs []ollamaMessage) ([]*commonv1.ChatMessage, error) {
	out := make([]*commonv1.ChatMessage, 0, len(msgs))
	for i, m := range msgs {
		role, ok := ollamaRoles[strings.ToLower(m.Role)]
		if !ok {
			return nil, badRequest("messages["+strconv.Itoa(i)+"].role", `must be "system", "user", "assistant" or "tool", got %q`, m.Role)
		}
		out = append(out, &commonv1.ChatMessage{Role: role, Content: m.Content, Images: m.Images})
	}
	return out, nil
}

// ollamaChat serves POST /api/chat.
func (a *api) ollamaChat(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var req ollamaChatRequest
	if err := a.decode(w, r, &req); err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	in, err := req.inference()
	if err == nil {
		in.Messages, err = ollamaMessages(req.Messages)
	}
	if err == nil && len(in.Messages) == 0 {
		// Ollama reads a chat without messages as "load the model" (the ollama CLI sends one
		// before an interactive session); the mesh loads on first use, so it only checks
		// that the model can be served.
		a.ollamaLoad(w, in, true)
		return
	}
	if err == nil {
		err = router.Validate(in)
	}
	if err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	a.run(w, r, arrived, in, &ollamaEncoder{model: req.Model, chat: true}, req.streaming())
}

// ollamaGenerate serves POST /api/generate.
func (a *api) ollamaGenerate(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var req ollamaGenerateRequest
	if err := a.decode(w, r, &req); err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	in, err := req.inference()
	if err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	switch {
	case req.Prompt == "" && len(req.Images) == 0:
		a.ollamaLoad(w, in, false) // Ollama's "load the model" request, as for chat
		return
	case len(req.Images) > 0 && req.Raw:
		writeOllamaError(w, toAPIError(badRequest("images", "cannot be sent with raw: the mesh passes images only inside a templated prompt")))
		return
	case len(req.Images) > 0:
		// A templated prompt with images is one user turn (Ollama renders /api/generate so),
		// which the mesh carries as a chat; the answer keeps generate's shape.
		if req.System != "" {
			in.Messages = append(in.Messages, &commonv1.ChatMessage{Role: commonv1.Role_ROLE_SYSTEM, Content: req.System})
		}
		in.Messages = append(in.Messages, &commonv1.ChatMessage{Role: commonv1.Role_ROLE_USER, Content: req.Prompt, Images: req.Images})
	default:
		in.Prompt, in.System, in.Raw = req.Prompt, req.System, req.Raw
	}
	if err := router.Validate(in); err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	a.run(w, r, arrived, in, &ollamaEncoder{model: req.Model}, req.streaming())
}

// ollamaLoad answers a load request (no messages, no prompt) the way Ollama does, with
// done_reason "load", once the model is known to be servable. keep_alive 0 asks Ollama to
// unload, which the router cannot do for a pool it only routes to, and says so.
func (a *api) ollamaLoad(w http.ResponseWriter, in *router.Inference, chat bool) {
	if err := router.Validate(&router.Inference{Model: in.Model, Options: in.Options, Hint: in.Hint, Priority: in.Priority}); err != nil {
		writeOllamaError(w, toAPIError(err))
		return
	}
	if ka := in.Options.GetKeepAlive(); ka != nil && ka.AsDuration() == 0 {
		writeOllamaError(w, &apiError{status: http.StatusNotImplemented, code: "unimplemented",
			message: "unloading a model through the SOLLOL router is not supported; unload it on the Ollama node"})
		return
	}
	d := a.r.Decide(in.Model, in.Options.GetContextSize(), in.Hint)
	if d.GetPath() == commonv1.RoutePath_ROUTE_PATH_UNSPECIFIED {
		err := a.classify(noPath(d), in.Model, d, in.Hint)
		writeOllamaError(w, toAPIError(err))
		return
	}
	w.Header().Set(headerRoute, pathName(d.GetPath()))
	enc := &ollamaEncoder{model: in.Model, chat: chat}
	writeJSON(w, http.StatusOK, enc.final("", "load", nil, 0))
}

// ollamaEncoder renders /api/chat and /api/generate answers in Ollama's NDJSON shape.
type ollamaEncoder struct {
	model string
	chat  bool
}

// ollamaResponse is one NDJSON line: Ollama's ChatResponse or GenerateResponse, whose
// fields it unites (message for chat, response for generate).
type ollamaResponse struct {
	Model              string         `json:"model"`
	CreatedAt          time.Time      `json:"created_at"`
	Message            *ollamaMessage `json:"message,omitempty"`
	Response           *string        `json:"response,omitempty"`
	Done               bool           `json:"done"`
	DoneReason         string         `json:"done_reason,omitempty"`
	TotalDuration      int64          `json:"total_duration,omitempty"`
	LoadDuration       int64          `json:"load_duration,omitempty"`
	PromptEvalCount    uint32         `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64          `json:"prompt_eval_duration,omitempty"`
	EvalCount          uint32         `json:"eval_count,omitempty"`
	EvalDuration       int64          `json:"eval_duration,omitempty"`
}

func (e *ollamaEncoder) event(text string) *ollamaResponse {
	r := &ollamaResponse{Model: e.model, CreatedAt: time.Now().UTC()}
	if e.chat {
		r.Message = &ollamaMessage{Role: "assistant", Content: text}
	} else {
		r.Response = &text
	}
	return r
}

// final is the closing event: done, why, token counts and durations in nanoseconds.
func (e *ollamaEncoder) final(text, reason string, done *commonv1.Done, total time.Duration) *ollamaResponse {
	r := e.event(text)
	r.Done, r.DoneReason = true, reason
	if done == nil {
		return r
	}
	t := done.GetTimings()
	r.TotalDuration = int64(total)
	r.LoadDuration = int64(t.GetLoad().AsDuration())
	r.PromptEvalCount = done.GetUsage().GetPromptTokens()
	r.PromptEvalDuration = int64(t.GetPromptEval().AsDuration())
	r.EvalCount = done.GetUsage().GetCompletionTokens()
	r.EvalDuration = int64(t.GetEval().AsDuration())
	return r
}

func doneReason(done *commonv1.Done) string {
	if r := done.GetDoneReason(); r != "" {
		return r
	}
	return "stop"
}

func ndjson(v any) []byte {
	b, _ := json.Marshal(v) // plain structs of strings and numbers: cannot fail
	return append(b, '\n')
}

func (e *ollamaEncoder) streamContentType() string { return "application/x-ndjson" }
func (e *ollamaEncoder) chunk(text string) []byte  { return ndjson(e.event(text)) }

// progress: Ollama clients have no event for load progress, so it is dropped; during a long
// cold start an empty chunk (which Ollama itself sends, and clients print as nothing) keeps
// idle-timeout proxies from cutting the connection.
func (e *ollamaEncoder) progress(_ *commonv1.LoadProgress, idle time.Duration) []byte {
	if idle < keepAliveEvery {
		return nil
	}
	return ndjson(e.event(""))
}

func (e *ollamaEncoder) end(done *commonv1.Done, total time.Duration) []byte {
	return ndjson(e.final("", doneReason(done), done, total))
}

func (e *ollamaEncoder) whole(done *commonv1.Done, text string, total time.Duration) any {
	return e.final(text, doneReason(done), done, total)
}

func (e *ollamaEncoder) streamError(ae *apiError) []byte {
	return ndjson(map[string]string{"error": ae.message})
}

func (e *ollamaEncoder) writeError(w http.ResponseWriter, ae *apiError) { writeOllamaError(w, ae) }

// keepAliveEvery is how long a stream may stay silent during a cold start before an empty
// event is sent; well below common proxy idle timeouts (60 s).
const keepAliveEvery = 15 * time.Second
