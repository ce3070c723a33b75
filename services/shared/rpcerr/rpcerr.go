// Package rpcerr is the mesh's one error boundary. Domain code wraps errors with %w and marks
// the public ones with a Kind; gRPC adapters call ToStatus once, which maps kinds to codes
// through one table and attaches a google.rpc.ErrorInfo with a stable reason (AIP-193), plus
// a BadRequest field violation when a request field is at fault.
package rpcerr

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every mesh error.
const Domain = "sollol.mesh"

// Kind classifies a public error; each kind has exactly one gRPC code.
type Kind int

// The kinds of public error.
const (
	KindInternal Kind = iota
	KindInvalidArgument
	KindNotFound
	KindFailedPrecondition
	KindUnavailable
	KindResourceExhausted
	KindUnimplemented
	KindAborted
)

var codeOf = map[Kind]codes.Code{
	KindInternal:           codes.Internal,
	KindInvalidArgument:    codes.InvalidArgument,
	KindNotFound:           codes.NotFound,
	KindFailedPrecondition: codes.FailedPrecondition,
	KindUnavailable:        codes.Unavailable,
	KindResourceExhausted:  codes.ResourceExhausted,
	KindUnimplemented:      codes.Unimplemented,
	KindAborted:            codes.Aborted,
}

// Error is a public error: what clients see, with a stable machine-readable reason.
type Error struct {
	Kind Kind
	// Reason is UPPER_SNAKE_CASE and never changes once published, e.g. "MODEL_NOT_FOUND".
	Reason string
	// Message is for people; say what is wrong and what to do.
	Message string
	// Field names the request field at fault, for INVALID_ARGUMENT.
	Field string
	// Metadata carries facts a client may act on (e.g. "needed_bytes").
	Metadata map[string]string
	// Err is the cause, kept for errors.Is/As inside the process.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// InvalidArgument reports a bad request field.
func InvalidArgument(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalidArgument, Reason: "INVALID_ARGUMENT", Field: field,
		Message: field + ": " + fmt.Sprintf(format, args...)}
}

// New returns a public error of kind with a reason and message.
func New(kind Kind, reason, format string, args ...any) *Error {
	return &Error{Kind: kind, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ToStatus converts any error into a gRPC status error. Context errors keep their meaning;
// errors that already carry a status pass through; public Errors map through the table;
// anything else becomes INTERNAL without leaking its text's internals beyond the message.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	var pub *Error
	if errors.As(err, &pub) {
		st := status.New(codeOf[pub.Kind], pub.Error())
		details := []*errdetails.ErrorInfo{{Reason: pub.Reason, Domain: Domain, Metadata: pub.Metadata}}
		withInfo, derr := st.WithDetails(details[0])
		if derr != nil {
			return st.Err()
		}
		if pub.Field != "" {
			br := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
				Field: pub.Field, Description: pub.Message,
			}}}
			if both, derr := withInfo.WithDetails(br); derr == nil {
				return both.Err()
			}
		}
		return withInfo.Err()
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// Reason extracts the ErrorInfo reason from a status error, or "".
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
