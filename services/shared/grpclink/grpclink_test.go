package grpclink_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sollol/mesh/services/shared/grpclink"
)

// echoDesc is a one-method service that answers each message with itself.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return in, nil
		},
	}},
}

// A message larger than both fixed windows crosses the link in both directions (flow control
// refills the windows as the receiver reads), and one over the size limit is refused.
func TestLinkCarriesMessagesLargerThanItsWindows(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpclink.ServerOptions()...)
	srv.RegisterService(&echoDesc, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpclink.DialOptions()...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	big := bytes.Repeat([]byte{7}, grpclink.ConnWindowBytes+grpclink.StreamWindowBytes)
	require.Less(t, len(big), grpclink.MaxMessageBytes)
	out := new(wrapperspb.BytesValue)
	require.NoError(t, conn.Invoke(ctx, "/test.Echo/Echo", wrapperspb.Bytes(big), out))
	require.True(t, bytes.Equal(big, out.GetValue()), "the echo is the message sent")

	err = conn.Invoke(ctx, "/test.Echo/Echo", wrapperspb.Bytes(make([]byte, grpclink.MaxMessageBytes+1)), out)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "a message over the limit is refused: %v", err)
}
