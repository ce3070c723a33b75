package discovery

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports discovery's view to Prometheus at scrape time: the backends in etcd by
// kind and health (as every replica sees them), and this replica's work as leader.
type collector struct{ s *Service }

var (
	descBackends = prometheus.NewDesc("sollol_discovery_backends", "Backends in etcd by kind and health.", []string{"kind", "health"}, nil)
	descProbes   = prometheus.NewDesc("sollol_discovery_probes_total", "Probes this replica ran as leader.", nil, nil)
	descScans    = prometheus.NewDesc("sollol_discovery_scans_total", "Scans of the configured ranges this replica ran as leader.", nil, nil)
	descWrites   = prometheus.NewDesc("sollol_discovery_writes_total", "Backend records this replica wrote to etcd.", nil, nil)
	descLeader   = prometheus.NewDesc("sollol_discovery_leader", "1 while this replica is the leader that probes.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBackends, descProbes, descScans, descWrites, descLeader} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ kind, health string }
	counts := map[key]int{}
	for _, b := range c.s.snapshot.Items() {
		counts[key{strings.ToLower(strings.TrimPrefix(b.GetKind().String(), "BACKEND_KIND_")),
			strings.ToLower(strings.TrimPrefix(b.GetHealth().String(), "HEALTH_STATE_"))}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descBackends, prometheus.GaugeValue, float64(n), k.kind, k.health)
	}
	probes, scans, writes := c.s.Counters()
	ch <- prometheus.MustNewConstMetric(descProbes, prometheus.CounterValue, float64(probes))
	ch <- prometheus.MustNewConstMetric(descScans, prometheus.CounterValue, float64(scans))
	ch <- prometheus.MustNewConstMetric(descWrites, prometheus.CounterValue, float64(writes))
	leader := 0.0
	if c.s.IsLeader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
}
