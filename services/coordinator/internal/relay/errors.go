package relay

import (
	"fmt"
	"strconv"

	"github.com/sollol/mesh/services/shared/rpcerr"
)

// UpstreamError is llama-server refusing a request (HTTP 4xx/5xx, or an error event inside a
// stream), with what was sent and what came back.
type UpstreamError struct {
	Addr, Path string
	// Status is the HTTP status (or the error object's code for an error event).
	Status int
	// Type and Message are from llama-server's error object, e.g. "exceed_context_size_error".
	Type, Message string
	// Request is the request as sent, text redacted unless debug, truncated.
	Request string
	// Response is the raw answer, truncated.
	Response string
}

func (e *UpstreamError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Response
	}
	return fmt.Sprintf("llama-server at %s answered %s with HTTP %d: %s", e.Addr, e.Path, e.Status, msg)
}

// Public maps the refusal to the mesh's error: a request llama-server finds bad (400) is the
// caller's to fix; an overloaded or loading one (503) is worth retrying; the rest are faults.
func (e *UpstreamError) Public(model string) *rpcerr.Error {
	kind, reason := rpcerr.KindInternal, "COORDINATOR_ERROR"
	switch {
	case e.Status == 400 || e.Status == 413 || e.Status == 422:
		kind, reason = rpcerr.KindInvalidArgument, "COORDINATOR_REJECTED_REQUEST"
	case e.Status == 503 || e.Status == 429:
		kind, reason = rpcerr.KindUnavailable, "COORDINATOR_BUSY"
	case e.Status == 501:
		kind, reason = rpcerr.KindUnimplemented, "COORDINATOR_UNSUPPORTED"
	}
	return &rpcerr.Error{Kind: kind, Reason: reason, Err: e,
		Message: fmt.Sprintf("the coordinator of model %s refused the request", model),
		Metadata: map[string]string{
			"coordinator": e.Addr, "http_status": strconv.Itoa(e.Status), "upstream_type": e.Type,
			"upstream_message": e.Message, "request": e.Request, "response": e.Response,
		}}
}

// StreamError is a stream that could not start or broke off: the connection failed, the
// answer was malformed, or it ended without its final chunk.
type StreamError struct {
	Addr string
	// Tokens is how many pieces of text were relayed before it broke.
	Tokens int
	Err    error
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("llama-server at %s: %v (after %d tokens)", e.Addr, e.Err, e.Tokens)
}

func (e *StreamError) Unwrap() error { return e.Err }

// BeforeFirstToken reports whether nothing was relayed yet, so the request may be retried.
func (e *StreamError) BeforeFirstToken() bool { return e.Tokens == 0 }
