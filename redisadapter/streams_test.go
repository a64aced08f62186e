package redisadapter

import (
	"fmt"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// contiguous checks that got is exactly from, from+1, ..., to-1.
func contiguous(got []int, from, to int) error {
	if len(got) != to-from {
		return fmt.Errorf("got %d events, want %d (%v...)", len(got), to-from, head(got))
	}
	for i, v := range got {
		if v != from+i {
			return fmt.Errorf("event %d is seq %d, want %d (%v...)", i, v, from+i, head(got))
		}
	}
	return nil
}

func head(s []int) []int {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

func TestFanoutReachesEveryInstanceOnceInOrder(t *testing.T) {
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			f := newFleet(t, fleetOpts{n: 3, window: time.Minute, kind: kind, needReal: kind == Sharded})
			var in, out []*client
			for _, n := range f.nodes {
				in = append(in, dial(t, n.http.URL, map[string]any{"token": "ok", "rooms": []any{"account:a"}}))
				out = append(out, dial(t, n.http.URL, map[string]any{"token": "ok", "rooms": []any{"account:b"}}))
			}
			time.Sleep(200 * time.Millisecond) // dynamic sharded subscriptions are asynchronous
			const events = 300
			for i := range events {
				f.nodes[i%3].emit("account:a", map[string]any{"seq": i})
			}
			for _, c := range in {
				eventually(t, 5*time.Second, func() error {
					got := c.seqs()
					if len(got) < events {
						return fmt.Errorf("%d of %d", len(got), events)
					}
					return nil
				})
			}
			time.Sleep(100 * time.Millisecond)
			for i, c := range in {
				got := c.seqs()
				if len(got) != events {
					t.Fatalf("client %d got %d events, want %d (duplicates?)", i, len(got), events)
				}
				// Emits from one instance keep their order.
				for src := range 3 {
					var mine []int
					for _, s := range got {
						if s%3 == src {
							mine = append(mine, s)
						}
					}
					if !slices.IsSorted(mine) {
						t.Fatalf("client %d: events of instance %d out of order: %v", i, src, head(mine))
					}
				}
			}
			for i, c := range out {
				if got := c.seqs(); len(got) != 0 {
					t.Fatalf("client %d outside the room got %d events", i, len(got))
				}
			}
		})
	}
}

func TestStreamsOffsetsAreStreamIDs(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 2, window: time.Minute})
	local := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
	remote := dial(t, f.nodes[1].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
	f.nodes[0].emit("r", map[string]any{"seq": 0})
	for _, c := range []*client{local, remote} {
		eventually(t, 3*time.Second, func() error {
			if len(c.seqs()) != 1 {
				return fmt.Errorf("got %v", c.seqs())
			}
			return nil
		})
	}
	a, b := local.received()[0].offset, remote.received()[0].offset
	if _, ok := parseID(a); !ok || a != b {
		t.Fatalf("offsets %q (publisher) and %q (remote): want one stream id", a, b)
	}
	// Each instance timed the entry's stream hop once: delivered after
	// Redis appended it (the id's millisecond, so at least 0), well within
	// the 3 s the test waited.
	for i, n := range f.nodes {
		var m dto.Metric
		if err := n.ad.metrics.readLag.Write(&m); err != nil {
			t.Fatal(err)
		}
		h := m.GetHistogram()
		if h.GetSampleCount() != 1 || h.GetSampleSum() < 0 || h.GetSampleSum() > 3 {
			t.Errorf("instance %d: stream lag histogram has %d samples summing to %gs, want 1 in [0, 3]",
				i, h.GetSampleCount(), h.GetSampleSum())
		}
	}
}

// TestRecoveryOnAnotherInstance: a client cut off while events are
// published reconnects to another instance and receives them all, in
// order, once, in its rooms, and is told it was recovered.
func TestRecoveryOnAnotherInstance(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 3, window: time.Minute})
	c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"conv:a:1"}})
	for i := range 10 {
		f.nodes[2].emit("conv:a:1", map[string]any{"seq": i})
	}
	eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 10) })

	c.drop()
	for i := 10; i < 110; i++ {
		f.nodes[2].emit("conv:a:1", map[string]any{"seq": i})
		f.nodes[2].emit("conv:a:2", map[string]any{"seq": -1}) // not its room
	}
	if err := c.reconnect(f, f.nodes[1].http.URL); err != nil {
		t.Fatal(err)
	}
	for i := 110; i < 120; i++ {
		f.nodes[2].emit("conv:a:1", map[string]any{"seq": i})
	}
	eventually(t, 5*time.Second, func() error { return contiguous(c.seqs(), 0, 120) })
	if !c.isRecovered() {
		t.Fatal("client not told it was recovered")
	}
	if r, _ := f.nodes[1].lastRecovered(); !r {
		t.Fatal("server socket not recovered")
	}
	// It kept its room: new events still arrive after the replay.
	f.nodes[0].emit("conv:a:1", map[string]any{"seq": 120})
	eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 121) })
}

// TestRecoveryUnderLiveTraffic: broadcasts keep flowing while a client is
// restored on an instance whose token check is slow; across several moves
// it never misses nor repeats one.
func TestRecoveryUnderLiveTraffic(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 3, window: time.Minute})
	for _, n := range f.nodes {
		n.delay.Store(int64(30 * time.Millisecond))
	}
	c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})

	stop := f.publish("r", 200*time.Microsecond)
	moves := 0
	for target := range 6 {
		time.Sleep(150 * time.Millisecond)
		c.drop()
		moves++
		if err := c.reconnect(f, f.nodes[(target+1)%3].http.URL); err != nil {
			t.Fatal(err)
		}
		if !c.isRecovered() {
			t.Fatalf("move %d: not recovered", moves)
		}
	}
	time.Sleep(100 * time.Millisecond)
	sent := stop()
	defer func() {
		if t.Failed() {
			explain(t, c, sent)
		}
	}()
	eventually(t, 5*time.Second, func() error {
		got := c.seqs()
		// Emits alternate between two instances: per instance, order holds;
		// overall, nothing is missing or repeated.
		sorted := slices.Clone(got)
		slices.Sort(sorted)
		if err := contiguous(sorted, 0, sent); err != nil {
			return err
		}
		for src := range 2 {
			var mine []int
			for _, s := range got {
				if s%2 == src {
					mine = append(mine, s)
				}
			}
			if !slices.IsSorted(mine) {
				return fmt.Errorf("events of instance %d out of order", src)
			}
		}
		return nil
	})
	t.Logf("%d events across %d moves", sent, moves)
}

// TestRefusedRecoverySendsNothing: a client whose token is refused on
// reconnection is sent none of the packets it missed, and can still be
// recovered with a valid token within the window.
func TestRefusedRecoverySendsNothing(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 2, window: time.Minute})
	c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
	f.nodes[0].emit("r", map[string]any{"seq": 0})
	eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 1) })

	c.drop()
	for i := 1; i < 20; i++ {
		f.nodes[0].emit("r", map[string]any{"seq": i})
	}
	f.nodes[1].refuse.Store(true)
	if err := c.reconnect(f, f.nodes[1].http.URL); err == nil {
		t.Fatal("the refused client connected")
	}
	time.Sleep(100 * time.Millisecond)
	c.mu.Lock()
	pre := c.preConnect
	c.mu.Unlock()
	if pre != 0 || len(c.seqs()) != 1 {
		t.Fatalf("the refused client was sent %d packets (%v)", pre, c.seqs())
	}
	// With a valid token again (a refreshed one), it is recovered after all.
	f.nodes[1].refuse.Store(false)
	if err := c.reconnect(f, f.nodes[0].http.URL); err != nil {
		t.Fatal(err)
	}
	if !c.isRecovered() {
		t.Fatal("not recovered with a valid token")
	}
	eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 20) })
}

func TestNoRecoveryAfterTheWindow(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 2, window: 500 * time.Millisecond})
	c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
	f.nodes[0].emit("r", map[string]any{"seq": 0})
	eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 1) })
	c.drop()
	f.nodes[0].emit("r", map[string]any{"seq": 1})
	time.Sleep(900 * time.Millisecond)
	if err := c.connect(f.nodes[1].http.URL); err != nil {
		t.Fatal(err)
	}
	if c.isRecovered() {
		t.Fatal("recovered after the window")
	}
	if got := c.seqs(); len(got) != 1 {
		t.Fatalf("missed events replayed without recovery: %v", got)
	}
}

// TestNoRecoveryWhenTheStreamLostEntries: entries after the client's
// offset trimmed (here by hand, as a length cap would) make recovery fail
// rather than silently skip them.
func TestNoRecoveryWhenTheStreamLostEntries(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 2, window: time.Minute})
	c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
	f.nodes[0].emit("r", map[string]any{"seq": 0})
	eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 1) })
	c.drop()
	for i := 1; i < 5; i++ {
		f.nodes[0].emit("r", map[string]any{"seq": i})
	}
	stream := f.prefix + "socket.io"
	if err := f.rdb.XTrimMaxLen(t.Context(), stream, 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.reconnect(f, f.nodes[1].http.URL); err != nil {
		t.Fatal(err)
	}
	if c.isRecovered() {
		t.Fatal("recovered although entries after its offset were trimmed")
	}
}

// explain logs what a client missed or got twice, with where it came from.
func explain(t *testing.T, c *client, sent int) {
	got := c.received()
	seen := map[int][]int{}
	for i, r := range got {
		if v, ok := r.payload["seq"].(float64); ok {
			seen[int(v)] = append(seen[int(v)], i)
		}
	}
	for i := range sent {
		switch idx := seen[i]; {
		case len(idx) == 0:
			t.Logf("seq %d missed", i)
		case len(idx) > 1:
			for _, j := range idx {
				t.Logf("seq %d received at %d on connection %d, offset %s", i, j, got[j].conn, got[j].offset)
			}
		}
	}
	c.mu.Lock()
	t.Logf("offsets sent on each connection: %v", c.sentOffsets)
	c.mu.Unlock()
}

// TestOnlyStreamsRecovers: the library's pub/sub and sharded adapters
// replace the session-aware in-memory adapter and keep no sessions, so
// even a client that comes back to the same instance is not recovered.
func TestOnlyStreamsRecovers(t *testing.T) {
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			f := newFleet(t, fleetOpts{n: 1, window: time.Minute, kind: kind, needReal: kind == Sharded})
			c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
			time.Sleep(100 * time.Millisecond)
			f.nodes[0].emit("r", map[string]any{"seq": 0})
			eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 1) })
			c.drop()
			f.nodes[0].emit("r", map[string]any{"seq": 1})
			time.Sleep(200 * time.Millisecond)
			if err := c.connect(f.nodes[0].http.URL); err != nil {
				t.Fatal(err)
			}
			if got, want := c.isRecovered(), kind.SupportsRecovery(); got != want {
				t.Fatalf("recovered = %v, want %v", got, want)
			}
		})
	}
}
