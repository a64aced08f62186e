package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Hub relays events to Socket.IO clients in the /agents namespace, keeps
// presence and relays typing. Create it with New, serve Handler, call Run to
// consume the event source, and Shutdown to stop.
type Hub struct {
	cfg      *config
	log      *slog.Logger
	router   *Router
	presence PresenceStore
	verifier TokenVerifier
	metrics  *metrics
	io       *socketServer
	typing   *typingTracker

	conns   sync.Map // socket id -> *conn
	closing atomic.Bool
	// handling is read-locked by Handle and HandleAsync while they route an
	// event and hand its emits to the adapter; Shutdown write-locks it once
	// closing is set, so that no event's emit follows its notice.
	handling sync.RWMutex

	// bg owns the Hub's background loops (heartbeats); stopped by Shutdown.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	// runMu guards consumption so Shutdown can stop Run and wait for it.
	runMu     sync.Mutex
	runCancel context.CancelFunc
	runDone   chan struct{}
	shutOnce  sync.Once
}

// New builds a Hub. With no options it is a working in-memory hub: no event
// source (use Publish), in-process presence, and a verifier that refuses
// every token until WithTokenVerifier is given.
func New(opts ...Option) (*Hub, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(cfg); err != nil {
			return nil, fmt.Errorf("realtime: %w", err)
		}
	}
	router, err := NewRouter(cfg.routes)
	if err != nil {
		return nil, fmt.Errorf("realtime: routes: %w", err)
	}
	h := &Hub{
		cfg:      cfg,
		log:      cfg.logger,
		router:   router,
		presence: cfg.presence,
		verifier: cfg.verifier,
	}
	if h.presence == nil {
		h.presence = NewMemoryPresence(cfg.presenceTTL)
	}
	if h.verifier == nil {
		h.verifier = refuseAll{}
	}
	if ch, ok := cfg.source.(Checker); ok {
		cfg.checks["event_source"] = ch
	}
	if ch, ok := h.presence.(Checker); ok {
		cfg.checks["presence"] = ch
	}
	if h.metrics, err = newMetrics(cfg.registerer); err != nil {
		return nil, fmt.Errorf("realtime: metrics: %w", err)
	}
	h.typing = newTypingTracker(cfg.typingTTL, h.emitTyping)
	h.io = newSocketServer(h)
	h.bgCtx, h.bgCancel = context.WithCancel(context.Background())
	h.bg.Add(1)
	go h.heartbeatLoop()
	return h, nil
}

// Router returns the Hub's routing table, compiled; event sources take their
// bindings from Router().Patterns().
func (h *Hub) Router() *Router { return h.router }

// Handler serves Socket.IO at /socket.io/, GET /health (liveness) and
// GET /ready (readiness of the event source and presence store).
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", h.io.handler())
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "healthy"})
	})
	mux.HandleFunc("GET /ready", h.serveReady)
	return mux
}

// Ready reports which dependencies are down, by name; an empty map means ready.
func (h *Hub) Ready(ctx context.Context) map[string]string {
	down := map[string]string{}
	if h.closing.Load() {
		down["hub"] = "shutting down"
	}
	for name, ch := range h.cfg.checks {
		if err := ch.Check(ctx); err != nil {
			down[name] = err.Error()
		}
	}
	return down
}

func (h *Hub) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if down := h.Ready(ctx); len(down) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "down": down})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Run consumes the configured event source until ctx ends or Shutdown is
// called; without a source it just waits. It returns nil on a clean stop.
func (h *Hub) Run(ctx context.Context) error {
	h.runMu.Lock()
	if h.closing.Load() {
		h.runMu.Unlock()
		return ErrClosed
	}
	if h.runDone != nil {
		h.runMu.Unlock()
		return errors.New("realtime: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	h.runCancel, h.runDone = cancel, make(chan struct{})
	done := h.runDone
	h.runMu.Unlock()
	defer close(done)
	defer cancel()

	if h.cfg.source == nil {
		<-ctx.Done()
		return nil
	}
	var err error
	if ps, ok := h.cfg.source.(PipelinedEventSource); ok && h.cfg.pipelined {
		err = ps.ConsumePipelined(ctx, h.router.Patterns(), h.HandleAsync)
	} else {
		err = h.cfg.source.Consume(ctx, h.router.Patterns(), h.Handle)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Publish injects an event as if it came from the event source: for
// embedding services and dev mode. payload is a JSON object given as
// []byte, json.RawMessage or any value that marshals to one.
func (h *Hub) Publish(ctx context.Context, routingKey string, payload any) error {
	var body []byte
	switch p := payload.(type) {
	case []byte:
		body = p
	case json.RawMessage:
		body = p
	default:
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidEvent, routingKey, err)
		}
		body = b
	}
	return h.Handle(ctx, Event{RoutingKey: routingKey, Body: body})
}

// Handle routes one event and hands its emits to the Socket.IO adapter. It is
// the EventHandler the Hub gives its event source.
func (h *Hub) Handle(ctx context.Context, e Event) error {
	h.handling.RLock()
	defer h.handling.RUnlock()
	emits, err := h.route(e)
	if err != nil {
		return err
	}
	failures := h.broadcastFailures()
	for _, em := range emits {
		if err := h.emit(em); err != nil {
			return fmt.Errorf("realtime: emit %s for %s: %w", em.Event, e.RoutingKey, err)
		}
		h.metrics.observeLatency(em)
	}
	if h.broadcastFailures() != failures {
		// Local sockets have it; other instances may not: requeue rather than
		// acknowledge (at least once, so a local client may see it twice).
		return fmt.Errorf("realtime: %s: %w", e.RoutingKey, ErrAdapterUnavailable)
	}
	return nil
}

// HandleAsync is Handle for a PipelinedEventSource: it routes the event
// and starts its emits, and done gets the outcome once the adapter has
// them (with the Redis streams adapter: once Redis has appended them,
// which the source does not wait for before it hands over the next
// event). With any other adapter it is Handle.
func (h *Hub) HandleAsync(ctx context.Context, e Event, done func(error)) {
	ab, ok := h.io.async()
	if !ok {
		// The adapter delivers before it returns and counts its failures.
		done(h.Handle(ctx, e))
		return
	}
	h.handling.RLock()
	defer h.handling.RUnlock()
	emits, err := h.route(e)
	if err != nil {
		done(err)
		return
	}
	if len(emits) == 0 {
		done(nil)
		return
	}
	var pending atomic.Int32
	var failed atomic.Bool
	pending.Store(int32(len(emits)))
	settle := func(err error) {
		if err != nil {
			failed.Store(true)
		}
		if pending.Add(-1) > 0 {
			return
		}
		if failed.Load() {
			// As in Handle: local sockets have it, other instances may not.
			done(fmt.Errorf("realtime: %s: %w", e.RoutingKey, ErrAdapterUnavailable))
			return
		}
		done(nil)
	}
	for _, em := range emits {
		h.io.broadcastAsync(ab, em, settle)
		h.metrics.emitted.WithLabelValues(em.Event).Inc()
		h.metrics.observeLatency(em)
	}
}

// route routes one event and counts it; it refuses events once the Hub is
// closing.
func (h *Hub) route(e Event) ([]Emit, error) {
	if h.closing.Load() {
		// The source requeues it for another instance; clients have been
		// or are being told to reconnect there.
		return nil, ErrClosed
	}
	words := strings.Split(e.RoutingKey, ".")
	route := h.router.pattern(words)
	if route == "" {
		route = "unmatched"
	}
	h.metrics.consumed.WithLabelValues(route).Inc()
	emits, err := h.router.route(e, words)
	if err != nil {
		h.metrics.invalid.WithLabelValues(route).Inc()
		return nil, err
	}
	return emits, nil
}

// broadcastFailures reads the adapter's failure count, when it keeps one.
func (h *Hub) broadcastFailures() uint64 {
	if c, ok := h.cfg.adapter.(BroadcastFailureCounter); ok {
		return c.BroadcastFailures()
	}
	return 0
}

// emit is the one seam through which every server->client event leaves the
// Hub; routing and handlers never touch the Socket.IO library directly.
func (h *Hub) emit(em Emit) error {
	if err := h.io.broadcast(em); err != nil {
		return err
	}
	h.metrics.emitted.WithLabelValues(em.Event).Inc()
	return nil
}

// Shutdown stops taking connections, stops consumption (in-flight events
// finish; unacked ones return to the broker), disconnects every client so it
// reconnects elsewhere, removes this instance's presence and closes the
// Socket.IO server. It returns ctx's error if the deadline passes first.
func (h *Hub) Shutdown(ctx context.Context) error {
	var err error
	h.shutOnce.Do(func() { err = h.shutdown(ctx) })
	return err
}

func (h *Hub) shutdown(ctx context.Context) error {
	h.closing.Store(true)
	var errs []error
	if err := h.stopConsumer(ctx); err != nil {
		errs = append(errs, err) // a hung broker must not keep clients from hearing about it
	}
	h.waitHandlers(ctx)
	h.bgCancel()
	h.bg.Wait()
	h.typing.stopAll()

	var conns []*conn
	h.conns.Range(func(_, v any) bool {
		conns = append(conns, v.(*conn))
		return true
	})
	for _, c := range conns {
		c.sc.emit(EventShutdown, map[string]any{"code": codeShuttingDown, "message": "server shutting down; reconnecting"})
	}
	// With recovery on, the notice is a broadcast to the socket's own room:
	// an adapter that delivers after the emit returns (the Redis streams
	// adapter) has it, and the events emitted before, delivered here first.
	h.flushAdapter(ctx)
	// From here on no socket of this instance gets a broadcast (the notice
	// is the last event; each broadcast reached all of its local targets or
	// none): the clients recover what follows from the instance they
	// reconnect to. Other instances still hear of the presence changes.
	h.io.fanout.Seal()
	h.releaseAll(ctx, conns)
	for _, c := range conns {
		// Closing the transport (not the namespace) makes clients reconnect,
		// through the load balancer, to another instance.
		c.closeTransport()
	}
	// A closing websocket still sends what was queued for it: every event
	// emitted before the shutdown reaches every client that was in its room.
	if err := h.io.fast.Drain(ctx); err != nil {
		h.log.Warn("shutdown: websocket queues not drained", "err", err)
	}
	// The library closes a long-polling client once its next request has
	// collected what is buffered for it.
	h.waitClosed(ctx, conns, pollingDrainWait)

	h.io.close()
	h.log.Info("hub shut down", "disconnected", len(conns))
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopConsumer cancels Run's consumption and waits for the in-flight event,
// for at most half of what is left of ctx, so the clients' turn still comes.
func (h *Hub) stopConsumer(ctx context.Context) error {
	h.runMu.Lock()
	cancel, done := h.runCancel, h.runDone
	h.runMu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	wait := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var stop context.CancelFunc
		wait, stop = context.WithTimeout(ctx, time.Until(deadline)/2)
		defer stop()
	}
	select {
	case <-done:
		return nil
	case <-wait.Done():
		return fmt.Errorf("realtime: shutdown: the event source did not stop: %w", wait.Err())
	}
}

// waitHandlers waits until no Handle or HandleAsync call is routing an event
// or handing it to the adapter (Publish included), or until ctx ends; the
// calls that follow refuse their event (closing is set).
func (h *Hub) waitHandlers(ctx context.Context) {
	locked := make(chan struct{})
	go func() {
		h.handling.Lock()
		defer h.handling.Unlock()
		close(locked) // every call that began before closing was set has returned
	}()
	select {
	case <-locked:
	case <-ctx.Done():
		h.log.Warn("shutdown: an event is still being handed to the adapter", "err", ctx.Err())
	}
}

// flushAdapter waits, briefly, for the adapter to deliver locally what was
// emitted before the shutdown. What it has not delivered by then, the
// clients recover from the instance they reconnect to.
func (h *Hub) flushAdapter(ctx context.Context) {
	f, ok := h.cfg.adapter.(BroadcastFlusher)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, flushWait)
	defer cancel()
	if err := f.Flush(ctx); err != nil {
		h.log.Warn("shutdown: the adapter has not delivered every broadcast locally", "err", err)
	}
}

// releaseAll removes the presence of many connections at once: one round
// trip each, a few at a time, so 10,000 connections take seconds, not minutes.
func (h *Hub) releaseAll(ctx context.Context, conns []*conn) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, c := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.release(ctx)
		}()
	}
	wg.Wait()
}

// waitClosed waits, at most for d or until ctx ends, for the transports of
// conns to close.
func (h *Hub) waitClosed(ctx context.Context, conns []*conn, d time.Duration) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for _, c := range conns {
		for !c.sc.transportClosed() {
			select {
			case <-tick.C:
			case <-deadline.C:
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

// pollingDrainWait bounds how long Shutdown waits for long-polling clients
// to collect what is buffered for them (they poll continuously).
const pollingDrainWait = 2 * time.Second

// flushWait bounds how long Shutdown waits for the adapter to deliver
// locally what was emitted before it (BroadcastFlusher).
const flushWait = 2 * time.Second

// refuseAll is the default TokenVerifier: a Hub nobody configured stays closed.
type refuseAll struct{}

func (refuseAll) Verify(context.Context, string) (Identity, error) {
	return Identity{}, fmt.Errorf("%w: no token verifier configured", ErrAuthUnavailable)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// onSlowClient counts a websocket client cut off for falling behind.
func (h *Hub) onSlowClient(reason, addr string) {
	h.metrics.slowClients.WithLabelValues(reason).Inc()
	h.log.Warn("slow client disconnected", "reason", reason, "address", addr)
}
