package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/auth"
	"github.com/turumba/realtime/examples/internal/agenttest"
	"github.com/turumba/realtime/internal/testenv"
)

// natsURL is the JetStream-enabled server the tests use (NATS_URL).
func natsURL() string { return envOr("NATS_URL", "nats://127.0.0.1:4222") }

// connect returns a connection to the real NATS server, skipping the test
// when there is none (testenv.Missing).
func connect(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(natsURL(), nats.Timeout(time.Second))
	if err == nil {
		js, jerr := jetstream.New(nc)
		if jerr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, jerr = js.AccountInfo(ctx)
			cancel()
		}
		if jerr != nil {
			nc.Close()
			err = fmt.Errorf("JetStream not enabled (run nats-server -js): %w", jerr)
		}
	}
	if err != nil {
		testenv.Missing(t, "NATS with JetStream at %s not available (%v)", natsURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testSource is a Source on streams of its own, deleted when the test ends.
func testSource(t *testing.T, nc *nats.Conn) *Source {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	src, err := NewSource(nc, Options{
		Stream: "T_" + id, Prefix: "t" + id, Durable: "realtime",
		AckWait: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := src.Setup(ctx); err != nil { // streams exist before the first publish
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = src.js.DeleteStream(ctx, src.opts.Stream)
		_ = src.js.DeleteStream(ctx, src.opts.DeadStream)
	})
	return src
}

func publish(t *testing.T, src *Source, key, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := src.js.Publish(ctx, src.opts.Prefix+"."+key, []byte(body)); err != nil {
		t.Fatalf("publish %s: %v", key, err)
	}
}

// recorder is an EventHandler that records bodies and fails as told.
type recorder struct {
	mu      sync.Mutex
	seen    []string // every delivery, in order
	handled []string // successful ones
	fail    func(body string, attempt int) error
}

func (r *recorder) handle(_ context.Context, e realtime.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	body := string(e.Body)
	attempt := 0
	for _, s := range r.seen {
		if s == body {
			attempt++
		}
	}
	r.seen = append(r.seen, body)
	if r.fail != nil {
		if err := r.fail(body, attempt); err != nil {
			return err
		}
	}
	r.handled = append(r.handled, body)
	return nil
}

func (r *recorder) waitHandled(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Clone(r.handled)
		seen := slices.Clone(r.seen)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %d of %d events: %v (deliveries %v)", len(got), n, got, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consume runs src.Consume until the returned stop is called.
func consume(t *testing.T, src *Source, patterns []string, h realtime.EventHandler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Consume(ctx, patterns, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Consume: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Consume did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func bodies(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"account_id":"acme","conversation_id":"c-1","message_id":"m%02d"}`, i)
	}
	return out
}

var patterns = []string{"conversation.created", "conversation.message.created"}

func TestDeliversInOrderAndAcknowledges(t *testing.T) {
	nc := connect(t)
	src := testSource(t, nc)
	rec := &recorder{}
	stop := consume(t, src, []string{"conversation.#", "queue.updated"}, rec.handle)
	want := bodies(20)
	for i, b := range want {
		key := "conversation.message.created"
		if i%5 == 4 {
			key = "queue.updated"
		}
		publish(t, src, key, b)
	}
	if got := rec.waitHandled(t, 20); !slices.Equal(got, want) {
		t.Fatalf("order:\n got %v\nwant %v", got, want)
	}
	stop()
	info := consumerInfo(t, src)
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("after consuming: ack pending %d, pending %d, redelivered %d; want all 0", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
}

func TestTransientErrorIsRedeliveredInOrder(t *testing.T) {
	nc := connect(t)
	src := testSource(t, nc)
	want := bodies(6)
	rec := &recorder{fail: func(body string, attempt int) error {
		if body == want[2] && attempt < 2 {
			return errors.New("adapter unavailable") // transient: not ErrInvalidEvent
		}
		return nil
	}}
	consume(t, src, patterns, rec.handle)
	for _, b := range want {
		publish(t, src, "conversation.created", b)
	}
	if got := rec.waitHandled(t, 6); !slices.Equal(got, want) {
		t.Fatalf("handled in another order:\n got %v\nwant %v", got, want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	wantSeen := append(append(slices.Clone(want[:3]), want[2], want[2]), want[3:]...)
	if !slices.Equal(rec.seen, wantSeen) {
		t.Errorf("deliveries:\n got %v\nwant %v (the failed event twice more, before any later one)", rec.seen, wantSeen)
	}
}

func TestInvalidEventIsDeadLetteredNotRedelivered(t *testing.T) {
	nc := connect(t)
	src := testSource(t, nc)
	hub, err := realtime.New(realtime.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hub.Shutdown(context.Background()) }()
	var mu sync.Mutex
	var results []error
	handle := func(ctx context.Context, e realtime.Event) error {
		err := hub.Handle(ctx, e) // the real router decides what is invalid
		mu.Lock()
		results = append(results, err)
		mu.Unlock()
		return err
	}
	consume(t, src, patterns, handle)
	publish(t, src, "conversation.created", `not json`)
	publish(t, src, "conversation.created", `{"conversation_id":"no-account"}`)
	publish(t, src, "conversation.created", `{"account_id":"acme","conversation_id":"c-ok"}`)

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // longer than AckWait: a redelivery would show now
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 3 || !errors.Is(results[0], realtime.ErrInvalidEvent) || !errors.Is(results[1], realtime.ErrInvalidEvent) || results[2] != nil {
		t.Fatalf("handler results = %v; want two invalid events, one ok, and no redelivery", results)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dead, err := src.js.Stream(ctx, src.opts.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: "not json", 2: `{"conversation_id":"no-account"}`} {
		m, err := dead.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("dead-letter message %d: %v", seq, err)
		}
		if string(m.Data) != want || m.Subject != src.opts.DeadPrefix+".conversation.created" || m.Header.Get("Realtime-Error") == "" {
			t.Errorf("dead-letter message %d = %s %q %v", seq, m.Subject, m.Data, m.Header)
		}
	}
	if info := consumerInfo(t, src); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer: ack pending %d, pending %d; want 0", info.NumAckPending, info.NumPending)
	}
}

func TestUnroutedKeysAreAcknowledgedAndSkipped(t *testing.T) {
	nc := connect(t)
	src := testSource(t, nc)
	rec := &recorder{}
	consume(t, src, []string{"conversation.created"}, rec.handle)
	publish(t, src, "billing.invoice.paid", `{"account_id":"acme"}`)
	publish(t, src, "conversation.created", `{"account_id":"acme","conversation_id":"c-1"}`)
	if got := rec.waitHandled(t, 1); len(got) != 1 || got[0] != `{"account_id":"acme","conversation_id":"c-1"}` {
		t.Fatalf("handled %v", got)
	}
	if info := consumerInfo(t, src); info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer: pending %d, ack pending %d; want 0", info.NumPending, info.NumAckPending)
	}
}

func TestResumesAfterRestartWithoutLosingOrRepeating(t *testing.T) {
	nc := connect(t)
	src := testSource(t, nc)
	want := bodies(8)
	for _, b := range want {
		publish(t, src, "conversation.created", b)
	}
	// The first run handles three events, then the process stops while
	// handling the fourth (the handler never returns a success for it).
	first := &recorder{fail: func(body string, _ int) error {
		if body == want[3] {
			return errors.New("shutting down")
		}
		return nil
	}}
	stop := consume(t, src, patterns, first.handle)
	first.waitHandled(t, 3)
	stop()

	second := &recorder{}
	consume(t, src, patterns, second.handle)
	if got := second.waitHandled(t, 5); !slices.Equal(got, want[3:]) {
		t.Fatalf("after the restart: got %v, want %v (the unacknowledged one first, nothing acknowledged again)", got, want[3:])
	}
}

func TestEventsReachAgentsThroughTheHub(t *testing.T) {
	nc := connect(t)
	src := testSource(t, nc)
	dv := auth.NewDevVerifier(nil)
	hub, err := realtime.New(realtime.WithEventSource(src), realtime.WithTokenVerifier(dv),
		realtime.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hub.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- hub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = hub.Shutdown(context.Background())
		srv.Close()
	})
	tok, _ := dv.Mint("alice", "", []string{"acme"}, time.Hour)
	alice := agenttest.Dial(t, srv.URL, tok)
	if ack := alice.Emit("account:subscribe", realtime.AccountPayload{AccountID: "acme"}); !ack.OK {
		t.Fatalf("subscribe: %+v", ack)
	}
	if ack := alice.Emit("conversation:join", realtime.ConversationPayload{ConversationID: "c-9"}); !ack.OK {
		t.Fatalf("join: %+v", ack)
	}
	publish(t, src, "conversation.created", `{"account_id":"acme","conversation_id":"c-9","status":"open"}`)
	publish(t, src, "conversation.message.created", `{"account_id":"acme","conversation_id":"c-9","message_id":"m1","message_body":"over NATS"}`)
	ev := alice.Wait("conversation:new", nil, 10*time.Second)
	msg := alice.Wait("conversation:message", nil, 10*time.Second)
	if ev.Payload["conversation_id"] != "c-9" || msg.Payload["message_body"] != "over NATS" {
		t.Errorf("got %v and %v", ev.Payload, msg.Payload)
	}
	if err := src.Check(context.Background()); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func consumerInfo(t *testing.T, src *Source) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := src.js.Consumer(ctx, src.opts.Stream, src.opts.Durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}
