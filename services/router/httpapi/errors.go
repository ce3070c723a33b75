package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/sollol/mesh/gen/go/sollol/common/v1"
	routerv1 "github.com/sollol/mesh/gen/go/sollol/router/v1"
	"github.com/sollol/mesh/services/shared/inference"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// statusClientClosed is nginx's 499: logged for a client that went away, never sent (there
// is nobody to send it to).
const statusClientClosed = 499

// apiError is an error as both HTTP APIs report it: a status, a message for people, a stable
// snake_case code for programs, and the request field at fault.
type apiError struct {
	status  int
	message string
	code    string
	field   string
}

func (e *apiError) Error() string { return e.message }

// httpStatus is the one table from gRPC codes to HTTP statuses. FAILED_PRECONDITION (no
// path can serve the request) is a 503: the service is up but cannot serve this until
// someone configures it, and the message says what to configure.
var httpStatus = map[codes.Code]int{
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.Unauthenticated:    http.StatusUnauthorized,
	codes.FailedPrecondition: http.StatusServiceUnavailable,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.Canceled:           statusClientClosed,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.Aborted:            http.StatusBadGateway,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Internal:           http.StatusInternalServerError,
	codes.Unknown:            http.StatusInternalServerError,
	codes.DataLoss:           http.StatusInternalServerError,
}

// toAPIError converts any error through the mesh's one error boundary (rpcerr.ToStatus), so
// an HTTP client sees the same code, reason and field a gRPC client would.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	st := status.Convert(rpcerr.ToStatus(err))
	e := &apiError{status: http.StatusInternalServerError, message: st.Message()}
	if s, ok := httpStatus[st.Code()]; ok {
		e.status = s
	}
	e.code = strings.ToLower(rpcerr.Reason(st.Err()))
	if e.code == "" {
		e.code = snake(st.Code().String())
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			e.field = br.GetFieldViolations()[0].GetField()
		}
	}
	return e
}

// snake turns a gRPC code name ("DeadlineExceeded") into an error code ("deadline_exceeded").
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// badRequest is a 400 that names the field at fault, in the gRPC API's words.
func badRequest(field, format string, args ...any) error {
	return rpcerr.InvalidArgument(field, format, args...)
}

// modelNotFound is the NOT_FOUND every API gives for a model the mesh does not have, in
// Ollama's words, listing what the mesh does have.
func modelNotFound(model string, known []string) error {
	msg := "model '" + model + "' not found"
	if len(known) > 0 {
		msg += "; the mesh has: " + strings.Join(known, ", ")
	}
	return rpcerr.New(rpcerr.KindNotFound, "MODEL_NOT_FOUND", "%s", msg)
}

// knownModels lists every model an Ollama node of the mesh has, deduplicated, sorted.
func (a *api) knownModels() []string {
	var names []string
	for _, b := range a.r.Backends() {
		for _, m := range b.GetInstalledModels() {
			if !slices.ContainsFunc(names, func(n string) bool { return inference.SameModel(n, m.GetName()) }) {
				names = append(names, m.GetName())
			}
		}
	}
	slices.Sort(names)
	return names
}

// classify turns the router's "no path can serve this" into Ollama's 404 when the reason is
// simply that no node has the model: the pool is on, the model is on no Ollama node, and
// sharding cannot take it either. Clients act on that 404 (the ollama CLI offers to pull);
// every other FAILED_PRECONDITION keeps the router's "what to configure" message.
func (a *api) classify(err error, model string, d *routerv1.Decision, hint commonv1.RouteHint) error {
	if status.Code(rpcerr.ToStatus(err)) != codes.FailedPrecondition || d == nil || !d.GetMode().GetTaskDistribution() {
		return err
	}
	if hint == commonv1.RouteHint_ROUTE_HINT_SHARD {
		return err
	}
	for _, c := range d.GetCandidates() {
		if c.GetPath() == commonv1.RoutePath_ROUTE_PATH_SHARD && c.GetAvailable() {
			return err
		}
	}
	known := a.knownModels()
	if slices.ContainsFunc(known, func(n string) bool { return inference.SameModel(n, model) }) {
		return err
	}
	return modelNotFound(model, known)
}

// noPath is the router's answer when its decision found no path (see router.Service.Run).
func noPath(d *routerv1.Decision) error {
	return &rpcerr.Error{Kind: rpcerr.KindFailedPrecondition, Reason: "NO_PATH", Message: d.GetError()}
}

// writeOllamaError answers {"error": "..."}, Ollama's shape.
func writeOllamaError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, map[string]string{"error": e.message})
}

// openaiErrorBody is OpenAI's error object.
type openaiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func openaiError(e *apiError) map[string]openaiErrorBody {
	body := openaiErrorBody{Message: e.message, Type: openaiErrorType(e.status)}
	if e.field != "" {
		body.Param = &e.field
	}
	if e.code != "" {
		body.Code = &e.code
	}
	return map[string]openaiErrorBody{"error": body}
}

// openaiErrorType follows OpenAI's classes: the caller's fault, too many requests, or ours.
func openaiErrorType(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "authentication_error"
	case status < 500:
		return "invalid_request_error"
	}
	return "server_error"
}

// writeOpenAIError answers {"error": {"message", "type", "param", "code"}}, OpenAI's shape.
func writeOpenAIError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, openaiError(e))
}

// writeJSON answers one JSON document.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error: cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
