package coordinator

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/sollol/mesh/gen/go/sollol/coordinator/v1"
	"github.com/sollol/mesh/services/shared/grpclink"
	"github.com/sollol/mesh/services/shared/rpcerr"
)

// forwardedKey marks a request one replica forwarded to the owner of its model; the owner
// serves it or fails, never forwards it again.
const forwardedKey = "x-sollol-coordinator-forwarded"

// maxForwards bounds how often a request follows a model's ownership from replica to replica.
const maxForwards = 3

// forwarder keeps one client connection per owner replica.
type forwarder struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newForwarder() *forwarder { return &forwarder{conns: map[string]*grpc.ClientConn{}} }

func (f *forwarder) client(addr string) (coordinatorv1.CoordinatorServiceClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		return coordinatorv1.NewCoordinatorServiceClient(c), nil
	}
	c, err := grpc.NewClient(addr, grpclink.DialOptions()...)
	if err != nil {
		return nil, err
	}
	f.conns[addr] = c
	return coordinatorv1.NewCoordinatorServiceClient(c), nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		_ = c.Close()
		delete(f.conns, addr)
	}
}

// forwardedCtx marks an outgoing call as forwarded.
func forwardedCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

// isForwarded reports whether the incoming call was forwarded by another replica.
func isForwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedKey)) > 0
}

// ownerMoved reports an owner that no longer owns the model: try again from the start.
func ownerMoved(err error) bool { return rpcerr.Reason(err) == "OWNER_MOVED" }

// ownerUnreachable reports a forward that did not reach a serving owner: the connection
// failed (UNAVAILABLE with no reason: the transport's, not the owner's answer), or the
// owner is shutting down. Either way its ownership is about to end.
func ownerUnreachable(err error) bool {
	err = rpcerr.ToStatus(err)
	if status.Code(err) != codes.Unavailable {
		return false
	}
	switch rpcerr.Reason(err) {
	case "", "OWNER_UNREACHABLE", "SHUTTING_DOWN":
		return true
	}
	return false
}

// relayStream copies every message of a forwarded server stream to the caller's stream. A
// failure is returned as the owner's status; sent reports whether anything reached the caller.
func relayStream[T any](recv func() (T, error), send func(T) error) (sent bool, err error) {
	for {
		msg, err := recv()
		if errors.Is(err, io.EOF) {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
		if err := send(msg); err != nil {
			return true, err
		}
		sent = true
	}
}
