package amqpsource

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/turumba/realtime"
)

func TestNewValidatesOptions(t *testing.T) {
	long := strings.Repeat("q", 256)
	tests := []struct {
		name string
		url  string
		opts []Option
		want string // in the error; empty: no error
	}{
		{"defaults", "amqp://localhost", nil, ""},
		{"bad url", "http://localhost", nil, "url"},
		{"empty exchange", "amqp://localhost", []Option{WithExchange("")}, "WithExchange"},
		{"long queue", "amqp://localhost", []Option{WithQueue(long)}, "WithQueue"},
		{"derived names too long", "amqp://localhost", []Option{WithQueue(long[:252])}, "WithDeadLetterQueue"},
		{"dead-letter queue is the queue", "amqp://localhost", []Option{WithQueue("q"), WithDeadLetterQueue("q")}, "WithDeadLetterQueue"},
		{"dead-letter exchange is the exchange", "amqp://localhost", []Option{WithDeadLetterExchange("messaging")}, "WithDeadLetterExchange"},
		{"prefetch 0", "amqp://localhost", []Option{WithPrefetch(0)}, "WithPrefetch"},
		{"prefetch too big", "amqp://localhost", []Option{WithPrefetch(70000)}, "WithPrefetch"},
		{"backoff min 0", "amqp://localhost", []Option{WithReconnectBackoff(0, time.Second)}, "WithReconnectBackoff"},
		{"backoff max < min", "amqp://localhost", []Option{WithReconnectBackoff(time.Second, time.Millisecond)}, "WithReconnectBackoff"},
		{"drain 0", "amqp://localhost", []Option{WithDrainTimeout(0)}, "WithDrainTimeout"},
		{"nil logger", "amqp://localhost", []Option{WithLogger(nil)}, "WithLogger"},
		{"empty prefix", "amqp://localhost", []Option{WithConsumerPrefix("")}, "WithConsumerPrefix"},
		{"nil observer", "amqp://localhost", []Option{WithObserver(nil)}, "WithObserver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.url, tt.opts...)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("New: error %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	src, err := New("amqp://guest:secret@localhost:5672/")
	if err != nil {
		t.Fatal(err)
	}
	c := src.cfg
	if c.exchange != "messaging" || c.queue != "realtime.events" || c.deadLetterQueue != "realtime.events.dead" ||
		c.deadLetterExchange != "realtime.events.dlx" || c.prefetch != 256 || !c.singleActive {
		t.Fatalf("defaults: %+v", c)
	}
	err = src.Check(context.Background())
	if !errors.Is(err, ErrNotConnected) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("Check before Consume: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 10 * time.Millisecond, max: 100 * time.Millisecond}
	ceil := b.min
	for i := range 20 {
		d := b.next()
		if d < b.min || d > ceil {
			t.Fatalf("delay %d = %v, want within [%v, %v]", i, d, b.min, ceil)
		}
		ceil = min(2*ceil, b.max)
	}
	b.reset()
	if d := b.next(); d != b.min {
		t.Fatalf("first delay after reset = %v, want %v", d, b.min)
	}
}

func TestConsumeRejectsBadArguments(t *testing.T) {
	src, err := New("amqp://localhost")
	if err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, realtime.Event) error { return nil }
	ctx := context.Background()
	if err := src.Consume(ctx, []string{"a.b"}, nil); err == nil {
		t.Error("nil handler accepted")
	}
	if err := src.Consume(ctx, nil, ok); err == nil {
		t.Error("no patterns accepted")
	}
	if err := src.Consume(ctx, []string{""}, ok); err == nil {
		t.Error("empty pattern accepted")
	}
}

// keyFor turns a binding pattern into a routing key it matches.
func keyFor(pattern string) string {
	words := strings.Split(pattern, ".")
	for i, w := range words {
		if w == "*" || w == "#" {
			words[i] = "x"
		}
	}
	return strings.Join(words, ".")
}

// defaultRouter is the Hub's routing table, the source of the bindings.
func defaultRouter(t *testing.T) *realtime.Router {
	t.Helper()
	router, err := realtime.NewRouter(realtime.DefaultRoutes)
	if err != nil {
		t.Fatal(err)
	}
	return router
}

func TestTopologyAndRoutingTable(t *testing.T) {
	b := newBroker(t)
	n := b.names()
	router := defaultRouter(t)
	patterns := router.Patterns()
	src, _ := newSource(t, b.url, n)

	var (
		mu     sync.Mutex
		got    []string
		emits  = map[string][]string{}
		doneCh = make(chan struct{})
	)
	run := startConsume(t, src, patterns, func(_ context.Context, e realtime.Event) error {
		out, err := router.Route(e)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e.RoutingKey)
		for _, em := range out {
			emits[e.RoutingKey] = append(emits[e.RoutingKey], em.Event)
		}
		if strings.Contains(string(e.Body), `"last":true`) {
			close(doneCh)
		}
		return nil
	})
	waitConnected(t, src)

	body := []byte(`{"account_id":"a1","conversation_id":"c1","user_id":"u1","assignee_id":"u2","status":"open"}`)
	var msgs, want []string
	for _, p := range patterns {
		msgs = append(msgs, keyFor(p))
		want = append(want, keyFor(p))
	}
	// Keys outside the table must not reach the queue at all.
	msgs = append(msgs, "conversation.deleted", "agent.presence", "agent.presence.x.y", "queue")
	pub := b.publisher(n.exchange)
	var ms []message
	for _, k := range msgs {
		ms = append(ms, message{key: k, body: body})
	}
	ms = append(ms, message{key: "queue.updated", body: []byte(`{"account_id":"a1","last":true}`)})
	want = append(want, "queue.updated")
	if err := pub.publish(context.Background(), ms...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-doneCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the last event did not arrive")
	}
	run.stop(t)

	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("handler got keys\n%q\nwant\n%q", got, want)
	}
	for _, k := range want {
		if len(emits[k]) == 0 {
			t.Errorf("key %s produced no client event", k)
		}
	}
	t.Logf("client events by key: %v", emits)

	// The queues exist, and the queue has exactly the arguments we declare:
	// redeclaring with them succeeds (RabbitMQ refuses different ones).
	ch := b.channel()
	for _, q := range []string{n.queue, n.deadLetterQueue} {
		if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
			t.Fatalf("queue %s: %v", q, err)
		}
	}
	args := amqp.Table{"x-dead-letter-exchange": n.deadLetterExchange, "x-single-active-consumer": true}
	if _, err := ch.QueueDeclare(n.queue, true, false, false, false, args); err != nil {
		t.Fatalf("queue %s was declared with other arguments: %v", n.queue, err)
	}
	if s := src.Stats(); s.Consumed != uint64(len(want)) || s.Acked != uint64(len(want)) || s.DeadLettered != 0 {
		t.Fatalf("stats %+v, want %d consumed and acked", s, len(want))
	}
}

func TestMalformedEventsAreDeadLettered(t *testing.T) {
	b := newBroker(t)
	n := b.names()
	router := defaultRouter(t)
	var outcomes sync.Map
	src, logs := newSource(t, b.url, n, WithObserver(func(o Outcome, key string) {
		v, _ := outcomes.LoadOrStore(string(o)+" "+key, new(int))
		*v.(*int)++ // one goroutine calls the observer
	}))
	valid := make(chan string, 10)
	startConsume(t, src, router.Patterns(), func(_ context.Context, e realtime.Event) error {
		if _, err := router.Route(e); err != nil {
			return err
		}
		valid <- string(e.Body)
		return nil
	})
	waitConnected(t, src)

	bad := []message{
		{key: "conversation.created", body: []byte("not json SECRET-1")},
		{key: "conversation.message.created", body: []byte(`["SECRET-2", 1]`)},
		{key: "conversation.assigned", body: []byte(`{"conversation_id":"c1","rule_name":"SECRET-3"}`)},
	}
	good := message{key: "queue.updated", body: []byte(`{"account_id":"a1","unassigned_count":3}`)}
	if err := b.publisher(n.exchange).publish(context.Background(), append(bad, good)...); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-valid:
		if body != string(good.body) {
			t.Fatalf("handled %s, want the valid event", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the valid event after the malformed ones was not delivered")
	}

	ch := b.channel()
	var dead []amqp.Delivery
	waitFor(t, 5*time.Second, "3 messages in the dead-letter queue", func() bool {
		d, ok, err := ch.Get(n.deadLetterQueue, true)
		if err != nil {
			t.Fatalf("get from %s: %v", n.deadLetterQueue, err)
		}
		if ok {
			dead = append(dead, d)
		}
		return len(dead) == len(bad)
	})
	for i, d := range dead {
		if d.RoutingKey != bad[i].key || string(d.Body) != string(bad[i].body) {
			t.Errorf("dead letter %d: %s %q, want %s %q", i, d.RoutingKey, d.Body, bad[i].key, bad[i].body)
		}
		if _, ok := d.Headers["x-death"]; !ok {
			t.Errorf("dead letter %d has no x-death header", i)
		}
	}
	if s := src.Stats(); s.DeadLettered != 3 || s.Acked != 1 || s.Consumed != 4 {
		t.Errorf("stats %+v, want 3 dead-lettered, 1 acked", s)
	}
	for _, m := range bad {
		if v, ok := outcomes.Load("dead_lettered " + m.key); !ok || *v.(*int) != 1 {
			t.Errorf("observer did not see %s dead-lettered once", m.key)
		}
	}
	out := logs.String()
	if strings.Contains(out, "SECRET") {
		t.Errorf("the log holds an event body:\n%s", out)
	}
	for _, m := range bad {
		if c := strings.Count(out, "routing_key="+m.key); c != 1 {
			t.Errorf("dead-lettered %s logged %d times, want once", m.key, c)
		}
	}
	if !strings.Contains(out, fmt.Sprintf("size=%d", len(bad[0].body))) {
		t.Errorf("the log does not give the body's size:\n%s", out)
	}
}

func TestTransientErrorRequeuesInOrder(t *testing.T) {
	b := newBroker(t)
	n := b.names()
	src, _ := newSource(t, b.url, n)
	var (
		mu       sync.Mutex
		seen     []int
		failures = 2
	)
	startConsume(t, src, []string{"conversation.#"}, func(_ context.Context, e realtime.Event) error {
		mu.Lock()
		defer mu.Unlock()
		seq := seqOf(t, e)
		seen = append(seen, seq)
		if seq == 0 && failures > 0 {
			failures--
			return fmt.Errorf("emit: %w", errAdapter)
		}
		return nil
	})
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, 5, 5); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "5 events handled", func() bool {
		return src.Stats().Acked == 5
	})
	mu.Lock()
	defer mu.Unlock()
	// Event 0 fails twice and is redelivered before the events behind it.
	if want := []int{0, 0, 0, 1, 2, 3, 4}; !slices.Equal(seen, want) {
		t.Fatalf("handled %v, want %v", seen, want)
	}
	if s := src.Stats(); s.Requeued != 2 || s.Reconnects != 0 {
		t.Fatalf("stats %+v, want 2 requeued and no reconnect", s)
	}
}

func TestShutdownFinishesTheEventInFlight(t *testing.T) {
	b := newBroker(t)
	n := b.names()
	before := runtime.NumGoroutine()
	src, _ := newSource(t, b.url, n)
	entered, release := make(chan struct{}), make(chan struct{})
	var handled []int
	run := startConsume(t, src, []string{"conversation.#"}, func(ctx context.Context, e realtime.Event) error {
		handled = append(handled, seqOf(t, e))
		if len(handled) == 1 {
			close(entered)
			<-release
			if ctx.Err() != nil {
				return ctx.Err() // the handler context must outlive Consume's
			}
		}
		return nil
	})
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, 3, 3); err != nil {
		t.Fatal(err)
	}
	<-entered
	run.cancel()
	time.Sleep(50 * time.Millisecond) // Consume sees its context end while the handler runs
	close(release)
	run.stop(t)

	if s := src.Stats(); s.Acked != 1 || s.Consumed != 1 || !slices.Equal(handled, []int{0}) {
		t.Fatalf("stats %+v, handled %v: want the event in flight acked and no other handled", s, handled)
	}
	if err := src.Check(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Check after Consume returned: %v", err)
	}
	q, err := b.channel().QueueDeclarePassive(n.queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 2 {
		t.Fatalf("%d messages back in the queue, want the 2 prefetched ones", q.Messages)
	}

	checkGoroutines(t, before)
}

func TestDrainTimeoutBoundsShutdown(t *testing.T) {
	const drain = 200 * time.Millisecond
	b := newBroker(t)
	n := b.names()
	src, _ := newSource(t, b.url, n, WithDrainTimeout(drain))
	entered := make(chan struct{})
	run := startConsume(t, src, []string{"conversation.#"}, func(ctx context.Context, e realtime.Event) error {
		close(entered)
		<-ctx.Done() // a handler stuck until its context ends
		return ctx.Err()
	})
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	<-entered
	start := time.Now()
	run.stop(t)
	if took := time.Since(start); took < drain || took > drain+2*time.Second {
		t.Fatalf("Consume returned %v after its context ended, want about %v", took, drain)
	}
	ch := b.channel()
	waitFor(t, 5*time.Second, "the event back in the queue", func() bool {
		q, err := ch.QueueDeclarePassive(n.queue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages == 1
	})
}

func TestNoLossWhileTheConnectionIsCut(t *testing.T) {
	const events, cuts = 10000, 5
	b := newBroker(t)
	n := b.names()
	before := runtime.NumGoroutine()
	px := newProxy(t, b.url, true)
	src, _ := newSource(t, px.url(t, b.url), n)
	var (
		mu    sync.Mutex
		seen  = make([]int, events)
		total int
		uniq  int
	)
	unique := func() int { mu.Lock(); defer mu.Unlock(); return uniq }
	run := startConsume(t, src, []string{"conversation.#"}, func(_ context.Context, e realtime.Event) error {
		seq := seqOf(t, e)
		mu.Lock()
		defer mu.Unlock()
		total++
		if seq >= 0 && seq < events {
			if seen[seq] == 0 {
				uniq++
			}
			seen[seq]++
		}
		return nil
	})
	waitConnected(t, src)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	pub := b.publisher(n.exchange)
	published := make(chan error, 1)
	go func() { published <- pub.publishSeq(ctx, 0, events, 200) }()

	// Cut the source's connection while events flow, each time once it
	// consumed again after the previous cut.
	for i := 1; i <= cuts+1; i++ {
		waitFor(t, 60*time.Second, fmt.Sprintf("cut %d", i), func() bool {
			return unique() >= i*events/(cuts+3) && src.Stats().Reconnects >= uint64(i-1) && px.cut() > 0
		})
		t.Logf("cut %d after %d events", i, unique())
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Until(deadline(ctx)), "every event", func() bool { return unique() == events })
	run.stop(t)

	mu.Lock()
	dups := total - events
	mu.Unlock()
	s := src.Stats()
	t.Logf("%d events, %d deliveries, %d duplicates, %d reconnects, stats %+v", events, total, dups, s.Reconnects, s)
	if s.Reconnects < cuts {
		t.Errorf("%d reconnects, want at least %d", s.Reconnects, cuts)
	}
	if s.Consumed != uint64(total) {
		t.Errorf("stats count %d consumed, the handler saw %d", s.Consumed, total)
	}
	px.close()

	checkGoroutines(t, before)
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func TestBrokerUnreachableAtStart(t *testing.T) {
	b := newBroker(t)
	n := b.names()
	px := newProxy(t, b.url, false)
	src, logs := newSource(t, px.url(t, b.url), n)
	got := make(chan int, 1)
	run := startConsume(t, src, []string{"conversation.#"}, func(_ context.Context, e realtime.Event) error {
		got <- seqOf(t, e)
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-run.done:
		t.Fatalf("Consume returned %v while the broker was unreachable", err)
	default:
	}
	if err := src.Check(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Check while unreachable: %v, want ErrNotConnected", err)
	}
	if c := strings.Count(logs.String(), "reconnecting"); c < 2 {
		t.Fatalf("%d connection attempts logged, want retries", c)
	}

	px.forward.Store(true)
	waitConnected(t, src)
	expectEvent(t, b, n, got, 7, "once the broker became reachable")
	if s := src.Stats(); s.Reconnects != 0 {
		t.Errorf("first connection counted as a reconnect: %+v", s)
	}
}

func TestQueueWithOtherArgumentsIsRetried(t *testing.T) {
	b := newBroker(t)
	n := b.names()
	ch := b.channel()
	if _, err := ch.QueueDeclare(n.queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	src, logs := newSource(t, b.url, n)
	got := make(chan int, 1)
	startConsume(t, src, []string{"conversation.#"}, func(_ context.Context, e realtime.Event) error {
		got <- seqOf(t, e)
		return nil
	})
	waitFor(t, 5*time.Second, "the conflict to be logged twice", func() bool {
		return strings.Count(logs.String(), "exists with a different") >= 2
	})
	out := logs.String()
	if !strings.Contains(out, fmt.Sprintf("name=%s ", n.queue)) || !strings.Contains(out, "argument=x-") {
		t.Fatalf("the log does not name the queue and the argument:\n%s", out)
	}
	if err := src.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Fatalf("Check: %v, want the precondition failure", err)
	}

	// The operator deletes the queue: the source declares it and consumes.
	if _, err := ch.QueueDelete(n.queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, src)
	expectEvent(t, b, n, got, 1, "after the queue was deleted and declared again")
}

func TestConsumerCancelledByTheBroker(t *testing.T) {
	b := newBroker(t)
	n := b.names()
	src, logs := newSource(t, b.url, n)
	got := make(chan int, 10)
	startConsume(t, src, []string{"conversation.#"}, func(_ context.Context, e realtime.Event) error {
		got <- seqOf(t, e)
		return nil
	})
	waitConnected(t, src)
	if _, err := b.channel().QueueDelete(n.queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the source to consume again", func() bool { return src.Stats().Reconnects == 1 })
	if !strings.Contains(logs.String(), "cancelled consumer") {
		t.Errorf("the cancel is not logged:\n%s", logs.String())
	}
	expectEvent(t, b, n, got, 3, "after the queue was recreated")
}

// expectEvent publishes event seq and waits for the handler to pass it on.
func expectEvent(t *testing.T, b *testBroker, n topology, got <-chan int, seq int, when string) {
	t.Helper()
	if err := b.publisher(n.exchange).publishSeq(context.Background(), seq, seq+1, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != seq {
			t.Fatalf("got event %d %s, want %d", s, when, seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no event %s", when)
	}
}

// checkOrder reports the first place where seqs is not strictly increasing.
func checkOrder(t *testing.T, who string, seqs []int) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("%s: event %d after %d (position %d of %d)", who, seqs[i], seqs[i-1], i, len(seqs))
		}
	}
}

func TestOrderWithOneConsumer(t *testing.T) {
	const events = 2000
	b := newBroker(t)
	n := b.names()
	src, _ := newSource(t, b.url, n)
	var (
		mu   sync.Mutex
		seqs []int
	)
	startConsume(t, src, []string{"conversation.#"}, func(_ context.Context, e realtime.Event) error {
		mu.Lock()
		defer mu.Unlock()
		seqs = append(seqs, seqOf(t, e))
		return nil
	})
	waitConnected(t, src)
	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, events, 500); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every event", func() bool { mu.Lock(); defer mu.Unlock(); return len(seqs) >= events })
	mu.Lock()
	defer mu.Unlock()
	checkOrder(t, "consumer", seqs)
	if len(seqs) != events || seqs[0] != 0 {
		t.Fatalf("%d events from %d, want %d from 0", len(seqs), seqs[0], events)
	}
}

func TestOrderWhenTheActiveConsumerStops(t *testing.T) {
	const events, stopAt = 2000, 700
	b := newBroker(t)
	n := b.names()
	type side struct {
		src  *Source
		run  *consumeRun
		mu   sync.Mutex
		seqs []int
	}
	var a, s2 side
	handler := func(sd *side, onEach func(int)) realtime.EventHandler {
		return func(_ context.Context, e realtime.Event) error {
			seq := seqOf(t, e)
			sd.mu.Lock()
			sd.seqs = append(sd.seqs, seq)
			count := len(sd.seqs)
			sd.mu.Unlock()
			if onEach != nil {
				onEach(count)
			}
			return nil
		}
	}
	a.src, _ = newSource(t, b.url, n)
	ctxA, cancelA := context.WithCancel(context.Background())
	a.run = startConsumeCtx(t, ctxA, cancelA, a.src, []string{"conversation.#"}, handler(&a, func(count int) {
		if count == stopAt {
			cancelA() // mid-stream, with deliveries prefetched behind this one
		}
	}))
	waitConnected(t, a.src)
	s2.src, _ = newSource(t, b.url, n)
	s2.run = startConsume(t, s2.src, []string{"conversation.#"}, handler(&s2, nil))
	waitConnected(t, s2.src)

	if err := b.publisher(n.exchange).publishSeq(context.Background(), 0, events, 500); err != nil {
		t.Fatal(err)
	}
	last := func(sd *side) int {
		sd.mu.Lock()
		defer sd.mu.Unlock()
		if len(sd.seqs) == 0 {
			return -1
		}
		return sd.seqs[len(sd.seqs)-1]
	}
	waitFor(t, 30*time.Second, "the last event at the standby", func() bool { return last(&s2) == events-1 })
	a.run.stop(t)

	a.mu.Lock()
	s2.mu.Lock()
	defer a.mu.Unlock()
	defer s2.mu.Unlock()
	checkOrder(t, "active", a.seqs)
	checkOrder(t, "standby", s2.seqs)
	if len(a.seqs) != stopAt || a.seqs[0] != 0 {
		t.Fatalf("active handled %d events from %d, want %d from 0", len(a.seqs), a.seqs[0], stopAt)
	}
	// The standby starts where the active one stopped: the deliveries the
	// active one had prefetched come back first.
	if s2.seqs[0] != stopAt || len(s2.seqs) != events-stopAt {
		t.Fatalf("standby handled %d events from %d, want %d from %d", len(s2.seqs), s2.seqs[0], events-stopAt, stopAt)
	}
}
