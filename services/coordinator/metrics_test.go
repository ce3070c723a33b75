package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/grpcserver"
	"github.com/sollol/mesh/services/shared/testutil"
)

// The manager's figures reach Prometheus: counters of requests and starts, and per model the
// coordinator's state, load and queue.
func TestMetricsExportTheManagersFigures(t *testing.T) {
	w := newWorld(t, worldOptions{Devices: gib(1), Models: []string{"tiny"}})
	reg := prometheus.NewRegistry()
	svc, err := coordinator.New(w.config(nil), grpcserver.Deps{Logger: quietLog(), Etcd: w.cluster.Client(), Registry: reg})
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	r := &replica{svc: svc, client: dial(t, svc.Addr())}
	requireComplete(t, r.chat(ctxTimeout(t, time.Minute), "tiny", "count me", 2), 2)

	value := func(name string, labels ...string) float64 {
		t.Helper()
		v, ok := testutil.MetricValue(t, reg, name, labels...)
		require.True(t, ok, "metric %s%v is exported", name, labels)
		return v
	}
	require.Equal(t, 1.0, value("sollol_coordinator_requests_total"))
	require.Equal(t, 1.0, value("sollol_coordinator_starts_total"))
	require.Zero(t, value("sollol_coordinator_failures_total"))
	require.Positive(t, value("sollol_coordinator_cold_start_last_seconds"))
	require.Equal(t, 3.0, value("sollol_coordinator_state", "tiny"), "READY")
	require.Zero(t, value("sollol_coordinator_queued", "tiny"))
	require.Zero(t, value("sollol_coordinator_in_flight", "tiny"))
}
