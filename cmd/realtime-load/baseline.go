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
	"time"

	"github.com/turumba/realtime/internal/baseline"
	"github.com/turumba/realtime/internal/loadclient"
)

// baselineConfig is the baseline relay's command line.
type baselineConfig struct {
	host, port      string
	verify          string
	jwksURL, issuer string
	amqpURL         string
	exchange        string
	prefetch        int
}

func (c *baselineConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.host, "host", "127.0.0.1", "bind address (loopback only)")
	fs.StringVar(&c.port, "port", "3298", "HTTP port")
	fs.StringVar(&c.verify, "verify", "hs256", "handshake tokens: hs256 (its own /dev/token), none (unverified) or rs256 (-jwks-url, -issuer)")
	fs.StringVar(&c.jwksURL, "jwks-url", "", "JWKS for -verify rs256")
	fs.StringVar(&c.issuer, "issuer", "", "accepted iss for -verify rs256")
	fs.StringVar(&c.amqpURL, "amqp-url", "", "also consume events from RabbitMQ (loopback), e.g. amqp://guest:guest@127.0.0.1:5672")
	fs.StringVar(&c.exchange, "exchange", "realtime-load.messaging", "topic exchange to consume with -amqp-url")
	fs.IntVar(&c.prefetch, "prefetch", 256, "unacknowledged deliveries in flight with -amqp-url")
}

func runBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("realtime-load baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c baselineConfig
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, srv, err := startBaseline(ctx, c, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "baseline relay listening on http://%s (verify=%s)\n", ln.Addr(), c.verify)
	<-ctx.Done()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shut)
}

// startBaseline serves the baseline relay until ctx ends.
func startBaseline(ctx context.Context, c baselineConfig, log *slog.Logger) (net.Listener, *http.Server, error) {
	if err := loadclient.CheckLoopbackHost(c.host); err != nil {
		return nil, nil, err
	}
	if _, err := loadclient.RaiseFileLimit(); err != nil {
		log.Warn("cannot raise the open-file limit", "error", err)
	}
	opts := baseline.Options{Logger: log}
	switch c.verify {
	case "hs256":
	case "none":
		opts.Verifier = baseline.Unverified{}
	case "rs256":
		if c.jwksURL == "" || c.issuer == "" {
			return nil, nil, errors.New("-verify rs256 needs -jwks-url and -issuer")
		}
		if err := loadclient.CheckLoopback(c.jwksURL); err != nil {
			return nil, nil, err
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := baseline.NewRS256(fctx, c.jwksURL, c.issuer)
		cancel()
		if err != nil {
			return nil, nil, err
		}
		opts.Verifier = v
	default:
		return nil, nil, fmt.Errorf("-verify %q: want hs256, none or rs256", c.verify)
	}
	relay := baseline.New(opts)
	ln, err := net.Listen("tcp", net.JoinHostPort(c.host, c.port))
	if err != nil {
		return nil, nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: relay.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { _ = srv.Serve(ln) }()
	go relay.Run(ctx)
	if c.amqpURL != "" {
		if err := loadclient.CheckLoopback(c.amqpURL); err != nil {
			_ = srv.Close()
			return nil, nil, err
		}
		go func() {
			for ctx.Err() == nil {
				if err := relay.ConsumeAMQP(ctx, c.amqpURL, c.exchange, c.prefetch); err != nil {
					log.Warn("amqp consumer stopped; retrying", "error", err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			}
		}()
	}
	return ln, srv, nil
}
