package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
)

// decode reads one JSON request body into dst. The body is bounded (413 past the limit);
// unknown fields are ignored, as Ollama and OpenAI ignore them; every other problem is a 400
// that names the field or the position in the body.
func (a *api) decode(w http.ResponseWriter, r *http.Request, dst any) error {
	body := http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes)
	err := json.NewDecoder(body).Decode(dst)
	if err == nil {
		return nil
	}
	var (
		tooBig  *http.MaxBytesError
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
		b64     base64.CorruptInputError
		field   *fieldError
	)
	switch {
	case errors.As(err, &tooBig):
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "request_too_large",
			message: fmt.Sprintf("request body is larger than the limit of %d bytes (--router.max-body-bytes)", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return &apiError{status: http.StatusBadRequest, code: "invalid_json", message: "missing request body: send a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &apiError{status: http.StatusBadRequest, code: "invalid_json", message: "invalid JSON: the body ends in the middle of a value"}
	case errors.As(err, &syntax):
		return &apiError{status: http.StatusBadRequest, code: "invalid_json", message: fmt.Sprintf("invalid JSON at byte %d: %v", syntax.Offset, err)}
	case errors.As(err, &typeErr):
		name := typeErr.Field
		if name == "" {
			name = "body"
		}
		return badRequest(name, "must be %s, got %s", jsonKind(typeErr.Type), typeErr.Value)
	case errors.As(err, &field):
		return badRequest(field.field, "%s", field.msg)
	case errors.As(err, &b64):
		return badRequest("images", "is not valid base64: %v", err)
	}
	return &apiError{status: http.StatusBadRequest, code: "invalid_json", message: "invalid request body: " + err.Error()}
}

// fieldError is returned by custom unmarshalers so decode can name the field.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// jsonKind names a Go type the way a JSON client thinks of it.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value of another type"
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a value of another type"
}

// parseHint reads the "hint" extension field: "" or "auto", "pool", "shard".
func parseHint(s string) (commonv1.RouteHint, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return commonv1.RouteHint_ROUTE_HINT_AUTO, nil
	case "pool":
		return commonv1.RouteHint_ROUTE_HINT_POOL, nil
	case "shard", "sharding":
		return commonv1.RouteHint_ROUTE_HINT_SHARD, nil
	}
	return 0, badRequest("hint", `must be "auto", "pool" or "shard", got %q`, s)
}

// parseKeepAlive reads Ollama's keep_alive: a number of seconds or a Go duration string; a
// negative value keeps the model loaded forever (sent on as -1s, which Ollama reads so).
func parseKeepAlive(raw json.RawMessage) (*durationpb.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, badRequest("keep_alive", "is not valid JSON")
	}
	var d time.Duration
	switch t := v.(type) {
	case float64:
		if t > float64(math.MaxInt64/int64(time.Second)) {
			t = float64(math.MaxInt64 / int64(time.Second))
		}
		d = time.Duration(t * float64(time.Second))
	case string:
		var err error
		if d, err = time.ParseDuration(t); err != nil {
			return nil, badRequest("keep_alive", "must be a number of seconds or a duration like \"5m\", got %q", t)
		}
	default:
		return nil, badRequest("keep_alive", "must be a number of seconds or a duration string")
	}
	if d < 0 {
		d = -time.Second
	}
	return durationpb.New(d), nil
}

// parseFormat reads Ollama's format: "json" or nothing. A JSON schema (structured output)
// is refused rather than silently degraded to plain JSON mode.
func parseFormat(field string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badRequest(field, `JSON schemas are not supported through the router; use "json"`)
	}
	if s != "json" {
		return "", badRequest(field, `must be "json", got %q`, s)
	}
	return "json", nil
}
