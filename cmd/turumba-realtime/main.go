// Command turumba-realtime runs the realtime Hub: RabbitMQ events to
// Socket.IO clients, presence in Redis, Cognito authentication.
//
// It is the only place that knows every implementation and wires them:
// read config, build the adapters, serve, wait for a signal, shut down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/amqpsource"
	"github.com/turumba/realtime/auth"
	"github.com/turumba/realtime/presence"
	"github.com/turumba/realtime/redisadapter"
)

func main() {
	if err := run(os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "turumba-realtime:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	cfg, err := loadConfig(args, lookupEnv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errUsage
		}
		return fmt.Errorf("configuration: %w", err)
	}
	if cfg.Healthcheck {
		return healthcheck(cfg)
	}
	log := newLogger(cfg, stderr)

	// The first signal starts the graceful shutdown; a second one exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go watchSignals(sigs, cancel, done, log)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	app, err := assemble(cfg, log, reg)
	if err != nil {
		return err
	}
	defer app.close()

	mux := http.NewServeMux()
	mux.Handle("/", app.hub.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if app.dev != nil {
		app.dev.mount(mux)
	}
	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen on %s (HOST/PORT): %w", cfg.Addr(), err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	runErr := make(chan error, 1)
	go func() { runErr <- app.hub.Run(ctx) }()
	log.Info("turumba-realtime listening", "addr", ln.Addr().String(), "dev", cfg.Dev,
		"rabbitmq", redactURL(cfg.RabbitURL), "redis", redactURL(cfg.RedisURL))
	if cfg.Dev {
		log.Warn("DEV MODE: anyone who can reach this port can mint tokens; never expose it",
			"console", "http://"+ln.Addr().String()+"/dev/")
	}

	var failed error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		failed = fmt.Errorf("http server: %w", err)
	case err := <-runErr:
		failed = errors.New("event source stopped")
		if err != nil {
			failed = fmt.Errorf("event source stopped: %w", err)
		}
	}
	if failed != nil {
		log.Error("stopping after a failure", "err", failed)
	}
	return errors.Join(failed, shutdown(cfg, log, app, srv))
}

// watchSignals cancels the run on the first SIGTERM/SIGINT and exits the
// process on the second, until done is closed.
func watchSignals(sigs <-chan os.Signal, cancel context.CancelFunc, done <-chan struct{}, log *slog.Logger) {
	select {
	case s := <-sigs:
		log.Info("signal received, shutting down gracefully; send another to exit at once", "signal", s.String())
		cancel()
	case <-done:
		return
	}
	select {
	case s := <-sigs:
		log.Error("second signal received: exiting now", "signal", s.String())
		os.Exit(1)
	case <-done:
	}
}

// shutdown stops taking connections, drains the Hub (consumer cancelled,
// in-flight events finished, clients disconnected, presence removed) within
// SHUTDOWN_TIMEOUT; run's deferred close then closes Redis and the verifier
// (the event source closes its AMQP connection when consumption stops).
func shutdown(cfg Config, log *slog.Logger, app *application, srv *http.Server) error {
	start := time.Now()
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Shutdown(ctx) }() // closes the listener first
	err := app.hub.Shutdown(ctx)
	if herr := <-httpDone; herr != nil && err == nil {
		err = fmt.Errorf("http server: %w", herr)
	}
	if err != nil {
		return fmt.Errorf("shutdown within SHUTDOWN_TIMEOUT=%s: %w", cfg.ShutdownTimeout, err)
	}
	log.Info("shut down cleanly", "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// healthcheck is -healthcheck: GET /health of the server this configuration
// runs, on loopback when it binds every address.
func healthcheck(cfg Config) error {
	host := cfg.Host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	u := "http://" + net.JoinHostPort(host, cfg.Port) + "/health"
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s", u, resp.Status)
	}
	return nil
}

// application holds what assemble built, to close it in order.
type application struct {
	hub           *realtime.Hub
	dev           *devServer
	sourceMetrics *sourceMetrics
	closers       []func()
}

func (a *application) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// assemble builds the Hub and its adapters from the configuration.
func assemble(cfg Config, log *slog.Logger, reg *prometheus.Registry) (*application, error) {
	app := &application{}
	opts := []realtime.Option{
		realtime.WithLogger(log),
		realtime.WithMetrics(reg),
		realtime.WithCORS(cfg.CORSOrigins...),
		realtime.WithPresenceTTL(cfg.PresenceTTL),
		realtime.WithTypingTTL(cfg.TypingTTL),
		realtime.WithRecoveryWindow(cfg.RecoveryWindow),
		realtime.WithHandshakeTimeout(cfg.HandshakeTimeout),
		realtime.WithWriteQueueLimit(cfg.WriteQueueLimit),
		realtime.WithWriteTimeout(cfg.WriteTimeout),
	}

	if cfg.Dev {
		dv := auth.NewDevVerifier(nil)
		app.dev = &devServer{verifier: dv, log: log}
		opts = append(opts, realtime.WithTokenVerifier(dv))
	} else {
		copts := []auth.CognitoOption{
			auth.WithTokenUse(cfg.TokenUse...),
			auth.WithClientIDs(cfg.ClientIDs...),
			auth.WithAccountIDsClaim(cfg.AccountsClaim),
			auth.WithLogger(log),
		}
		if cfg.PoolID != "" {
			copts = append(copts, auth.WithUserPool(cfg.Region, cfg.PoolID))
		}
		if cfg.Issuer != "" {
			copts = append(copts, auth.WithIssuer(cfg.Issuer))
		}
		if cfg.JWKSURI != "" {
			copts = append(copts, auth.WithJWKSURL(cfg.JWKSURI))
		}
		cv, err := auth.NewCognitoVerifier(copts...)
		if err != nil {
			return nil, fmt.Errorf("cognito verifier: %w", err)
		}
		app.closers = append(app.closers, func() { _ = cv.Close() })
		opts = append(opts, realtime.WithTokenVerifier(cv))
	}

	if cfg.RedisURL != "" {
		ropts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		ropts.DialTimeout, ropts.ReadTimeout, ropts.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
		if !strings.Contains(cfg.RedisURL, "max_retries") {
			// Presence scripts and XADD are not idempotent: a retry after a lost
			// reply would hide a presence change or append an emit twice. A
			// failure is recovered instead (next heartbeat; requeued event).
			ropts.MaxRetries = -1
		}
		rdb := redis.NewClient(ropts)
		app.closers = append(app.closers, func() { _ = rdb.Close() })
		store, err := presence.NewRedisStore(rdb, presence.WithTTL(cfg.PresenceTTL), presence.WithLogger(log),
			presence.WithKeyPrefix(cfg.RedisKeyPrefix))
		if err != nil {
			return nil, fmt.Errorf("presence: %w", err)
		}
		opts = append(opts, realtime.WithPresenceStore(store))

		// The Socket.IO adapter: emits reach the sockets of every instance.
		ad, err := redisadapter.New(rdb, redisadapter.WithKind(cfg.RedisAdapter), redisadapter.WithKeyPrefix(cfg.RedisKeyPrefix),
			redisadapter.WithLogger(log), redisadapter.WithMetrics(reg))
		if err != nil {
			return nil, fmt.Errorf("REDIS_ADAPTER: %w", err)
		}
		app.closers = append(app.closers, func() { _ = ad.Close() }) // before rdb: closers run in reverse
		opts = append(opts, realtime.WithAdapter(ad), realtime.WithReadinessCheck("redis_adapter", ad))
		if cfg.RecoveryWindow > 0 && !cfg.RedisAdapter.SupportsRecovery() {
			log.Warn("connection state recovery is off: this Redis adapter cannot restore sessions",
				"REDIS_ADAPTER", string(cfg.RedisAdapter))
		}
	} else {
		opts = append(opts, realtime.WithPresenceStore(presence.NewMemoryStore(cfg.PresenceTTL)))
	}

	if cfg.RabbitURL != "" {
		sm := newSourceMetrics(reg)
		app.sourceMetrics = sm
		src, err := amqpsource.New(cfg.RabbitURL,
			amqpsource.WithExchange(cfg.Exchange),
			amqpsource.WithQueue(cfg.Queue),
			amqpsource.WithPrefetch(cfg.Prefetch),
			amqpsource.WithLogger(log),
			amqpsource.WithObserver(sm.observe))
		if err != nil {
			return nil, fmt.Errorf("RABBITMQ_URL/RABBITMQ_QUEUE/RABBITMQ_EXCHANGE: %w", err)
		}
		opts = append(opts, realtime.WithEventSource(src))
	}

	hub, err := realtime.New(opts...)
	if err != nil {
		return nil, err
	}
	app.hub = hub
	if app.sourceMetrics != nil {
		app.sourceMetrics.setRouter(hub.Router())
	}
	if app.dev != nil {
		app.dev.hub = hub
	}
	return app, nil
}

// sourceMetrics counts what the RabbitMQ source did with each delivery, by
// route: the routing-key pattern of the Hub's table that matched, so the
// label's values are bounded ("unmatched" for any other key).
type sourceMetrics struct {
	router     atomic.Pointer[realtime.Router]
	outcomes   map[amqpsource.Outcome]*prometheus.CounterVec
	reconnects prometheus.Counter
}

func newSourceMetrics(reg prometheus.Registerer) *sourceMetrics {
	m := &sourceMetrics{outcomes: map[amqpsource.Outcome]*prometheus.CounterVec{}}
	for _, c := range []struct {
		outcome    amqpsource.Outcome
		name, help string
	}{
		{amqpsource.Consumed, "realtime_amqp_consumed_total", "Deliveries received from RabbitMQ, by route."},
		{amqpsource.Acked, "realtime_amqp_acked_total", "Deliveries acknowledged after their emits were handed to the adapter, by route."},
		{amqpsource.DeadLettered, "realtime_amqp_dead_lettered_total", "Invalid deliveries rejected to the dead-letter queue, by route."},
		{amqpsource.Requeued, "realtime_amqp_requeued_total", "Deliveries returned to the queue after a transient failure, by route."},
	} {
		m.outcomes[c.outcome] = prometheus.NewCounterVec(prometheus.CounterOpts{Name: c.name, Help: c.help}, []string{"route"})
		reg.MustRegister(m.outcomes[c.outcome])
	}
	m.reconnects = prometheus.NewCounter(prometheus.CounterOpts{Name: "realtime_amqp_reconnects_total",
		Help: "Times consumption resumed after a lost RabbitMQ connection, channel or consumer."})
	reg.MustRegister(m.reconnects)
	return m
}

// setRouter gives the routing table the route labels come from, and creates
// every series at zero so that rate() works from the first scrape.
func (m *sourceMetrics) setRouter(r *realtime.Router) {
	m.router.Store(r)
	for _, vec := range m.outcomes {
		for _, p := range r.Patterns() {
			vec.WithLabelValues(p)
		}
	}
}

// observe is the source's Observer; it runs on the consuming goroutine.
func (m *sourceMetrics) observe(o amqpsource.Outcome, routingKey string) {
	if o == amqpsource.Reconnected {
		m.reconnects.Inc()
		return
	}
	vec, ok := m.outcomes[o]
	if !ok {
		return
	}
	route := ""
	if r := m.router.Load(); r != nil {
		route = r.Pattern(routingKey)
	}
	if route == "" {
		route = "unmatched"
	}
	vec.WithLabelValues(route).Inc()
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	hopts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, hopts))
	}
	return slog.New(slog.NewJSONHandler(w, hopts))
}
