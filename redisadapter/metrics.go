package redisadapter

import (
	"github.com/prometheus/client_golang/prometheus"
	"sync/atomic"
)

// Restore outcomes, the values of the "outcome" label of
// realtime_adapter_restores_total.
const (
	outcomeRecovered = "recovered"     // session found, every missed packet replayed
	outcomeNotFound  = "not_found"     // no session: expired, never persisted, or already taken
	outcomeTrimmed   = "trimmed"       // the stream lost entries the client may have needed
	outcomeTooMany   = "too_many"      // more missed packets than WithMaxReplay
	outcomeBadOffset = "bad_offset"    // the client's offset is not a stream id
	outcomeInUse     = "in_use"        // the session's socket id is live on this instance
	outcomeError     = "error"         // Redis failed during the restore
	outcomeAuthFail  = "auth_rejected" // restored, then refused by the middleware
)

type metrics struct {
	restores      *prometheus.CounterVec
	replayed      prometheus.Counter
	publishErrors prometheus.Counter
	// publishFailures mirrors publishErrors for the Hub, which asks after
	// each event whether its broadcasts reached Redis (BroadcastFailures).
	publishFailures atomic.Uint64
	readErrors      prometheus.Counter
	redisErrors     prometheus.Counter
	persisted       *prometheus.CounterVec
	// readLag is how long after Redis appended an entry this instance
	// delivered it: the stream hop of every broadcast, from any instance.
	readLag prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_adapter_restores_total",
			Help: "Connection state recovery attempts, by outcome."}, []string{"outcome"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "realtime_adapter_replayed_packets_total",
			Help: "Missed packets sent to recovered clients."}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "realtime_adapter_publish_errors_total",
			Help: "Broadcasts that could not be appended to the Redis stream (delivered on this instance only)."}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "realtime_adapter_read_errors_total",
			Help: "Failed reads of the Redis stream (retried from the same position)."}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "realtime_adapter_redis_errors_total",
			Help: "Redis errors reported by the Socket.IO adapter library."}),
		persisted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "realtime_adapter_sessions_persisted_total",
			Help: "Sessions of disconnected clients saved for recovery, by result."}, []string{"result"}),
		readLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "realtime_adapter_stream_lag_seconds",
			Help:    "From Redis appending a broadcast to this instance delivering it to its sockets (the entry id's millisecond clock against this host's: up to 1 ms over, plus any clock skew).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
	}
	for _, o := range []string{outcomeRecovered, outcomeNotFound, outcomeTrimmed, outcomeTooMany, outcomeBadOffset, outcomeInUse, outcomeError, outcomeAuthFail} {
		m.restores.WithLabelValues(o)
	}
	m.persisted.WithLabelValues("ok")
	m.persisted.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.restores, m.replayed, m.publishErrors, m.readErrors, m.redisErrors, m.persisted, m.readLag} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
