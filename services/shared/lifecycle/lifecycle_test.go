package lifecycle_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/lifecycle"
)

// recorder is a hand-written fake service that notes its calls in a shared journal.
type recorder struct {
	name     string
	journal  *[]string
	startErr error
	errc     chan error
}

func (r *recorder) Name() string { return r.name }

func (r *recorder) Start(context.Context) error {
	*r.journal = append(*r.journal, "start "+r.name)
	return r.startErr
}

func (r *recorder) Stop(context.Context) error {
	*r.journal = append(*r.journal, "stop "+r.name)
	return nil
}

func (r *recorder) Err() <-chan error { return r.errc }

func TestStartsInOrderAndStopsInReverse(t *testing.T) {
	var journal []string
	m := lifecycle.NewManager(slog.Default())
	for _, n := range []string{"etcd", "pool", "router"} {
		m.Add(&recorder{name: n, journal: &journal})
	}
	require.False(t, m.Ready())
	require.NoError(t, m.Start(context.Background()))
	require.True(t, m.Ready())
	require.NoError(t, m.Stop(context.Background()))
	require.False(t, m.Ready())
	require.Equal(t, []string{"start etcd", "start pool", "start router", "stop router", "stop pool", "stop etcd"}, journal)
}

func TestFailedStartStopsWhatAlreadyRuns(t *testing.T) {
	var journal []string
	m := lifecycle.NewManager(slog.Default())
	m.Add(&recorder{name: "etcd", journal: &journal})
	m.Add(&recorder{name: "pool", journal: &journal, startErr: errors.New("port in use")})
	m.Add(&recorder{name: "router", journal: &journal})

	err := m.Start(context.Background())
	require.ErrorContains(t, err, "start pool: port in use")
	require.Equal(t, []string{"start etcd", "start pool", "stop etcd"}, journal, "router never starts; etcd is stopped again")
	states := map[string]lifecycle.State{}
	for _, s := range m.States() {
		states[s.Name] = s.State
	}
	require.Equal(t, map[string]lifecycle.State{"etcd": lifecycle.StateStopped, "pool": lifecycle.StateFailed, "router": lifecycle.StateNew}, states)
}

func TestFailureAfterStartIsReported(t *testing.T) {
	var journal []string
	m := lifecycle.NewManager(slog.Default())
	svc := &recorder{name: "http", journal: &journal, errc: make(chan error, 1)}
	m.Add(svc)
	require.NoError(t, m.Start(context.Background()))
	svc.errc <- errors.New("listener closed")
	err := <-m.Failed()
	require.ErrorContains(t, err, "http failed: listener closed")
	require.False(t, m.Ready())
}

func TestReadyzNamesEveryTarget(t *testing.T) {
	var journal []string
	m := lifecycle.NewManager(slog.Default())
	m.Add(&recorder{name: "router", journal: &journal})

	get := func() (int, map[string]any) {
		rec := httptest.NewRecorder()
		m.ReadyzHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		var body map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
		return rec.Code, body
	}
	code, body := get()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, []any{map[string]any{"name": "router", "state": "new"}}, body["targets"])

	require.NoError(t, m.Start(context.Background()))
	code, body = get()
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, true, body["ready"])
}
