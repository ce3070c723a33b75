package rpcerr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sollol/mesh/services/shared/rpcerr"
)

func TestToStatus(t *testing.T) {
	notFound := rpcerr.New(rpcerr.KindNotFound, "MODEL_NOT_FOUND", "model %q not found; known: %s", "x", "tiny")
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		reason string
	}{
		{"nil stays nil", nil, codes.OK, ""},
		{"cancel", fmt.Errorf("relay: %w", context.Canceled), codes.Canceled, ""},
		{"deadline", fmt.Errorf("relay: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"public error wrapped", fmt.Errorf("resolve: %w", notFound), codes.NotFound, "MODEL_NOT_FOUND"},
		{"field error", rpcerr.InvalidArgument("messages", "must not be empty"), codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"status passes through", status.Error(codes.Unavailable, "down"), codes.Unavailable, ""},
		{"plain error is internal", errors.New("boom"), codes.Internal, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rpcerr.ToStatus(tt.err)
			require.Equal(t, tt.code, status.Code(got))
			require.Equal(t, tt.reason, rpcerr.Reason(got))
		})
	}
}

func TestInvalidArgumentNamesTheField(t *testing.T) {
	st := status.Convert(rpcerr.ToStatus(rpcerr.InvalidArgument("options.temperature", "must be between 0 and 2, got %v", 7.0)))
	require.Contains(t, st.Message(), "options.temperature")
	var violations []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			violations = br.GetFieldViolations()
		}
	}
	require.Len(t, violations, 1)
	require.Equal(t, "options.temperature", violations[0].GetField())
}
