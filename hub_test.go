package realtime

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/zishang520/socket.io/servers/socket/v3"
)

// failingAdapter is the library's in-memory adapter with a failure count
// that rises by one on every read when failing: every broadcast "failed".
type failingAdapter struct {
	socket.AdapterBuilder
	failing bool
	n       atomic.Uint64
}

func (f *failingAdapter) BroadcastFailures() uint64 {
	if f.failing {
		return f.n.Add(1)
	}
	return f.n.Load()
}

func TestHandleRequeuesWhenTheAdapterCannotPublish(t *testing.T) {
	for _, failing := range []bool{false, true} {
		h, err := New(WithAdapter(&failingAdapter{failing: failing}))
		if err != nil {
			t.Fatal(err)
		}
		err = h.Publish(context.Background(), "queue.updated", map[string]any{"account_id": "acme", "unassigned_count": 1})
		if failing && !errors.Is(err, ErrAdapterUnavailable) {
			t.Errorf("adapter failing: Publish = %v, want ErrAdapterUnavailable", err)
		}
		if !failing && err != nil {
			t.Errorf("adapter healthy: Publish = %v", err)
		}
		if errors.Is(err, ErrInvalidEvent) {
			t.Error("an adapter failure must be transient, not invalid")
		}
		h.Shutdown(context.Background())
	}
}

func TestPublishRejectsInvalidEvents(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	for _, payload := range []any{[]byte("not json"), map[string]any{"conversation_id": "c"}, func() {}} {
		if err := h.Publish(context.Background(), "conversation.created", payload); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Publish(%T) = %v, want ErrInvalidEvent", payload, err)
		}
	}
	if err := h.Publish(context.Background(), "conversation.created", map[string]any{"account_id": "a", "conversation_id": "c"}); err != nil {
		t.Errorf("valid event: %v", err)
	}
}

// bothWays is an event source with both consume methods: it hands one
// event to whichever handler Run chose and records which one it was.
type bothWays struct {
	used    chan string
	outcome chan error
}

var bothEvent = Event{RoutingKey: "queue.updated", Body: []byte(`{"account_id":"acme","unassigned_count":1}`)}

func (b *bothWays) Consume(ctx context.Context, _ []string, handle EventHandler) error {
	b.used <- "Consume"
	b.outcome <- handle(ctx, bothEvent)
	<-ctx.Done()
	return nil
}

func (b *bothWays) ConsumePipelined(ctx context.Context, _ []string, handle AsyncEventHandler) error {
	b.used <- "ConsumePipelined"
	handle(ctx, bothEvent, func(err error) { b.outcome <- err })
	<-ctx.Done()
	return nil
}

func TestRunConsumesPipelinedUnlessTurnedOff(t *testing.T) {
	for _, c := range []struct {
		opts []Option
		want string
	}{
		{nil, "ConsumePipelined"},
		{[]Option{WithPipelinedConsume(true)}, "ConsumePipelined"},
		{[]Option{WithPipelinedConsume(false)}, "Consume"},
	} {
		src := &bothWays{used: make(chan string, 1), outcome: make(chan error, 1)}
		h, err := New(append([]Option{WithEventSource(src)}, c.opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- h.Run(ctx) }()
		if got := <-src.used; got != c.want {
			t.Errorf("%d options: Run used %s, want %s", len(c.opts), got, c.want)
		}
		if err := <-src.outcome; err != nil {
			t.Errorf("%s: the event's outcome = %v, want nil (acknowledge)", c.want, err)
		}
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run = %v", err)
		}
		h.Shutdown(context.Background())
	}
}
