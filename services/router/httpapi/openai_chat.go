package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	"github.com/sollol/mesh/services/router"
)

// openaiMessage is one chat message; content is a string, an array of parts, or null.
type openaiMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// openaiSampling are the generation fields /v1/chat/completions and /v1/completions share,
// plus the mesh's "hint" and "priority" extensions.
type openaiSampling struct {
	Model               string          `json:"model"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	N                   *int64          `json:"n"`
	Hint                string          `json:"hint"`
	Priority            int32           `json:"priority"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type openaiChatRequest struct {
	openaiSampling
	Messages       []openaiMessage `json:"messages"`
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

// inference maps the shared fields. n must be 1: the mesh produces one choice per request,
// and silently returning one where n were asked for would break the caller's indexing.
func (s *openaiSampling) inference() (*router.Inference, error) {
	if s.N != nil && *s.N != 1 {
		return nil, badRequest("n", "must be 1: the mesh returns one choice per request, got %d", *s.N)
	}
	o := &commonv1.GenerationOptions{Temperature: s.Temperature, TopP: s.TopP, Seed: s.Seed}
	if n := s.MaxCompletionTokens; n != nil {
		o.MaxTokens = proto.Int32(clamp32(*n))
	} else if n := s.MaxTokens; n != nil {
		o.MaxTokens = proto.Int32(clamp32(*n))
	}
	var stop any
	if len(s.Stop) > 0 {
		if err := json.Unmarshal(s.Stop, &stop); err != nil {
			return nil, badRequest("stop", "must be a string or an array of strings")
		}
	}
	var err error
	if o.Stop, err = stopList("stop", stop); err != nil {
		return nil, err
	}
	hint, err := parseHint(s.Hint)
	if err != nil {
		return nil, err
	}
	return &router.Inference{Model: s.Model, Options: o, Hint: hint, Priority: s.Priority}, nil
}

var openaiRoles = map[string]commonv1.Role{
	"system": commonv1.Role_ROLE_SYSTEM, "developer": commonv1.Role_ROLE_SYSTEM, "user": commonv1.Role_ROLE_USER,
	"assistant": commonv1.Role_ROLE_ASSISTANT, "tool": commonv1.Role_ROLE_TOOL, "function": commonv1.Role_ROLE_TOOL,
}

// openaiContentPart is one element of an array content: text, or an image as a data: URL.
type openaiContentPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL struct {
		URL string `json:"url"`
	} `json:"image_url"`
}

func openaiMessages(msgs []openaiMessage) ([]*commonv1.ChatMessage, error) {
	out := make([]*commonv1.ChatMessage, 0, len(msgs))
	for i, m := range msgs {
		field := "messages[" + strconv.Itoa(i) + "]"
		role, ok := openaiRoles[m.Role]
		if !ok {
			return nil, badRequest(field+".role", `must be "system", "developer", "user", "assistant" or "tool", got %q`, m.Role)
		}
		msg := &commonv1.ChatMessage{Role: role}
		var text string
		var parts []openaiContentPart
		switch {
		case len(m.Content) == 0 || string(m.Content) == "null":
		case json.Unmarshal(m.Content, &text) == nil:
			msg.Content = text
		case json.Unmarshal(m.Content, &parts) == nil:
			for j, p := range parts {
				switch p.Type {
				case "text":
					msg.Content += p.Text
				case "image_url":
					img, err := dataURL(field+".content["+strconv.Itoa(j)+"].image_url.url", p.ImageURL.URL)
					if err != nil {
						return nil, err
					}
					msg.Images = append(msg.Images, img)
				default:
					return nil, badRequest(field+".content["+strconv.Itoa(j)+"].type", `must be "text" or "image_url", got %q`, p.Type)
				}
			}
		default:
			return nil, badRequest(field+".content", "must be a string or an array of content parts")
		}
		out = append(out, msg)
	}
	return out, nil
}

// dataURL decodes an inline image; the mesh does not fetch URLs on a client's behalf.
func dataURL(field, u string) ([]byte, error) {
	rest, ok := strings.CutPrefix(u, "data:")
	_, payload, isB64 := strings.Cut(rest, ";base64,")
	if !ok || !isB64 {
		return nil, badRequest(field, "must be a data: URL with base64 content (the router does not fetch images)")
	}
	b, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return nil, badRequest(field, "is not valid base64")
	}
	return b, nil
}

// openaiChat serves POST /v1/chat/completions.
func (a *api) openaiChat(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var req openaiChatRequest
	if err := a.decode(w, r, &req); err != nil {
		writeOpenAIError(w, toAPIError(err))
		return
	}
	in, err := req.inference()
	if err == nil {
		in.Messages, err = openaiMessages(req.Messages)
	}
	if err == nil && req.ResponseFormat != nil {
		switch req.ResponseFormat.Type {
		case "", "text":
		case "json_object":
			in.Options.Format = "json"
		default:
			err = badRequest("response_format.type", `must be "text" or "json_object", got %q (JSON schemas are not supported through the router)`, req.ResponseFormat.Type)
		}
	}
	if err == nil {
		err = router.Validate(in)
	}
	if err != nil {
		writeOpenAIError(w, toAPIError(err))
		return
	}
	a.run(w, r, arrived, in, newOpenAIEncoder(req.Model, true, req.StreamOptions), req.Stream)
}

// openaiCompletions serves POST /v1/completions, the legacy text completion API.
func (a *api) openaiCompletions(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var req struct {
		openaiSampling
		Prompt json.RawMessage `json:"prompt"`
	}
	if err := a.decode(w, r, &req); err != nil {
		writeOpenAIError(w, toAPIError(err))
		return
	}
	in, err := req.inference()
	if err == nil {
		var prompts []string
		prompts, err = embedInputs("prompt", req.Prompt)
		switch {
		case err != nil:
		case len(prompts) != 1:
			err = badRequest("prompt", "must hold exactly one non-empty prompt, got %d", len(prompts))
		default:
			in.Prompt = prompts[0]
		}
	}
	if err == nil {
		err = router.Validate(in)
	}
	if err != nil {
		writeOpenAIError(w, toAPIError(err))
		return
	}
	a.run(w, r, arrived, in, newOpenAIEncoder(req.Model, false, req.StreamOptions), req.Stream)
}
