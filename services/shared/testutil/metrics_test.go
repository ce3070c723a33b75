package testutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestMetricValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"to", "from"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	reg.MustRegister(c, g)
	c.WithLabelValues("b", "a").Add(3)
	g.Set(7)

	v, ok := MetricValue(t, reg, "c_total", "a", "b") // from, to: by label name
	require.True(t, ok)
	require.Equal(t, 3.0, v)
	v, ok = MetricValue(t, reg, "g")
	require.True(t, ok)
	require.Equal(t, 7.0, v)
	_, ok = MetricValue(t, reg, "c_total", "b", "a")
	require.False(t, ok)
	_, ok = MetricValue(t, reg, "missing")
	require.False(t, ok)
}
