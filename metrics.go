package realtime

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Hub's Prometheus collectors, all prefixed realtime_.
type metrics struct {
	connected       prometheus.Gauge
	connects        prometheus.Counter
	authFailures    *prometheus.CounterVec
	consumed        *prometheus.CounterVec
	invalid         *prometheus.CounterVec
	emitted         *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	rejected        *prometheus.CounterVec
	presenceChanges *prometheus.CounterVec
	presenceErrors  *prometheus.CounterVec
	deliveries      *prometheus.CounterVec
	slowClients     *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "realtime_connected_sockets",
			Help: "Sockets connected to this instance."}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{Name: "realtime_connections_total",
			Help: "Sockets that connected (passed authentication)."}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_auth_failures_total",
			Help: "Refused handshakes, by code."}, []string{"code"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_events_consumed_total",
			Help: "Events handed to the Hub, by routing-key pattern."}, []string{"route"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_events_invalid_total",
			Help: "Events rejected as invalid (dead-lettered by the source), by routing-key pattern."}, []string{"route"}),
		emitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_events_emitted_total",
			Help: "Client events handed to the Socket.IO adapter, by client event."}, []string{"event"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "realtime_emit_latency_seconds",
			Help:    "Time from the event's created_at to its emit, by client event.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"event"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_client_events_rejected_total",
			Help: "Client events answered with an error, by event and code."}, []string{"event", "code"}),
		presenceChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_presence_changes_total",
			Help: "Presence changes broadcast by this instance, by status."}, []string{"status"}),
		presenceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_presence_errors_total",
			Help: "Failed presence store calls, by operation."}, []string{"op"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_deliveries_total",
			Help: "Broadcast packets handed to sockets of this instance, by path: websocket (frames queued on our writers) or library (polling, mid-upgrade)."}, []string{"path"}),
		slowClients: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_slow_clients_disconnected_total",
			Help: "Websocket clients disconnected for falling behind, by reason: queue or write timeout."}, []string{"reason"}),
	}
	if r == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connected, m.connects, m.authFailures, m.consumed, m.invalid,
		m.emitted, m.latency, m.rejected, m.presenceChanges, m.presenceErrors, m.deliveries, m.slowClients} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observeLatency records how long after its created_at an event was emitted.
func (m *metrics) observeLatency(em Emit) {
	v, ok := em.Payload["created_at"]
	if !ok {
		v, ok = em.Payload["last_message_at"]
	}
	s, _ := v.(string)
	if !ok || s == "" {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return
	}
	if d := time.Since(t); d >= 0 && d < time.Hour {
		m.latency.WithLabelValues(em.Event).Observe(d.Seconds())
	}
}
