// Package grpclink sets up the gRPC links between the mesh's services the same way at both
// ends: message size limits, plaintext inside the mesh, and flow-control windows.
package grpclink

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// MaxMessageBytes bounds a single gRPC message; chat requests may carry images.
const MaxMessageBytes = 32 << 20

// Flow-control windows, fixed. The mesh streams small messages (a token each) over short
// links. With gRPC's dynamic windows the receiving end of a connection sends a
// bandwidth-delay probe, which the other end answers, for nearly every token on a quiet
// connection: the estimator keeps probing until the window reaches 16 MiB, which token-sized
// messages never fill. Fixed windows save that traffic (about a tenth of the sollol
// process's CPU per request at 64 streams, BENCHMARKS.md) and are ample for a LAN's
// bandwidth-delay product (10 Gbit/s × 1 ms ≈ 1.2 MiB) and for large embedding answers.
const (
	StreamWindowBytes = 4 << 20
	ConnWindowBytes   = 16 << 20
)

// DialOptions are the options of every connection from one mesh service to another.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithStaticStreamWindowSize(StreamWindowBytes),
		grpc.WithStaticConnWindowSize(ConnWindowBytes),
	}
}

// ServerOptions are the matching options of every mesh service's server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.StaticStreamWindowSize(StreamWindowBytes),
		grpc.StaticConnWindowSize(ConnWindowBytes),
	}
}
