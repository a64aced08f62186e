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
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

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
		"rabbitmq", cfg.RabbitURL != "", "redis", cfg.RedisURL != "")
	if cfg.Dev {
		log.Warn("DEV MODE: anyone who can reach this port can mint tokens; never expose it",
			"console", "http://"+ln.Addr().String()+"/dev/")
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case err := <-runErr:
		if err != nil {
			return fmt.Errorf("event source: %w", err)
		}
	}
	stop() // a second signal now kills the process at once
	return shutdown(cfg, log, app, srv)
}

// shutdown stops taking connections, drains the Hub and closes everything
// within SHUTDOWN_TIMEOUT.
func shutdown(cfg Config, log *slog.Logger, app *application, srv *http.Server) error {
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		log.Error("second signal: exiting now")
		os.Exit(1)
	}()
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Shutdown(ctx) }() // closes the listener first
	err := app.hub.Shutdown(ctx)
	if herr := <-httpDone; herr != nil && err == nil {
		err = herr
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("shut down cleanly")
	return nil
}

// application holds what assemble built, to close it in order.
type application struct {
	hub     *realtime.Hub
	dev     *devServer
	closers []func()
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
		rdb := redis.NewClient(ropts)
		app.closers = append(app.closers, func() { _ = rdb.Close() })
		store, err := presence.NewRedisStore(rdb, presence.WithTTL(cfg.PresenceTTL), presence.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("presence: %w", err)
		}
		opts = append(opts, realtime.WithPresenceStore(store))
	} else {
		opts = append(opts, realtime.WithPresenceStore(presence.NewMemoryStore(cfg.PresenceTTL)))
	}

	if cfg.RabbitURL != "" {
		src, err := amqpsource.New(cfg.RabbitURL,
			amqpsource.WithExchange(cfg.Exchange),
			amqpsource.WithQueue(cfg.Queue),
			amqpsource.WithPrefetch(cfg.Prefetch),
			amqpsource.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("RABBITMQ_URL: %w", err)
		}
		registerSourceMetrics(reg, src)
		opts = append(opts, realtime.WithEventSource(src))
	}

	hub, err := realtime.New(opts...)
	if err != nil {
		return nil, err
	}
	app.hub = hub
	if app.dev != nil {
		app.dev.hub = hub
	}
	return app, nil
}

// registerSourceMetrics exposes the RabbitMQ source's counters.
func registerSourceMetrics(reg prometheus.Registerer, src *amqpsource.Source) {
	counter := func(name, help string, get func(amqpsource.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(get(src.Stats())) }))
	}
	counter("realtime_amqp_consumed_total", "Deliveries received from RabbitMQ.", func(s amqpsource.Stats) uint64 { return s.Consumed })
	counter("realtime_amqp_acked_total", "Deliveries acknowledged.", func(s amqpsource.Stats) uint64 { return s.Acked })
	counter("realtime_amqp_dead_lettered_total", "Deliveries rejected to the dead-letter queue.", func(s amqpsource.Stats) uint64 { return s.DeadLettered })
	counter("realtime_amqp_requeued_total", "Deliveries requeued after a transient failure.", func(s amqpsource.Stats) uint64 { return s.Requeued })
	counter("realtime_amqp_reconnects_total", "Reconnections to RabbitMQ.", func(s amqpsource.Stats) uint64 { return s.Reconnects })
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	hopts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, hopts))
	}
	return slog.New(slog.NewJSONHandler(w, hopts))
}
