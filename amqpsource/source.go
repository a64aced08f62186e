package amqpsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/turumba/realtime"
)

var (
	_ realtime.EventSource          = (*Source)(nil)
	_ realtime.PipelinedEventSource = (*Source)(nil)
	_ realtime.Checker              = (*Source)(nil)
)

// ErrNotConnected is returned by Check while the Source is not consuming.
var ErrNotConnected = errors.New("amqpsource: not connected")

const (
	// dialTimeout bounds the TCP connect and the AMQP handshake.
	dialTimeout = 30 * time.Second
	// closeTimeout bounds the wait for the broker's connection.close-ok.
	closeTimeout = 5 * time.Second
	heartbeat    = 10 * time.Second
)

var (
	errNotStarted = errors.New("not started")
	errStopped    = errors.New("stopped")
	// errRestart ends a channel session so that the deliveries prefetched
	// behind a requeued one are returned to the queue too.
	errRestart = errors.New("reopening the channel after a requeue")
)

// Outcome names what happened, for an Observer.
type Outcome string

// The outcomes an Observer sees. Every consumed delivery ends in one of
// Acked, DeadLettered or Requeued, unless the channel is lost first (the
// broker then redelivers it).
const (
	Consumed     Outcome = "consumed"
	Acked        Outcome = "acked"
	DeadLettered Outcome = "dead_lettered"
	Requeued     Outcome = "requeued"
	// Reconnected is reported, with an empty routing key, when consumption
	// resumes after a lost connection, channel or consumer.
	Reconnected Outcome = "reconnected"
)

// Observer is told about every outcome, with the delivery's routing key.
type Observer func(o Outcome, routingKey string)

// Stats are the Source's counters since New.
type Stats struct {
	Consumed     uint64 // deliveries handed to the handler
	Acked        uint64 // handled and acknowledged
	DeadLettered uint64 // rejected by the handler as invalid and nacked to the dead-letter queue
	Requeued     uint64 // failed transiently and nacked back to the queue
	Reconnects   uint64 // times consumption resumed after a loss
}

// Source consumes events from RabbitMQ; it implements
// realtime.PipelinedEventSource (and so realtime.EventSource) and
// realtime.Checker. Create it with New.
type Source struct {
	url  string
	addr string // host:port/vhost, for logs (the URL may hold a password)
	cfg  config
	log  *slog.Logger

	running atomic.Bool

	mu      sync.Mutex
	up      bool // a consumer is registered
	downErr error

	consumed, acked, deadLettered, requeued, reconnects atomic.Uint64
}

// New returns a Source for the broker at url (amqp:// or amqps://). It does
// not connect: Consume does.
func New(url string, opts ...Option) (*Source, error) {
	uri, err := amqp.ParseURI(url)
	if err != nil {
		return nil, fmt.Errorf("amqpsource: url: %w", err)
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.finish(); err != nil {
		return nil, err
	}
	return &Source{
		url:     url,
		addr:    net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)) + "/" + uri.Vhost,
		cfg:     cfg,
		log:     cfg.logger.With("component", "amqpsource", "queue", cfg.queue),
		downErr: errNotStarted,
	}, nil
}

// Stats returns a snapshot of the counters.
func (s *Source) Stats() Stats {
	return Stats{
		Consumed:     s.consumed.Load(),
		Acked:        s.acked.Load(),
		DeadLettered: s.deadLettered.Load(),
		Requeued:     s.requeued.Load(),
		Reconnects:   s.reconnects.Load(),
	}
}

// Check returns nil while the Source is connected and its consumer is
// registered (a standby waiting as single active consumer counts as
// connected); otherwise an error wrapping ErrNotConnected and the last
// failure.
func (s *Source) Check(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up {
		return nil
	}
	return fmt.Errorf("%w to %s: %w", ErrNotConnected, s.addr, s.downErr)
}

func (s *Source) setUp() {
	s.mu.Lock()
	s.up, s.downErr = true, nil
	s.mu.Unlock()
}

func (s *Source) setDown(err error) {
	s.mu.Lock()
	s.up, s.downErr = false, err
	s.mu.Unlock()
}

func (s *Source) count(n *atomic.Uint64, o Outcome, routingKey string) {
	n.Add(1)
	if s.cfg.observer != nil {
		s.cfg.observer(o, routingKey)
	}
}

// Consume declares the topology, binds the queue with patterns and calls
// handle for every delivery, one at a time, until ctx ends; it then lets the
// event being handled finish (see WithDrainTimeout), acknowledges it, closes
// the channel and the connection and returns nil. An unreachable broker is
// retried with backoff, not returned; Check reports it meanwhile. Consume
// returns an error only for invalid arguments or when called again while
// running (Consume or ConsumePipelined).
func (s *Source) Consume(ctx context.Context, patterns []string, handle realtime.EventHandler) error {
	if handle == nil {
		return errors.New("amqpsource: Consume: nil handler")
	}
	return s.run(ctx, "Consume", patterns, &consumer{handle: handle})
}

// ConsumePipelined is Consume with several events in flight: it calls
// handle for every delivery, one at a time and in order, and goes on to the
// next without waiting for its done; the prefetch (WithPrefetch) bounds the
// events in flight. Each event is settled when its done is called, as
// Consume settles by the handler's error: nil acknowledges, an error wrapping
// realtime.ErrInvalidEvent dead-letters, any other error requeues it and,
// once every other event in flight is settled and the retry backoff has
// passed, reopens the channel. done may be called from any goroutine; a
// call after the event's channel was lost is ignored (the broker redelivers
// the event). When ctx ends, ConsumePipelined takes no more deliveries,
// waits for the done of the events in flight (see WithDrainTimeout),
// settles them, closes the channel and the connection and returns nil.
func (s *Source) ConsumePipelined(ctx context.Context, patterns []string, handle realtime.AsyncEventHandler) error {
	if handle == nil {
		return errors.New("amqpsource: ConsumePipelined: nil handler")
	}
	return s.run(ctx, "ConsumePipelined", patterns, &consumer{handleAsync: handle})
}

// run validates patterns and runs c until ctx ends; method names the
// caller in errors.
func (s *Source) run(ctx context.Context, method string, patterns []string, c *consumer) error {
	if len(patterns) == 0 {
		return fmt.Errorf("amqpsource: %s: no binding patterns", method)
	}
	for _, p := range patterns {
		if p == "" || len(p) > maxNameLength {
			return fmt.Errorf("amqpsource: %s: invalid binding pattern %q", method, p)
		}
	}
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("amqpsource: %s: already running", method)
	}
	defer s.running.Store(false)
	defer s.setDown(errStopped)

	hctx, stopDrain := drainContext(ctx, s.cfg.drainTimeout)
	defer stopDrain()
	c.Source = s
	c.patterns = slices.Clone(patterns)
	c.handleCtx = hctx
	c.reconnect = backoff{min: s.cfg.backoffMin, max: s.cfg.backoffMax}
	c.retry = backoff{min: s.cfg.backoffMin, max: s.cfg.backoffMax}
	for ctx.Err() == nil {
		err := c.connection(ctx)
		if ctx.Err() != nil {
			break
		}
		s.setDown(err)
		delay := c.reconnect.next()
		s.log.Warn("amqpsource: broker connection failed, reconnecting", "broker", s.addr, "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			break
		}
	}
	s.log.Info("amqpsource: stopped consuming", "broker", s.addr)
	return nil
}

// drainContext returns the context handlers run with: it carries ctx's
// values and is cancelled drain after ctx ends, so that an event being
// handled at shutdown can finish. stop releases it and waits for its timer
// goroutine, if one started.
func drainContext(ctx context.Context, drain time.Duration) (context.Context, func()) {
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	stopAfter := context.AfterFunc(ctx, func() {
		defer wg.Done()
		t := time.NewTimer(drain)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-hctx.Done():
		}
	})
	return hctx, func() {
		cancel()
		if stopAfter() {
			wg.Done() // the function never ran
		}
		wg.Wait()
	}
}

// consumer is the state of one Consume or ConsumePipelined call; only its
// goroutine uses it.
type consumer struct {
	*Source
	patterns []string
	// Exactly one of the two is set: handle for Consume, handleAsync for
	// ConsumePipelined.
	handle      realtime.EventHandler
	handleAsync realtime.AsyncEventHandler
	handleCtx   context.Context
	reconnect   backoff // between failed connection or channel attempts
	retry       backoff // between redeliveries of transiently failing events
	// resumed is set when a session that was consuming ended by a loss: the
	// next consumer started is a reconnect.
	resumed bool
	started bool
}

// connection dials the broker and runs channel sessions on the connection
// until it is lost (the error says why) or ctx ends (nil).
func (c *consumer) connection(ctx context.Context) error {
	conn, raw, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.CloseDeadline(time.Now().Add(closeTimeout)) }()
	// Once the drain time after ctx's end is over, cut the socket: an
	// unresponsive broker cannot hold Consume up any longer.
	defer context.AfterFunc(c.handleCtx, func() { _ = raw.Close() })()
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	for {
		err := c.channel(ctx, conn, connClosed)
		switch {
		case ctx.Err() != nil:
			return nil
		case conn.IsClosed():
			return err
		case errors.Is(err, errRestart):
			continue // the handler's backoff has already been waited
		}
		c.setDown(err)
		delay := c.reconnect.next()
		c.log.Warn("amqpsource: channel failed, reopening", "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return nil
		}
	}
}

// dial connects and returns the connection and its socket.
func (c *consumer) dial(ctx context.Context) (*amqp.Connection, net.Conn, error) {
	var (
		raw  net.Conn
		stop func() bool
	)
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(c.cfg.consumerPrefix)
	cfg := amqp.Config{
		Heartbeat:  heartbeat,
		Locale:     "en_US",
		Properties: props,
		// Dial honours ctx: a cancelled ctx aborts the connect and the
		// handshake instead of waiting for their timeout.
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if err := conn.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
				_ = conn.Close()
				return nil, err
			}
			raw = conn
			stop = context.AfterFunc(ctx, func() { _ = conn.Close() })
			return conn, nil
		},
	}
	conn, err := amqp.DialConfig(c.url, cfg)
	if stop != nil {
		stop()
	}
	if err != nil {
		if raw != nil {
			// A failed handshake can leave the library's reader running.
			_ = raw.Close()
		}
		return nil, nil, fmt.Errorf("amqpsource: connect to %s: %w", c.addr, err)
	}
	return conn, raw, nil
}

// channel opens a channel, declares the topology, consumes and handles
// deliveries until the channel, the connection or the consumer is lost (the
// error says why), a requeue restarts it (errRestart) or ctx ends (nil).
func (c *consumer) channel(ctx context.Context, conn *amqp.Connection, connClosed <-chan *amqp.Error) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqpsource: open channel: %w", err)
	}
	// Closing the channel returns its unacknowledged deliveries to the queue.
	defer func() { _ = ch.Close() }()
	// Buffered: the library sends to these while it shuts the channel down.
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	cancelled := ch.NotifyCancel(make(chan string, 1))
	if err := c.declare(ch); err != nil {
		return err
	}
	if err := ch.Qos(c.cfg.prefetch, 0, false); err != nil {
		return fmt.Errorf("amqpsource: set prefetch %d: %w", c.cfg.prefetch, err)
	}
	tag := c.consumerTag()
	deliveries, err := ch.Consume(c.cfg.queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("amqpsource: consume from queue %q: %w", c.cfg.queue, err)
	}
	c.consuming(tag)
	var (
		p        *pipeline // the events in flight; nil for Consume
		results  <-chan settlement
		noReason <-chan time.Time // armed when deliveries closes
	)
	if c.handleAsync != nil {
		p = newPipeline(c.cfg.prefetch)
		defer close(p.over) // dones that come later are dropped
		results = p.results
	}
	for {
		// On ctx's end the deferred close cancels the consumer and returns the
		// prefetched deliveries to the queue in one step. A basic.cancel first
		// would hand a single-active-consumer queue to the standby while those
		// deliveries are still out, so it would receive later events before
		// them (and RabbitMQ 3.10/3.11 can crash the queue on that path,
		// rabbitmq-server#5460).
		if ctx.Err() != nil {
			return c.drain(p, nil)
		}
		if p.restartDue() {
			if err := c.restart(ctx, p); err != nil {
				return err
			}
			continue // a requeue failed: the channel is gone, and a case below says why
		}
		in := deliveries
		if p.paused() {
			in = nil
		}
		select {
		case <-ctx.Done():
			return c.drain(p, nil)
		case e := <-connClosed:
			return c.drain(p, c.lost(fmt.Errorf("amqpsource: connection lost: %w", reason(e))))
		case e := <-chClosed:
			return c.drain(p, c.lost(fmt.Errorf("amqpsource: channel closed: %w", reason(e))))
		case t := <-cancelled:
			return c.drain(p, c.lost(fmt.Errorf("amqpsource: the broker cancelled consumer %q (queue %q deleted?)", t, c.cfg.queue)))
		case <-noReason:
			return c.drain(p, c.lost(errors.New("amqpsource: delivery channel closed")))
		case r := <-results:
			c.settleDone(p, r)
		case d, ok := <-in:
			if !ok {
				// The library notifies before it closes deliveries, so one
				// of the cases above is ready and says why.
				deliveries, noReason = nil, time.After(time.Second)
				continue
			}
			if p != nil {
				c.start(p, d)
				continue
			}
			if err := c.deliver(ctx, d); err != nil {
				return err
			}
		}
	}
}

// consuming records that a consumer is registered.
func (c *consumer) consuming(tag string) {
	c.setUp()
	c.reconnect.reset()
	if c.resumed {
		c.resumed = false
		c.count(&c.reconnects, Reconnected, "")
		c.log.Info("amqpsource: consuming again", "broker", c.addr, "consumer", tag)
	} else if !c.started {
		c.log.Info("amqpsource: consuming", "broker", c.addr, "consumer", tag, "patterns", c.patterns,
			"single_active_consumer", c.cfg.singleActive)
	}
	c.started = true
}

// lost records that the running consumer is gone.
func (c *consumer) lost(err error) error {
	c.resumed = true
	return err
}

func reason(e *amqp.Error) error {
	if e == nil {
		return errors.New("closed")
	}
	return e
}

// consumerTags numbers the consumers of this process.
var consumerTags atomic.Uint64

func (c *consumer) consumerTag() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%s-%d-%d", c.cfg.consumerPrefix, host, os.Getpid(), consumerTags.Add(1))
}

// deliver hands one delivery to the handler and settles it (Consume).
func (c *consumer) deliver(ctx context.Context, d amqp.Delivery) error {
	c.count(&c.consumed, Consumed, d.RoutingKey)
	err := c.handle(c.handleCtx, realtime.Event{RoutingKey: d.RoutingKey, Body: d.Body})
	if transient(err) {
		delay := c.retry.next()
		c.retryLog(d, err, delay)
		sleep(ctx, delay) // so that a lasting failure does not spin; ctx's end cuts it short
	} else {
		c.retry.reset()
	}
	return c.settle(d, err)
}

// transient reports whether a handler's outcome asks for a requeue.
func transient(err error) bool {
	return err != nil && !errors.Is(err, realtime.ErrInvalidEvent)
}

// retryLog logs a transient failure and when its event will be requeued.
func (c *consumer) retryLog(d amqp.Delivery, err error, delay time.Duration) {
	c.log.Warn("amqpsource: handler failed, requeueing the event", "routing_key", d.RoutingKey, "err", err, "retry_in", delay)
}

// settle acknowledges, dead-letters or requeues d by its handler's outcome
// err. A requeue returns errRestart: the channel must be reopened so that
// the deliveries prefetched behind d are returned to the queue too. A failed
// settlement means the channel is gone (the broker redelivers d): it is
// logged and settle returns nil, so that the caller finds out why.
func (c *consumer) settle(d amqp.Delivery, err error) error {
	key := d.RoutingKey
	switch {
	case err == nil:
		if err := d.Ack(false); err != nil {
			c.log.Warn("amqpsource: ack failed, the event will be redelivered", "routing_key", key, "err", err)
			return nil
		}
		c.count(&c.acked, Acked, key)
	case errors.Is(err, realtime.ErrInvalidEvent):
		if err := d.Nack(false, false); err != nil {
			c.log.Warn("amqpsource: dead-lettering failed, the event will be redelivered", "routing_key", key, "err", err)
			return nil
		}
		c.count(&c.deadLettered, DeadLettered, key)
		c.log.Warn("amqpsource: invalid event dead-lettered", "routing_key", key, "size", len(d.Body),
			"dead_letter_queue", c.cfg.deadLetterQueue, "reason", err.Error())
	default:
		if err := d.Nack(false, true); err != nil {
			c.log.Warn("amqpsource: requeue failed, the event will be redelivered", "routing_key", key, "err", err)
			return nil
		}
		c.count(&c.requeued, Requeued, key)
		return errRestart
	}
	return nil
}

// pipeline is the events of one ConsumePipelined channel session that were
// handed to the handler and not yet settled. Only the consumer goroutine
// uses it, except done's send to results.
type pipeline struct {
	// results receives the outcome of each event from its done. It holds as
	// many as the prefetch, and no more events than that are in flight, so a
	// done never waits for the consumer goroutine.
	results chan settlement
	// over is closed when the session ends; a done that comes later drops
	// its outcome (the channel is closed, the broker redelivers the event).
	over chan struct{}
	// inFlight counts the events whose outcome has not been received.
	inFlight int
	// held are the events that failed transiently, in the order their
	// outcomes came: they are requeued once nothing is in flight, after the
	// retry backoff that ends at retryAt.
	held    []settlement
	retryAt time.Time
}

// settlement is one event's outcome, as passed to its done.
type settlement struct {
	d   amqp.Delivery
	err error
}

func newPipeline(prefetch int) *pipeline {
	return &pipeline{results: make(chan settlement, prefetch), over: make(chan struct{})}
}

// flight is one event handed to the asynchronous handler; its done method
// is the handler's done.
type flight struct {
	p      *pipeline
	d      amqp.Delivery
	called atomic.Bool
}

func (f *flight) done(err error) {
	if f.called.Swap(true) {
		return // the contract is once; a second outcome would settle the event twice
	}
	select {
	case f.p.results <- settlement{d: f.d, err: err}:
	case <-f.p.over:
	}
}

// paused reports whether the session must take no more deliveries: a
// requeue is pending, or (were the broker to exceed the prefetch) results
// could not hold another outcome.
func (p *pipeline) paused() bool {
	return p != nil && (len(p.held) > 0 || p.inFlight >= cap(p.results))
}

// restartDue reports whether the held events can be requeued: every other
// event is settled.
func (p *pipeline) restartDue() bool {
	return p != nil && len(p.held) > 0 && p.inFlight == 0
}

// start hands d to the asynchronous handler (ConsumePipelined).
func (c *consumer) start(p *pipeline, d amqp.Delivery) {
	c.count(&c.consumed, Consumed, d.RoutingKey)
	p.inFlight++
	f := &flight{p: p, d: d}
	c.handleAsync(c.handleCtx, realtime.Event{RoutingKey: d.RoutingKey, Body: d.Body}, f.done)
}

// settleDone settles an outcome received from a done; a transient failure
// is held until the restart.
func (c *consumer) settleDone(p *pipeline, r settlement) {
	p.inFlight--
	if !transient(r.err) {
		if len(p.held) == 0 {
			// Not while a failure waits for its requeue: events that were
			// in flight beside it succeeding say nothing of its cause, and
			// the backoff must keep growing while it lasts.
			c.retry.reset()
		}
		_ = c.settle(r.d, r.err) // nil for these outcomes
		return
	}
	if len(p.held) == 0 {
		// The backoff runs while the other events in flight finish.
		p.retryAt = time.Now().Add(c.retry.next())
	}
	p.held = append(p.held, r)
	c.retryLog(r.d, r.err, max(0, time.Until(p.retryAt)))
}

// restart waits out the retry backoff (ctx's end cuts it short), requeues
// the held events and returns errRestart. If a requeue fails the channel is
// gone: it returns nil, and the session finds out why.
func (c *consumer) restart(ctx context.Context, p *pipeline) error {
	sleep(ctx, time.Until(p.retryAt))
	restart := true
	for _, r := range p.held {
		if c.settle(r.d, r.err) == nil {
			restart = false
		}
	}
	p.held = nil
	if restart {
		return errRestart
	}
	return nil
}

// drain ends a ConsumePipelined session whose ctx ended (err is nil) or
// whose channel was lost (err says why): it waits for the outcome of every
// event in flight and settles it (after a loss the settlement fails and is
// logged), requeues the held events, and returns err. The wait is bounded by
// the handler's drain context, and after a loss also by the drain timeout,
// so that a done that never comes cannot hold up the shutdown or the
// reconnect; events it gives up on are redelivered by the broker. Consume's
// sessions (p is nil) return err at once.
func (c *consumer) drain(p *pipeline, err error) error {
	if p == nil {
		return err
	}
	var timeout <-chan time.Time
	if err != nil && p.inFlight > 0 {
		t := time.NewTimer(c.cfg.drainTimeout)
		defer t.Stop()
		timeout = t.C
	}
wait:
	for p.inFlight > 0 {
		select {
		case r := <-p.results:
			c.settleDone(p, r)
		case <-c.handleCtx.Done():
			break wait
		case <-timeout:
			break wait
		}
	}
	if p.inFlight > 0 {
		c.log.Warn("amqpsource: events in flight were not done in time, they will be redelivered",
			"in_flight", p.inFlight, "drain_timeout", c.cfg.drainTimeout)
	}
	for _, r := range p.held {
		_ = c.settle(r.d, r.err)
	}
	p.held = nil
	return err
}

// declare declares the exchanges, the queues and the bindings.
func (c *consumer) declare(ch *amqp.Channel) error {
	cfg := &c.cfg
	if err := ch.ExchangeDeclare(cfg.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return c.declareError("exchange", cfg.exchange, err)
	}
	if err := ch.ExchangeDeclare(cfg.deadLetterExchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return c.declareError("exchange", cfg.deadLetterExchange, err)
	}
	if _, err := ch.QueueDeclare(cfg.deadLetterQueue, true, false, false, false, nil); err != nil {
		return c.declareError("queue", cfg.deadLetterQueue, err)
	}
	if err := ch.QueueBind(cfg.deadLetterQueue, "", cfg.deadLetterExchange, false, nil); err != nil {
		return fmt.Errorf("amqpsource: bind queue %q to exchange %q: %w", cfg.deadLetterQueue, cfg.deadLetterExchange, err)
	}
	// No x-dead-letter-routing-key: dead-lettered messages keep their own.
	args := amqp.Table{"x-dead-letter-exchange": cfg.deadLetterExchange}
	if cfg.singleActive {
		args["x-single-active-consumer"] = true
	}
	if _, err := ch.QueueDeclare(cfg.queue, true, false, false, false, args); err != nil {
		return c.declareError("queue", cfg.queue, err)
	}
	for _, p := range c.patterns {
		if err := ch.QueueBind(cfg.queue, p, cfg.exchange, false, nil); err != nil {
			return fmt.Errorf("amqpsource: bind queue %q to exchange %q with %q: %w", cfg.queue, cfg.exchange, p, err)
		}
	}
	return nil
}

var inequivalentArg = regexp.MustCompile(`inequivalent arg '([^']+)'`)

// declareError wraps a failed declaration; one that exists with other
// arguments is logged loudly, since only an operator can fix it.
func (c *consumer) declareError(kind, name string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		arg := "unknown"
		if m := inequivalentArg.FindStringSubmatch(ae.Reason); m != nil {
			arg = m[1]
		}
		c.log.Error(fmt.Sprintf("amqpsource: %s %q exists with a different %s; delete it so that it can be declared again", kind, name, arg),
			"name", name, "argument", arg, "reason", ae.Reason)
	}
	return fmt.Errorf("amqpsource: declare %s %q: %w", kind, name, err)
}

// backoff is a capped exponential backoff with jitter: the n-th delay is
// drawn uniformly between min and min(max, min*2^n).
type backoff struct {
	min, max time.Duration
	attempt  int
}

func (b *backoff) next() time.Duration {
	ceil := b.max
	if b.attempt < 32 {
		if d := b.min << b.attempt; d > 0 && d < b.max {
			ceil = d
			b.attempt++
		}
	}
	return b.min + rand.N(ceil-b.min+1)
}

func (b *backoff) reset() { b.attempt = 0 }

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
