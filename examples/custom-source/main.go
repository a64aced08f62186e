// Command custom-source runs the realtime Hub on a second transport: events
// come from NATS JetStream instead of RabbitMQ, through Source (source.go), a
// realtime.EventSource of about 200 lines whose doc comment explains its
// acknowledgement semantics.
//
// With nats-server running with JetStream (nats-server -js) on 127.0.0.1:4222:
//
//	go run ./examples/custom-source
//
// prints the address and a dev token:
//
//	realtime over NATS JetStream: stream MESSAGING, subjects messaging.<routing key>
//	listening on http://127.0.0.1:3301
//	token for alice (acme): eyJhbGciOiJIUzI1NiIs...
//
// Connect an agent (go run ./examples/go-client -url http://127.0.0.1:3301
// -token ... -accounts acme) and publish an event with any NATS client, for
// example the nats CLI:
//
//	nats pub messaging.conversation.created '{"account_id":"acme","conversation_id":"c-1","status":"open"}'
//
// The agent prints event conversation:new {"conversation_id":"c-1","status":"open"}.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/auth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	natsURL := envOr("NATS_URL", "nats://127.0.0.1:4222")
	addr := envOr("ADDR", "127.0.0.1:3301")
	if err := run(ctx, natsURL, addr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "custom-source:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, natsURL, addr string, out io.Writer) error {
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, err := nats.Connect(natsURL, nats.Name("turumba-realtime"), nats.MaxReconnects(-1), nats.Timeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("NATS_URL %s: %w", natsURL, err)
	}
	defer nc.Close()
	src, err := NewSource(nc, Options{Logger: log})
	if err != nil {
		return err
	}
	dv := auth.NewDevVerifier(nil)
	hub, err := realtime.New(realtime.WithEventSource(src), realtime.WithTokenVerifier(dv), realtime.WithLogger(log))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: hub.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	runErr := make(chan error, 1)
	go func() { runErr <- hub.Run(ctx) }()

	tok, err := dv.Mint("alice", "", []string{"acme"}, 12*time.Hour)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "realtime over NATS JetStream: stream %s, subjects %s.<routing key>\n", src.opts.Stream, src.opts.Prefix)
	fmt.Fprintf(out, "listening on http://%s\n", ln.Addr())
	fmt.Fprintf(out, "token for alice (acme): %s\n", tok)

	var consumeErr error
	select {
	case <-ctx.Done():
	case consumeErr = <-runErr:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(consumeErr, srv.Shutdown(shutdownCtx), hub.Shutdown(shutdownCtx))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
