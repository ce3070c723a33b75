package grpcserver

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics counts every RPC of every gRPC server in the process. One instance is shared by all
// servers of a process; the service and method labels keep them apart.
type Metrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	sent     *prometheus.CounterVec
}

// NewMetrics creates the RPC metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sollol_grpc_server_handled_total",
			Help: "RPCs completed, by service, method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sollol_grpc_server_handling_seconds",
			Help:    "Time from the start of an RPC to its end (a whole stream for streaming RPCs).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"grpc_service", "grpc_method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sollol_grpc_server_in_flight",
			Help: "RPCs currently running.",
		}, []string{"grpc_service", "grpc_method"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sollol_grpc_server_stream_messages_sent_total",
			Help: "Messages sent on server streams.",
		}, []string{"grpc_service", "grpc_method"}),
	}
	reg.MustRegister(m.handled, m.duration, m.inFlight, m.sent)
	return m
}

func (m *Metrics) begin(fullMethod string) (service, method string, done func(error)) {
	service, method = splitMethod(fullMethod)
	start := time.Now()
	m.inFlight.WithLabelValues(service, method).Inc()
	return service, method, func(err error) {
		m.inFlight.WithLabelValues(service, method).Dec()
		m.duration.WithLabelValues(service, method).Observe(time.Since(start).Seconds())
		m.handled.WithLabelValues(service, method, status.Code(err).String()).Inc()
	}
}

func (m *Metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	_, _, done := m.begin(info.FullMethod)
	resp, err := handler(ctx, req)
	done(err)
	return resp, err
}

func (m *Metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	service, method, done := m.begin(info.FullMethod)
	err := handler(srv, &countingStream{ServerStream: ss, sent: m.sent.WithLabelValues(service, method)})
	done(err)
	return err
}

type countingStream struct {
	grpc.ServerStream
	sent prometheus.Counter
}

func (s *countingStream) SendMsg(msg any) error {
	err := s.ServerStream.SendMsg(msg)
	if err == nil {
		s.sent.Inc()
	}
	return err
}
