package testutil

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricValue reads the counter or gauge name from g with the given label values, ordered by
// label name as Prometheus orders them; ok is false when no such series is exported.
func MetricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (value float64, ok bool) {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var values []string
			for _, l := range m.GetLabel() {
				values = append(values, l.GetValue())
			}
			if !slices.Equal(values, labels) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}
