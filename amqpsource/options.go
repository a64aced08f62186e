package amqpsource

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of the options.
const (
	DefaultExchange       = "messaging"
	DefaultQueue          = "realtime.events"
	DefaultPrefetch       = 256
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultDrainTimeout   = 10 * time.Second
	DefaultConsumerPrefix = "turumba-realtime"
)

// maxNameLength is AMQP's limit on exchange and queue names and consumer tags.
const maxNameLength = 255

// Option configures a Source.
type Option func(*config) error

type config struct {
	exchange           string
	queue              string
	deadLetterQueue    string // empty: queue + ".dead"
	deadLetterExchange string // empty: queue + ".dlx"
	prefetch           int
	singleActive       bool
	backoffMin         time.Duration
	backoffMax         time.Duration
	drainTimeout       time.Duration
	logger             *slog.Logger
	consumerPrefix     string
	observer           Observer
}

func defaultConfig() config {
	return config{
		exchange:       DefaultExchange,
		queue:          DefaultQueue,
		prefetch:       DefaultPrefetch,
		singleActive:   true,
		backoffMin:     DefaultBackoffMin,
		backoffMax:     DefaultBackoffMax,
		drainTimeout:   DefaultDrainTimeout,
		logger:         slog.Default(),
		consumerPrefix: DefaultConsumerPrefix,
	}
}

// finish fills the defaults that depend on other options and checks the
// options against each other.
func (c *config) finish() error {
	if c.deadLetterQueue == "" {
		c.deadLetterQueue = c.queue + ".dead"
	}
	if c.deadLetterExchange == "" {
		c.deadLetterExchange = c.queue + ".dlx"
	}
	for _, n := range []struct{ option, name string }{
		{"WithQueue", c.queue},
		{"WithDeadLetterQueue", c.deadLetterQueue},
		{"WithDeadLetterExchange", c.deadLetterExchange},
	} {
		if len(n.name) > maxNameLength {
			return fmt.Errorf("amqpsource: %s: name %q is longer than %d bytes", n.option, n.name, maxNameLength)
		}
	}
	if c.deadLetterQueue == c.queue {
		return fmt.Errorf("amqpsource: WithDeadLetterQueue: %q is the queue itself", c.deadLetterQueue)
	}
	if c.deadLetterExchange == c.exchange {
		// Dead-lettered messages would be routed straight back into the queue.
		return fmt.Errorf("amqpsource: WithDeadLetterExchange: %q is the event exchange itself", c.deadLetterExchange)
	}
	return nil
}

func checkName(option, name string) error {
	if name == "" {
		return fmt.Errorf("amqpsource: %s: empty name", option)
	}
	if len(name) > maxNameLength {
		return fmt.Errorf("amqpsource: %s: name %q is longer than %d bytes", option, name, maxNameLength)
	}
	return nil
}

// WithExchange sets the topic exchange the events are published to.
// Default: "messaging" (DefaultExchange).
func WithExchange(name string) Option {
	return func(c *config) error {
		if err := checkName("WithExchange", name); err != nil {
			return err
		}
		c.exchange = name
		return nil
	}
}

// WithQueue sets the durable queue the Source consumes from. Default:
// "realtime.events" (DefaultQueue).
func WithQueue(name string) Option {
	return func(c *config) error {
		if err := checkName("WithQueue", name); err != nil {
			return err
		}
		c.queue = name
		return nil
	}
}

// WithDeadLetterQueue sets the durable queue that keeps the events the handler
// rejected as invalid. Default: the queue's name followed by ".dead".
func WithDeadLetterQueue(name string) Option {
	return func(c *config) error {
		if err := checkName("WithDeadLetterQueue", name); err != nil {
			return err
		}
		c.deadLetterQueue = name
		return nil
	}
}

// WithDeadLetterExchange sets the fanout exchange the queue dead-letters to;
// the dead-letter queue is bound to it. Default: the queue's name followed by
// ".dlx".
func WithDeadLetterExchange(name string) Option {
	return func(c *config) error {
		if err := checkName("WithDeadLetterExchange", name); err != nil {
			return err
		}
		c.deadLetterExchange = name
		return nil
	}
}

// WithPrefetch bounds the deliveries the broker sends before they are
// acknowledged (basic.qos prefetch count), 1 to 65535; with
// ConsumePipelined it is also the most events in flight. Default: 256
// (DefaultPrefetch).
func WithPrefetch(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 65535 {
			return fmt.Errorf("amqpsource: WithPrefetch: %d is not between 1 and 65535", n)
		}
		c.prefetch = n
		return nil
	}
}

// WithSingleActiveConsumer sets whether the queue is declared with
// x-single-active-consumer, so that of several instances only one consumes at
// a time and events keep their order. Default: true. RabbitMQ cannot change
// the argument of an existing queue: changing it means deleting the queue.
func WithSingleActiveConsumer(on bool) Option {
	return func(c *config) error {
		c.singleActive = on
		return nil
	}
}

// WithReconnectBackoff sets the bounds of the capped exponential backoff, with
// jitter, between attempts to reconnect, and between redeliveries of an event
// whose handler keeps failing. Default: 100ms to 30s.
func WithReconnectBackoff(minDelay, maxDelay time.Duration) Option {
	return func(c *config) error {
		if minDelay <= 0 || maxDelay < minDelay {
			return fmt.Errorf("amqpsource: WithReconnectBackoff: need 0 < min <= max, got %v and %v", minDelay, maxDelay)
		}
		c.backoffMin, c.backoffMax = minDelay, maxDelay
		return nil
	}
}

// WithDrainTimeout bounds how long the event being handled when Consume's
// context ends may still take (with ConsumePipelined: how long the events in
// flight may take to be done): after that the handler context is cancelled
// and the broker connection is cut (the events are redelivered later). A
// handler that honours its context therefore bounds shutdown. After a lost
// connection or channel, ConsumePipelined waits as long at most for the done
// of the events in flight before it reconnects. Default: 10s
// (DefaultDrainTimeout).
func WithDrainTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("amqpsource: WithDrainTimeout: %v is not positive", d)
		}
		c.drainTimeout = d
		return nil
	}
}

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("amqpsource: WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithConsumerPrefix sets the prefix of the consumer tags and the connection
// name the broker shows for this Source; the host name, process id and a
// counter follow it. Default: "turumba-realtime" (DefaultConsumerPrefix).
func WithConsumerPrefix(prefix string) Option {
	return func(c *config) error {
		if prefix == "" || len(prefix) > 128 {
			return fmt.Errorf("amqpsource: WithConsumerPrefix: %q must be 1 to 128 bytes", prefix)
		}
		c.consumerPrefix = prefix
		return nil
	}
}

// WithObserver sets a function called for every outcome of a delivery and
// every reconnect, so that metrics can count them by routing key. It is
// called from the consuming goroutine and must not block. Default: none.
func WithObserver(o Observer) Option {
	return func(c *config) error {
		if o == nil {
			return errors.New("amqpsource: WithObserver: nil observer")
		}
		c.observer = o
		return nil
	}
}
