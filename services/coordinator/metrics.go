package coordinator

import "github.com/prometheus/client_golang/prometheus"

// collector exports the manager's figures to Prometheus at scrape time, from the same
// numbers GetStats answers with.
type collector struct{ s *Service }

var (
	descStarts      = prometheus.NewDesc("sollol_coordinator_starts_total", "Coordinator processes started (cold starts), restarts excluded.", nil, nil)
	descRestarts    = prometheus.NewDesc("sollol_coordinator_restarts_total", "Restarts after crashes or lost backends.", nil, nil)
	descEvictions   = prometheus.NewDesc("sollol_coordinator_evictions_total", "Coordinators stopped to free memory or for idleness.", nil, nil)
	descRequests    = prometheus.NewDesc("sollol_coordinator_requests_total", "Chat and generate requests served.", nil, nil)
	descFailures    = prometheus.NewDesc("sollol_coordinator_failures_total", "Requests that ended in an error.", nil, nil)
	descCacheBytes  = prometheus.NewDesc("sollol_coordinator_cache_bytes", "Estimated memory held by cached coordinators.", nil, nil)
	descBudgetBytes = prometheus.NewDesc("sollol_coordinator_cache_budget_bytes", "Memory budget of cached coordinators (0: none).", nil, nil)
	descColdStart   = prometheus.NewDesc("sollol_coordinator_cold_start_last_seconds", "Duration of the latest cold start.", nil, nil)
	descInFlight    = prometheus.NewDesc("sollol_coordinator_in_flight", "Requests on the model's coordinator, waiting ones included.", []string{"model"}, nil)
	descQueued      = prometheus.NewDesc("sollol_coordinator_queued", "Requests waiting for a free slot of the model's coordinator.", []string{"model"}, nil)
	descState       = prometheus.NewDesc("sollol_coordinator_state", "Lifecycle state of the model's coordinator (1 starting, 2 loading, 3 ready, 4 draining, 5 stopped, 6 failed).", []string{"model"}, nil)
	descMemory      = prometheus.NewDesc("sollol_coordinator_memory_bytes", "Estimated memory of the model's coordinator across its backends.", []string{"model"}, nil)
)

var allDescs = []*prometheus.Desc{descStarts, descRestarts, descEvictions, descRequests, descFailures,
	descCacheBytes, descBudgetBytes, descColdStart, descInFlight, descQueued, descState, descMemory}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.mgr.Stats()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(descStarts, st.GetStartsTotal())
	counter(descRestarts, st.GetRestartsTotal())
	counter(descEvictions, st.GetEvictionsTotal())
	counter(descRequests, st.GetRequestsTotal())
	counter(descFailures, st.GetFailuresTotal())
	ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(st.GetCacheBytes()))
	ch <- prometheus.MustNewConstMetric(descBudgetBytes, prometheus.GaugeValue, float64(st.GetCacheBudgetBytes()))
	if st.GetColdStartLast() != nil {
		ch <- prometheus.MustNewConstMetric(descColdStart, prometheus.GaugeValue, st.GetColdStartLast().AsDuration().Seconds())
	}
	for _, co := range st.GetCoordinators() {
		m := co.GetModel()
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(co.GetInFlight()), m)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(co.GetQueued()), m)
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, float64(co.GetState()), m)
		ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(co.GetMemoryBytes()), m)
	}
}
