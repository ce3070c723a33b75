package router

import "github.com/prometheus/client_golang/prometheus"

// collector exports the router's counters to Prometheus at scrape time. They count every
// request whichever API it came through (the Ollama and OpenAI APIs call Run directly, so the
// gRPC server's own metrics do not see them).
type collector struct{ s *Service }

var (
	descServed    = prometheus.NewDesc("sollol_router_requests_total", "Requests served, by the path that served them.", []string{"path"}, nil)
	descFallbacks = prometheus.NewDesc("sollol_router_fallbacks_total", "Requests moved to the other path before the first token.", []string{"from", "to"}, nil)
	descRetries   = prometheus.NewDesc("sollol_router_replica_retries_total", "Requests moved to another replica of the same service before the first token.", nil, nil)
	descErrors    = prometheus.NewDesc("sollol_router_errors_total", "Failed requests by gRPC code.", []string{"code"}, nil)
	descInFlight  = prometheus.NewDesc("sollol_router_in_flight", "Requests being served.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServed, descFallbacks, descRetries, descErrors, descInFlight} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.stats
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descServed, st.pool.Load(), "pool")
	counter(descServed, st.shard.Load(), "shard")
	counter(descFallbacks, st.poolToShard.Load(), "pool", "shard")
	counter(descFallbacks, st.shardPool.Load(), "shard", "pool")
	counter(descRetries, st.replicaRetries.Load())
	for code, n := range st.errorCounts() {
		counter(descErrors, n, code)
	}
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(max(st.inFlight.Load(), 0)))
}
