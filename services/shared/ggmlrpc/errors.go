package ggmlrpc

import (
	"errors"
	"fmt"
)

// Errors of Probe and Dial. Dial failures (connection refused, no route, DNS) are returned
// wrapped as they are, and a cancelled context as the context's error; only what happens on an
// accepted connection is classified here.
var (
	// ErrNotRPCServer means the peer accepted the connection but did not answer HELLO like an
	// rpc-server: its reply was garbage or of the wrong size, it closed the connection during
	// the handshake, or it said nothing before the deadline (then ErrNoReply matches too).
	ErrNotRPCServer = errors.New("ggmlrpc: not an rpc-server")

	// ErrNoReply means the peer sent not a single byte before the deadline. A real rpc-server
	// that is serving another client (llama-server) behaves exactly like this, so a caller may
	// prefer to keep what it last knew about the address rather than drop it.
	ErrNoReply = errors.New("ggmlrpc: no reply before deadline")

	// ErrProtocol means the handshake succeeded but a later reply broke the protocol (wrong
	// size, connection closed, absurd device count) or did not come in time.
	ErrProtocol = errors.New("ggmlrpc: protocol error after handshake")
)

// VersionMismatchError means the peer is an rpc-server whose protocol version the client
// (Want) cannot use by llama-server's rule (Version.Accepts).
type VersionMismatchError struct {
	Got  Version // the server's version
	Want Version // the version the client speaks
}

func (e *VersionMismatchError) Error() string {
	return fmt.Sprintf("ggmlrpc: rpc-server speaks protocol %s, client speaks %s", e.Got, e.Want)
}
