package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turumba/realtime"
)

// Source is a realtime.EventSource over NATS JetStream.
//
// Producers publish each event's JSON object to the subject
// "<Prefix>.<routing key>", such as messaging.conversation.created, which a
// stream (created if missing) keeps. The Source reads the stream through a
// durable pull consumer, so it resumes where it left off after a restart.
//
// Acknowledgement semantics, the same contract as the RabbitMQ source:
//
//   - The handler's nil (the emit was handed to the Socket.IO adapter): the
//     message is acknowledged with a double ack, which waits for the server
//     to confirm, so an acknowledged event is never delivered again.
//   - An error wrapping realtime.ErrInvalidEvent (not JSON, not an object, a
//     required id missing): the message can never be handled. It is copied to
//     the dead-letter stream (subject "<DeadPrefix>.<routing key>", with the
//     reason in the Realtime-Error header) and then terminated, so JetStream
//     stops redelivering it. If the copy fails, the message is nak'ed and
//     comes back: nothing is dropped silently.
//   - Any other error (the adapter or Redis is down): nak with a growing
//     delay; JetStream redelivers the message, without limit.
//   - No answer at all (the process died mid-event): after AckWait the server
//     redelivers the message to whoever consumes next. Delivery is therefore
//     at least once; clients may see an event twice, never zero times.
//   - A routing key that matches none of the Hub's patterns is acknowledged
//     and skipped: it is not for this consumer.
//
// Order: MaxAckPending is 1, so the consumer holds one unacknowledged message
// at a time and a redelivered message comes back before any later one.
// Events therefore reach the Hub in publish order, at the price of one
// round trip per event; a Hub that can take events out of order (or orders
// them per conversation) can raise it.
type Source struct {
	js   jetstream.JetStream
	nc   *nats.Conn
	opts Options
}

// Options name the JetStream objects a Source uses; zero fields take the
// defaults shown.
type Options struct {
	Stream     string        // "MESSAGING": the stream of events
	Prefix     string        // "messaging": subjects are Prefix.<routing key>
	Durable    string        // "realtime": the durable consumer's name
	DeadStream string        // Stream + "_DEAD": where invalid events go
	DeadPrefix string        // Prefix + "_dead"
	AckWait    time.Duration // 30s: redelivery after a silent consumer
	Logger     *slog.Logger  // slog.Default()
}

var (
	_ realtime.EventSource = (*Source)(nil)
	_ realtime.Checker     = (*Source)(nil)
)

// NewSource returns a Source reading through nc.
func NewSource(nc *nats.Conn, opts Options) (*Source, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if opts.Stream == "" {
		opts.Stream = "MESSAGING"
	}
	if opts.Prefix == "" {
		opts.Prefix = "messaging"
	}
	if opts.Durable == "" {
		opts.Durable = "realtime"
	}
	if opts.DeadStream == "" {
		opts.DeadStream = opts.Stream + "_DEAD"
	}
	if opts.DeadPrefix == "" {
		opts.DeadPrefix = opts.Prefix + "_dead"
	}
	if opts.AckWait == 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Source{js: js, nc: nc, opts: opts}, nil
}

// Check reports whether the NATS connection is up (the Hub's /ready).
func (s *Source) Check(context.Context) error {
	if st := s.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats: %s", st)
	}
	return nil
}

// Consume delivers the events whose routing keys match patterns to handle,
// one at a time and in order, until ctx ends.
func (s *Source) Consume(ctx context.Context, patterns []string, handle realtime.EventHandler) error {
	cons, err := s.setup(ctx)
	if err != nil {
		return err
	}
	// A short pull expiry keeps the heartbeat short too: a pull request the
	// server dropped (seen with nats-server 2.9 under load) is noticed and
	// issued again within seconds, not after the 30s default's missed
	// heartbeats.
	it, err := cons.Messages(jetstream.PullMaxMessages(1), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: consume %s: %w", s.opts.Durable, err)
	}
	defer context.AfterFunc(ctx, it.Stop)()
	defer it.Stop()
	for {
		msg, err := it.Next()
		switch {
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("jetstream: consumer %s stopped", s.opts.Durable)
		case errors.Is(err, jetstream.ErrConsumerDeleted):
			return fmt.Errorf("jetstream: consumer %s: %w", s.opts.Durable, err)
		case err != nil:
			// Missed heartbeats and the like while NATS reconnects: the
			// iterator keeps pulling once the server is back.
			s.opts.Logger.Warn("jetstream: pull", "err", err)
			continue
		}
		s.deliver(ctx, msg, patterns, handle)
	}
}

// Setup creates the streams if they are missing, and the durable consumer.
// Consume calls it; call it earlier when producers may publish before the
// first Consume (a subject no stream keeps is lost on publish).
func (s *Source) Setup(ctx context.Context) error {
	_, err := s.setup(ctx)
	return err
}

// setup creates the streams if they are missing and the durable consumer.
func (s *Source) setup(ctx context.Context) (jetstream.Consumer, error) {
	for _, st := range []jetstream.StreamConfig{
		{Name: s.opts.Stream, Subjects: []string{s.opts.Prefix + ".>"}, MaxAge: 24 * time.Hour},
		{Name: s.opts.DeadStream, Subjects: []string{s.opts.DeadPrefix + ".>"}, MaxAge: 7 * 24 * time.Hour},
	} {
		// The producers may own the stream and its limits: only create it.
		if _, err := s.js.Stream(ctx, st.Name); errors.Is(err, jetstream.ErrStreamNotFound) {
			if _, err := s.js.CreateStream(ctx, st); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return nil, fmt.Errorf("jetstream: create stream %s: %w", st.Name, err)
			}
		} else if err != nil {
			return nil, fmt.Errorf("jetstream: stream %s: %w", st.Name, err)
		}
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.opts.Stream, jetstream.ConsumerConfig{
		Durable:       s.opts.Durable,
		FilterSubject: s.opts.Prefix + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.opts.AckWait,
		MaxAckPending: 1,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream: consumer %s on %s: %w", s.opts.Durable, s.opts.Stream, err)
	}
	return cons, nil
}

// deliver hands one message to the Hub and settles it.
func (s *Source) deliver(ctx context.Context, msg jetstream.Msg, patterns []string, handle realtime.EventHandler) {
	key := strings.TrimPrefix(msg.Subject(), s.opts.Prefix+".")
	// Settling must finish even when ctx has just ended (shutdown).
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	log := s.opts.Logger.With("routing_key", key)

	if !matchesAny(patterns, key) {
		if err := msg.DoubleAck(settle); err != nil {
			log.Warn("jetstream: ack of an unrouted event failed; it will come back", "err", err)
		}
		return
	}
	err := handle(ctx, realtime.Event{RoutingKey: key, Body: msg.Data()})
	switch {
	case err == nil:
		if err := msg.DoubleAck(settle); err != nil {
			log.Warn("jetstream: ack failed; the event will be delivered again", "err", err)
		}
	case errors.Is(err, realtime.ErrInvalidEvent):
		dead := &nats.Msg{Subject: s.opts.DeadPrefix + "." + key, Data: msg.Data(), Header: nats.Header{}}
		dead.Header.Set("Realtime-Error", err.Error())
		dead.Header.Set("Realtime-Routing-Key", key)
		if _, perr := s.js.PublishMsg(settle, dead); perr != nil {
			log.Error("jetstream: dead-lettering failed; the event will come back", "err", perr)
			_ = msg.NakWithDelay(5 * time.Second)
			return
		}
		log.Warn("jetstream: invalid event dead-lettered", "err", err, "dead_subject", dead.Subject)
		// Plain Term: TermWithReason needs nats-server 2.10.4, and an older
		// server ignores it and redelivers.
		if terr := msg.Term(); terr != nil {
			log.Warn("jetstream: term failed; the event may come back (and be dead-lettered again)", "err", terr)
		}
	default:
		delay := redeliveryDelay(msg)
		log.Warn("jetstream: event not handled; it will be delivered again", "err", err, "after", delay.String())
		_ = msg.NakWithDelay(delay)
	}
}

// redeliveryDelay grows with the number of deliveries: 100ms, 200ms, ... 10s.
func redeliveryDelay(msg jetstream.Msg) time.Duration {
	n := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		n = md.NumDelivered
	}
	d := 100 * time.Millisecond
	for i := uint64(1); i < n && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

func matchesAny(patterns []string, key string) bool {
	for _, p := range patterns {
		if realtime.MatchTopic(p, key) {
			return true
		}
	}
	return false
}
