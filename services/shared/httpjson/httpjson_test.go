package httpjson

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewRequest(t *testing.T) {
	req, err := NewRequest(context.Background(), http.MethodPost, "http://127.0.0.1:1/api/show", map[string]string{"model": "tiny"})
	require.NoError(t, err)
	require.Equal(t, "application/json", req.Header.Get("Content-Type"))
	b, err := io.ReadAll(req.Body)
	require.NoError(t, err)
	require.JSONEq(t, `{"model":"tiny"}`, string(b))

	get, err := NewRequest(context.Background(), http.MethodGet, "http://127.0.0.1:1/api/tags", nil)
	require.NoError(t, err)
	require.Nil(t, get.Body)
	require.Empty(t, get.Header.Get("Content-Type"))

	_, err = NewRequest(context.Background(), http.MethodPost, "http://x", func() {})
	require.Error(t, err, "a body JSON cannot encode")
}
