package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/coordinator"
	"github.com/sollol/mesh/services/shared/grpcserver"
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

	families, err := reg.Gather()
	require.NoError(t, err)
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	value := func(name string) float64 {
		t.Helper()
		f := byName[name]
		require.NotNil(t, f, "metric %s is exported", name)
		m := f.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	require.Equal(t, 1.0, value("sollol_coordinator_requests_total"))
	require.Equal(t, 1.0, value("sollol_coordinator_starts_total"))
	require.Zero(t, value("sollol_coordinator_failures_total"))
	require.Positive(t, value("sollol_coordinator_cold_start_last_seconds"))
	require.Equal(t, 3.0, value("sollol_coordinator_state"), "READY")
	require.Zero(t, value("sollol_coordinator_queued"))
	require.Equal(t, "tiny", byName["sollol_coordinator_state"].GetMetric()[0].GetLabel()[0].GetValue())
}
