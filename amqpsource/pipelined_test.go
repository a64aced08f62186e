package amqpsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turumba/realtime"
)

func TestConsumePipelinedRejectsBadArguments(t *testing.T) {
	src, err := New("amqp://127.0.0.1:1/", WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ok := func(_ context.Context, _ realtime.Event, done func(error)) { done(nil) }
	ctx := context.Background()
	if err := src.ConsumePipelined(ctx, []string{"a.b"}, nil); err == nil {
		t.Error("nil handler accepted")
	}
	if err := src.ConsumePipelined(ctx, nil, ok); err == nil {
		t.Error("no patterns accepted")
	}
	if err := src.ConsumePipelined(ctx, []string{""}, ok); err == nil {
		t.Error("empty pattern accepted")
	}

	// One Source runs one consumer, whichever method started it.
	run := startConsume(t, src, []string{"a.b"}, func(context.Context, realtime.Event) error { return nil })
	waitFor(t, 5*time.Second, "Consume to start", src.running.Load)
	if err := src.ConsumePipelined(ctx, []string{"a.b"}, ok); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("ConsumePipelined while Consume runs: %v, want already running", err)
	}
	run.stop(t)
}

// asyncDone completes an event from another goroutine after a random
// delay of up to 2ms, so that the dones come in any order.
func asyncDone(wg *sync.WaitGroup, done func(error), err error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond)
		done(err)
	}()
}

func TestPipelinedOrderAndAcks(t *testing.T) {
	const events, prefetch = 3000, 64
	b := newBroker(t)
	n := b.names()
	before := runtime.NumGoroutine()
	src, _ := newSource(t, b.url, n, WithPrefetch(prefetch))
	var (
		mu          sync.Mutex
		seen        []int
		completed   []int
		inFlight    int
		maxInFlight int
		wg          sync.WaitGroup
	)
	run := startPipelined(t, src, []string{"conversation.#"}, func(_ context.Context, e realtime.Event, done func(error)) {
		seq := seqOf(t, e)
		mu.Lock()
		seen = append(seen, seq)
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		mu.Unlock()
		asyncDone(&wg, func(err error) {
			mu.Lock()
			inFlight--
			completed = append(completed, seq)
			mu.Unlock()
			done(err)
		}, nil)
	})
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, events, 500); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "every event acked", func() bool { return src.Stats().Acked >= events })
	run.stop(t)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	// The handler saw each event once, in publish order.
	if len(seen) != events {
		t.Fatalf("handler saw %d events, want %d", len(seen), events)
	}
	for i, seq := range seen {
		if seq != i {
			t.Fatalf("handler saw event %d at position %d", seq, i)
		}
	}
	inversions := 0
	for i := 1; i < len(completed); i++ {
		if completed[i] < completed[i-1] {
			inversions++
		}
	}
	if inversions == 0 {
		t.Errorf("the dones came in publish order; the test means them not to")
	}
	if maxInFlight < 2 || maxInFlight > prefetch {
		t.Errorf("at most %d events in flight, want between 2 and the prefetch %d", maxInFlight, prefetch)
	}
	t.Logf("%d events, up to %d in flight, %d dones out of order", events, maxInFlight, inversions)
	// An event acked twice would close the channel (unknown delivery tag):
	// no reconnect and exactly one ack each.
	if s := src.Stats(); s.Consumed != events || s.Acked != events || s.Requeued != 0 || s.DeadLettered != 0 || s.Reconnects != 0 {
		t.Fatalf("stats %+v, want %d consumed and acked, nothing else", s, events)
	}
	if m := b.ready(n.queue); m != 0 {
		t.Fatalf("%d messages left in the queue, want none", m)
	}
	checkGoroutines(t, before)
}

// heldEvent is an event whose done the test calls when it chooses.
type heldEvent struct {
	seq  int
	ctx  context.Context
	done func(error)
}

// holder keeps the events handed to an AsyncEventHandler without
// completing them, and signals when it holds want.
type holder struct {
	mu   sync.Mutex
	seen []int
	held []heldEvent
	want int
	full chan struct{}
	// after handles the events that come once want are held; nil: hold
	// them too.
	after func(e heldEvent)
}

func newHolder(want int) *holder { return &holder{want: want, full: make(chan struct{})} }

func (h *holder) handle(t *testing.T) realtime.AsyncEventHandler {
	return func(ctx context.Context, e realtime.Event, done func(error)) {
		he := heldEvent{seq: seqOf(t, e), ctx: ctx, done: done}
		h.mu.Lock()
		h.seen = append(h.seen, he.seq)
		if len(h.seen) > h.want && h.after != nil {
			h.mu.Unlock()
			h.after(he)
			return
		}
		h.held = append(h.held, he)
		if len(h.held) == h.want {
			close(h.full)
		}
		h.mu.Unlock()
	}
}

func (h *holder) seenSoFar() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

// wait waits until want events are held and returns them.
func (h *holder) wait(t *testing.T) []heldEvent {
	t.Helper()
	select {
	case <-h.full:
	case <-time.After(10 * time.Second):
		t.Fatalf("only %d of %d events reached the handler", len(h.seenSoFar()), h.want)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.held)
}

func TestPipelinedInvalidEventsDeadLettered(t *testing.T) {
	const events = 20
	invalid := func(seq int) bool { return seq%4 == 1 }
	b := newBroker(t)
	n := b.names()
	src, _ := newSource(t, b.url, n, WithPrefetch(32))
	h := newHolder(events)
	run := startPipelined(t, src, []string{"conversation.#"}, h.handle(t))
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, events, events); err != nil {
		t.Fatal(err)
	}
	held := h.wait(t)

	// The invalid events are done first, from another goroutine, while the
	// valid ones are all still in flight.
	var wantDead []int
	go func() {
		for i := len(held) - 1; i >= 0; i-- {
			if e := held[i]; invalid(e.seq) {
				e.done(fmt.Errorf("event %d: %w", e.seq, realtime.ErrInvalidEvent))
			}
		}
	}()
	for _, e := range held {
		if invalid(e.seq) {
			wantDead = append(wantDead, e.seq)
		}
	}
	waitFor(t, 5*time.Second, "the invalid events dead-lettered", func() bool {
		return src.Stats().DeadLettered == uint64(len(wantDead))
	})
	if s := src.Stats(); s.Acked != 0 {
		t.Fatalf("stats %+v: valid events acked before their done", s)
	}
	var wg sync.WaitGroup
	for _, e := range held {
		if !invalid(e.seq) {
			asyncDone(&wg, e.done, nil)
		}
	}
	wg.Wait()
	waitFor(t, 5*time.Second, "the valid events acked", func() bool {
		return src.Stats().Acked == uint64(events-len(wantDead))
	})
	run.stop(t)

	ch := b.channel()
	var dead []int
	waitFor(t, 5*time.Second, fmt.Sprintf("%d messages in the dead-letter queue", len(wantDead)), func() bool {
		d, ok, err := ch.Get(n.deadLetterQueue, true)
		if err != nil {
			t.Fatalf("get from %s: %v", n.deadLetterQueue, err)
		}
		if ok {
			dead = append(dead, seqOf(t, realtime.Event{RoutingKey: d.RoutingKey, Body: d.Body}))
		}
		return len(dead) == len(wantDead)
	})
	slices.Sort(dead)
	if !slices.Equal(dead, wantDead) {
		t.Fatalf("dead-lettered %v, want %v", dead, wantDead)
	}
	if m := b.ready(n.deadLetterQueue); m != 0 {
		t.Fatalf("%d more messages in the dead-letter queue", m)
	}
	if m := b.ready(n.queue); m != 0 {
		t.Fatalf("%d messages left in the queue, want none", m)
	}
	if s := src.Stats(); s.Consumed != events || s.Requeued != 0 || s.Reconnects != 0 {
		t.Fatalf("stats %+v, want %d consumed, no requeue, no reconnect", s, events)
	}
	if got, want := h.seenSoFar(), seqRange(0, events); !slices.Equal(got, want) {
		t.Fatalf("handler saw %v, want %v", got, want)
	}
}

func seqRange(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestPipelinedTransientErrorSettlesTheOthersFirst(t *testing.T) {
	const first, later = 10, 5
	failing := []int{3, 7}
	b := newBroker(t)
	n := b.names()
	src, _ := newSource(t, b.url, n, WithPrefetch(32))
	h := newHolder(first)
	var (
		wg        sync.WaitGroup
		statsMu   sync.Mutex
		atRestart Stats // when the first event of the second session came
		restarted bool
	)
	h.after = func(e heldEvent) {
		statsMu.Lock()
		if !restarted {
			restarted, atRestart = true, src.Stats()
		}
		statsMu.Unlock()
		asyncDone(&wg, e.done, nil)
	}
	run := startPipelined(t, src, []string{"conversation.#"}, h.handle(t))
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, first, first); err != nil {
		t.Fatal(err)
	}
	held := h.wait(t)

	// Event 3 fails while every other event is in flight: the session takes
	// no more deliveries, and requeues nothing until the others are done.
	held[failing[0]].done(fmt.Errorf("emit: %w", errAdapter))
	if err := b.publisher(n.exchange).publishSeq(context.Background(), first, first+later, later); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // longer than the retry backoff
	if got := h.seenSoFar(); len(got) != first {
		t.Fatalf("handler saw %v while a requeue was pending, want only the first %d", got, first)
	}
	if s := src.Stats(); s.Requeued != 0 || s.Acked != 0 {
		t.Fatalf("stats %+v: settled before the events in flight were done", s)
	}
	// Event 7 fails too, then the others are done in any order.
	held[failing[1]].done(fmt.Errorf("emit: %w", errAdapter))
	for _, e := range held {
		if !slices.Contains(failing, e.seq) {
			asyncDone(&wg, e.done, nil)
		}
	}
	waitFor(t, 10*time.Second, "every event acked", func() bool { return src.Stats().Acked == first+later })
	run.stop(t)
	wg.Wait()

	// The failed events come back first, in queue order, and nothing else
	// comes twice: the others were acked before the channel was reopened.
	want := append(seqRange(0, first), failing...)
	want = append(want, seqRange(first, first+later)...)
	if got := h.seenSoFar(); !slices.Equal(got, want) {
		t.Fatalf("handler saw %v, want %v", got, want)
	}
	statsMu.Lock()
	defer statsMu.Unlock()
	if atRestart.Acked != first-uint64(len(failing)) || atRestart.Requeued != uint64(len(failing)) {
		t.Fatalf("stats %+v when the channel was reopened, want the %d others acked and %d requeued", atRestart, first-len(failing), len(failing))
	}
	if s := src.Stats(); s.Consumed != uint64(len(want)) || s.Requeued != uint64(len(failing)) || s.Reconnects != 0 {
		t.Fatalf("stats %+v, want %d consumed, %d requeued, no reconnect", s, len(want), len(failing))
	}
	if m := b.ready(n.queue); m != 0 {
		t.Fatalf("%d messages left in the queue, want none", m)
	}
}

func TestPipelinedShutdownWaitsForTheEventsInFlight(t *testing.T) {
	const events, prefetch = 8, 5
	b := newBroker(t)
	n := b.names()
	before := runtime.NumGoroutine()
	src, _ := newSource(t, b.url, n, WithPrefetch(prefetch))
	h := newHolder(prefetch)
	run := startPipelined(t, src, []string{"conversation.#"}, h.handle(t))
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, events, events); err != nil {
		t.Fatal(err)
	}
	held := h.wait(t)
	time.Sleep(100 * time.Millisecond)
	if got := h.seenSoFar(); len(got) != prefetch {
		t.Fatalf("handler got %v, want the prefetch of %d in flight", got, prefetch)
	}

	run.cancel()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-run.done:
		t.Fatalf("ConsumePipelined returned %v with events in flight", err)
	default:
	}
	var wg sync.WaitGroup
	for _, e := range slices.Backward(held) {
		if e.ctx.Err() != nil {
			t.Fatalf("handler context of event %d ended with Consume's", e.seq)
		}
		asyncDone(&wg, e.done, nil)
	}
	run.stop(t)
	wg.Wait()

	if s := src.Stats(); s.Consumed != prefetch || s.Acked != prefetch {
		t.Fatalf("stats %+v, want the %d events in flight acked and no other consumed", s, prefetch)
	}
	if got := h.seenSoFar(); !slices.Equal(got, seqRange(0, prefetch)) {
		t.Fatalf("handler saw %v", got)
	}
	if m := b.ready(n.queue); m != events-prefetch {
		t.Fatalf("%d messages in the queue, want the %d not handled", m, events-prefetch)
	}
	if err := src.Check(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Check after ConsumePipelined returned: %v", err)
	}
	checkGoroutines(t, before)
}

func TestPipelinedDrainTimeoutBoundsShutdown(t *testing.T) {
	const events, drain = 3, 300 * time.Millisecond
	b := newBroker(t)
	n := b.names()
	src, logs := newSource(t, b.url, n, WithDrainTimeout(drain))
	h := newHolder(events)
	run := startPipelined(t, src, []string{"conversation.#"}, h.handle(t))
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, events, events); err != nil {
		t.Fatal(err)
	}
	held := h.wait(t)
	// One event is done; the others never are before the drain ends.
	held[1].done(nil)
	waitFor(t, 5*time.Second, "event 1 acked", func() bool { return src.Stats().Acked == 1 })

	start := time.Now()
	run.stop(t)
	if took := time.Since(start); took < drain || took > drain+2*time.Second {
		t.Fatalf("ConsumePipelined returned %v after its context ended, want about %v", took, drain)
	}
	for _, e := range held {
		if e.ctx.Err() == nil {
			t.Errorf("handler context of event %d still live after the drain", e.seq)
		}
	}
	if !strings.Contains(logs.String(), "in_flight=2") {
		t.Errorf("the events given up on are not logged:\n%s", logs.String())
	}
	waitFor(t, 5*time.Second, "the 2 events back in the queue", func() bool { return b.ready(n.queue) == events-1 })

	// Dones after the session are dropped: they neither block nor settle.
	returned := make(chan struct{})
	go func() {
		held[0].done(nil)
		held[2].done(errAdapter)
		held[1].done(nil) // a second call
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(2 * time.Second):
		t.Fatal("a done after the session blocked")
	}
	if s := src.Stats(); s.Acked != 1 || s.Requeued != 0 || s.Consumed != events {
		t.Fatalf("stats %+v, want %d consumed and 1 acked", s, events)
	}
}

func TestPipelinedConnectionLostWithEventsInFlight(t *testing.T) {
	const events, prefetch, drain = 50, 16, time.Second
	b := newBroker(t)
	n := b.names()
	before := runtime.NumGoroutine()
	px := newProxy(t, b.url, true)
	src, logs := newSource(t, px.url(t, b.url), n, WithPrefetch(prefetch), WithDrainTimeout(drain))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		uniq = map[int]int{}
	)
	h := newHolder(prefetch)
	h.after = func(e heldEvent) {
		mu.Lock()
		uniq[e.seq]++
		mu.Unlock()
		asyncDone(&wg, e.done, nil)
	}
	run := startPipelined(t, src, []string{"conversation.#"}, h.handle(t))
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, events, events); err != nil {
		t.Fatal(err)
	}
	held := h.wait(t)

	if px.cut() == 0 {
		t.Fatal("no connection to cut")
	}
	cut := time.Now()
	time.Sleep(100 * time.Millisecond) // the session has seen the loss
	// Half the events are done while the session waits for them: their acks
	// fail. The other half are done only after the reconnect: dropped.
	for _, e := range held[:prefetch/2] {
		e.done(nil)
	}
	waitFor(t, 10*time.Second, "the reconnect", func() bool { return src.Stats().Reconnects == 1 })
	if took := time.Since(cut); took < drain {
		t.Errorf("reconnected %v after the loss, before the drain timeout %v for the events in flight", took, drain)
	}
	for _, e := range held[prefetch/2:] {
		e.done(nil)
	}
	waitFor(t, 20*time.Second, "every event acked", func() bool { return src.Stats().Acked == events })
	run.stop(t)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for seq := range events {
		if uniq[seq] != 1 {
			t.Errorf("event %d handled %d times after the reconnect, want once", seq, uniq[seq])
		}
	}
	if s := src.Stats(); s.Consumed != events+prefetch || s.Acked != events {
		t.Errorf("stats %+v, want %d consumed (%d redelivered) and %d acked", s, events+prefetch, prefetch, events)
	}
	out := logs.String()
	if c := strings.Count(out, "ack failed"); c != prefetch/2 {
		t.Errorf("%d failed acks logged, want %d", c, prefetch/2)
	}
	if !strings.Contains(out, fmt.Sprintf("in_flight=%d", prefetch/2)) {
		t.Errorf("the events given up on are not logged:\n%s", out)
	}
	if m := b.ready(n.queue); m != 0 {
		t.Fatalf("%d messages left in the queue, want none", m)
	}
	px.close()
	checkGoroutines(t, before)
}
