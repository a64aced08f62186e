package realtime

// The Hub with the Redis streams adapter (a real Redis): emits return once
// Redis has the entry, and the stream reader delivers it a moment later.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/turumba/realtime/internal/testredis"
	"github.com/turumba/realtime/redisadapter"
)

// streamsAdapter returns the Redis streams adapter on the real Redis, under
// a key prefix of the test's own.
func streamsAdapter(t *testing.T) *redisadapter.Adapter {
	t.Helper()
	rdb, prefix := testredis.Client(t, "test-hub")
	ad, err := redisadapter.New(rdb, redisadapter.WithKeyPrefix(prefix), redisadapter.WithReadBlock(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() }) // before the client closes (cleanups run last first)
	return ad
}

// With the streams adapter, Publish returns before the local delivery;
// Shutdown still delivers everything published before it, to all or none,
// and the notice comes last.
func TestShutdownWithTheStreamsAdapter(t *testing.T) {
	clients, before := shutdownUnderLoad(t, false, WithAdapter(streamsAdapter(t)))
	checkAllOrNone(t, clients, before)
	for _, c := range clients {
		log := c.log()
		if len(log) == 0 || log[len(log)-1].name != EventShutdown {
			var tail []string
			for _, e := range log[max(0, len(log)-4):] {
				tail = append(tail, e.name+" "+string(e.arg))
			}
			t.Errorf("%s: the last event is not the %s notice (%d events, the last: %v)", c.name, EventShutdown, len(log), tail)
		}
	}
}

// HandleAsync, as a pipelined source calls it: one event after the other
// without waiting, done called once per event (nil: Redis has it), and the
// clients get every event once, in order.
func TestHandleAsyncWithTheStreamsAdapter(t *testing.T) {
	h := startHub(t, WithAdapter(streamsAdapter(t)))
	a := h.dialWS(t, "u-a", &net.Dialer{}, nil)
	b := h.dialWS(t, "u-b", &net.Dialer{}, nil)
	a.join("c-async")
	b.join("c-async")
	const events = 300
	var mu sync.Mutex
	outcomes := map[int][]error{}
	for n := range events {
		body := fmt.Sprintf(`{"account_id":"acme","conversation_id":"c-async","message_id":"m-%d"}`, n)
		h.HandleAsync(context.Background(), Event{RoutingKey: "conversation.message.created", Body: []byte(body)}, func(err error) {
			mu.Lock()
			outcomes[n] = append(outcomes[n], err)
			mu.Unlock()
		})
	}
	want := make([]string, events)
	for n := range want {
		want[n] = "m-" + strconv.Itoa(n)
	}
	for _, c := range []*sioClient{a, b} {
		waitUntil(t, c.name+": every message", func() bool { return len(c.messages()) >= events }, c)
		if got := c.messages(); !slices.Equal(got, want) {
			t.Errorf("%s: got %d messages, not once each in order: %v...", c.name, len(got), got[:min(len(got), 10)])
		}
	}
	waitUntil(t, "every done", func() bool { mu.Lock(); defer mu.Unlock(); return len(outcomes) == events })
	mu.Lock()
	defer mu.Unlock()
	for n, errs := range outcomes {
		if len(errs) != 1 || errs[0] != nil {
			t.Errorf("event %d: done called with %v, want once with nil", n, errs)
		}
	}

	// An invalid event is reported invalid, at once.
	var got error
	h.HandleAsync(context.Background(), Event{RoutingKey: "conversation.message.created", Body: []byte(`{}`)}, func(err error) { got = err })
	if !errorsIsInvalid(got) {
		t.Errorf("invalid event: done(%v), want ErrInvalidEvent", got)
	}
}

func errorsIsInvalid(err error) bool { return errors.Is(err, ErrInvalidEvent) }
