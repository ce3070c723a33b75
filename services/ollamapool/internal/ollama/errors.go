package ollama

import (
	"fmt"
)

// Class sorts failures by what they say about the node. The pool's circuit breaker keeps
// them apart: a busy node is saturated, not broken; a missing model is nobody's fault.
type Class string

// Failure classes.
const (
	// ClassConnect: the node could not be reached.
	ClassConnect Class = "connect"
	// ClassBusy: the node answered 503 or 429 (its queue is full).
	ClassBusy Class = "busy"
	// ClassModelMissing: the node does not have the model (404).
	ClassModelMissing Class = "model_missing"
	// ClassBadRequest: the node rejected the request itself (400); retrying elsewhere will
	// not help.
	ClassBadRequest Class = "bad_request"
	// ClassServer: the node failed (5xx other than 503, or an error line in the stream).
	ClassServer Class = "server_error"
	// ClassFirstTokenTimeout: no first token within the first-token timeout.
	ClassFirstTokenTimeout Class = "first_token_timeout"
	// ClassIdleTimeout: silence between tokens exceeded the idle timeout.
	ClassIdleTimeout Class = "idle_timeout"
	// ClassBrokenStream: the stream broke off, or ended without its final chunk.
	ClassBrokenStream Class = "broken_stream"
	// ClassCanceled: the caller went away; says nothing about the node.
	ClassCanceled Class = "canceled"
)

// Error is a classified failure of one request to one node.
type Error struct {
	Class  Class
	Node   string // the node's address
	Status int    // HTTP status, when the node answered one
	// Message is the node's own words, or what went wrong.
	Message string
	// Tokens is how many chunks with text reached the caller before the failure.
	Tokens int
	Err    error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("ollama %s: %s", e.Node, e.Class)
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable says whether another node may succeed where this one failed, before any token
// was relayed.
func (e *Error) Retryable() bool {
	switch e.Class {
	case ClassBadRequest, ClassCanceled:
		return false
	}
	return e.Tokens == 0
}

// NodeFault says whether the failure counts against the node's health in the breaker.
func (e *Error) NodeFault() bool {
	switch e.Class {
	case ClassConnect, ClassServer, ClassFirstTokenTimeout, ClassIdleTimeout, ClassBrokenStream:
		return true
	}
	return false
}
