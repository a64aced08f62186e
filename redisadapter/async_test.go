package redisadapter

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/zishang520/socket.io/adapters/adapter/v3"
	"github.com/zishang520/socket.io/parsers/socket/v3/parser"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

type asyncBroadcaster interface {
	BroadcastAsync(*parser.Packet, *socket.BroadcastOptions, func(error))
}

// broadcastAsync starts an "ev" {"seq": seq} broadcast to room on n.
func (n *node) broadcastAsync(room string, seq int, done func(error)) {
	ab, ok := n.nsp.Adapter().(asyncBroadcaster)
	if !ok {
		n.t.Fatalf("the streams adapter (%T) has no BroadcastAsync", n.nsp.Adapter())
	}
	p := &parser.Packet{Type: parser.EVENT, Data: []any{"ev", map[string]any{"seq": seq}}}
	ab.BroadcastAsync(p, &socket.BroadcastOptions{Rooms: types.NewSet(socket.Room(room)),
		Except: types.NewSet[socket.Room](), Flags: &socket.BroadcastFlags{}}, done)
}

// outcomes records the done calls of broadcasts, by seq.
type outcomes struct {
	mu   sync.Mutex
	errs map[int][]error
}

func (o *outcomes) done(seq int) func(error) {
	return func(err error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.errs[seq] = append(o.errs[seq], err)
	}
}

func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.errs)
}

// BroadcastAsync returns before Redis has the entry, appends in call order,
// reports each outcome once; Flush then guarantees the local delivery.
func TestBroadcastAsyncAppendsInOrderAndFlushDelivers(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 2, window: time.Minute})
	local := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"account:a"}})
	remote := dial(t, f.nodes[1].http.URL, map[string]any{"token": "ok", "rooms": []any{"account:a"}})
	const events = 500
	o := &outcomes{errs: map[int][]error{}}
	for i := range events {
		f.nodes[0].broadcastAsync("account:a", i, o.done(i))
	}
	eventually(t, 5*time.Second, func() error {
		if n := o.count(); n < events {
			return errors.New("not every broadcast is done yet")
		}
		return nil
	})
	o.mu.Lock()
	for seq, errs := range o.errs {
		if len(errs) != 1 || errs[0] != nil {
			t.Errorf("broadcast %d: done called with %v, want once with nil", seq, errs)
		}
	}
	o.mu.Unlock()
	if n := f.rdb.XLen(context.Background(), f.prefix+"socket.io").Val(); n < events {
		t.Fatalf("the stream holds %d entries, want at least %d: done came before the append", n, events)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.nodes[0].ad.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The library's socket write is asynchronous: give the frames a moment
	// on loopback, then require all of them, in call order.
	for _, c := range []*client{local, remote} {
		eventually(t, 5*time.Second, func() error { return contiguous(c.seqs(), 0, events) })
	}
}

// A broadcast Redis refuses is delivered on this instance only, and its
// done reports the failure (the Hub then requeues the event).
func TestBroadcastAsyncReportsRedisDown(t *testing.T) {
	m := miniredis.RunT(t)
	n := newNode(t, m.Addr(), randomPrefix(t), fleetOpts{window: time.Minute, kind: Streams})
	defer n.close()
	c := dial(t, n.http.URL, map[string]any{"token": "ok", "rooms": []any{"account:a"}})
	n.broadcastAsync("account:a", 0, func(err error) {
		if err != nil {
			t.Errorf("Redis up: %v", err)
		}
	})
	eventually(t, 5*time.Second, func() error { return contiguous(c.seqs(), 0, 1) })

	// Several refused at once (one pipeline or more): each done gets the
	// error, and each is delivered here once. Not necessarily in call
	// order: each pipeline's refusals are delivered from a goroutine of
	// their own (a delivery can broadcast, which waits for the publisher),
	// and the Hub requeues every one of these events anyway.
	m.Close()
	const refused = 5
	got := make(chan error, refused)
	for seq := 1; seq <= refused; seq++ {
		n.broadcastAsync("account:a", seq, func(err error) { got <- err })
	}
	for range refused {
		select {
		case err := <-got:
			if err == nil {
				t.Fatal("Redis down: done(nil), want the append's error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Redis down: done never called")
		}
	}
	eventually(t, 5*time.Second, func() error { return contiguous(slices.Sorted(slices.Values(c.seqs())), 0, 1+refused) })
	if got := n.ad.BroadcastFailures(); got != refused {
		t.Errorf("BroadcastFailures = %d, want %d", got, refused)
	}
}

// The publisher writes entries as the library does: the same fields, the
// same data, for the same broadcast.
func TestPipelinedEntriesMatchTheLibrarys(t *testing.T) {
	f := newFleet(t, fleetOpts{n: 1, window: time.Minute})
	a, ok := f.nodes[0].nsp.Adapter().(*streamsAdapter)
	if !ok {
		t.Fatalf("adapter is %T", f.nodes[0].nsp.Adapter())
	}
	packet := func() *parser.Packet {
		return &parser.Packet{Type: parser.EVENT, Data: []any{"ev", map[string]any{"seq": 1, "text": "é\u2028<x>"}}}
	}
	opts := &socket.BroadcastOptions{Rooms: types.NewSet(socket.Room("account:a")),
		Except: types.NewSet(socket.Room("user:u")), Flags: &socket.BroadcastFlags{}}
	off, err := a.PublishAndReturnOffset(&adapter.ClusterMessage{Type: adapter.BROADCAST,
		Data: &adapter.BroadcastMessage{Packet: packet(), Opts: adapter.EncodeOptions(opts)}})
	if err != nil {
		t.Fatal(err)
	}
	lib, err := f.rdb.XRange(context.Background(), f.prefix+"socket.io", string(off), string(off)).Result()
	if err != nil || len(lib) != 1 {
		t.Fatalf("the library's entry: %v %v", lib, err)
	}
	ours, err := a.entry(packet(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(ours) != len(lib[0].Values) {
		t.Fatalf("fields: ours %v, the library's %v", ours, lib[0].Values)
	}
	for k, v := range lib[0].Values {
		if ours[k] != v {
			t.Errorf("field %q: ours %q, the library's %q", k, ours[k], v)
		}
	}
	if _, err := a.entry(&parser.Packet{Type: parser.EVENT, Data: []any{"ev", []byte{1, 2}}}, opts); err == nil {
		t.Error("a packet with binary data must be left to the library's encoding")
	}
}

// holdReader keeps the stream reader from reading where the stream ends
// until release is closed.
func holdReader(release <-chan struct{}) Option {
	return func(c *config) error {
		c.beforeTail = func() { <-release }
		return nil
	}
}

// Broadcasts appended before the stream reader knows where it starts (it
// starts at the stream's end, after them) are still delivered here, once:
// those of a lone Broadcast and those of the publisher alike.
func TestBroadcastsBeforeTheReaderStartsAreDelivered(t *testing.T) {
	release := make(chan struct{})
	m := miniredis.RunT(t)
	n := newNode(t, m.Addr(), randomPrefix(t),
		fleetOpts{window: time.Minute, kind: Streams, adOpts: []Option{holdReader(release)}})
	defer n.close()
	c := dial(t, n.http.URL, map[string]any{"token": "ok", "rooms": []any{"account:a"}})

	n.emit("account:a", map[string]any{"seq": 0}) // a lone Broadcast: appended from this goroutine
	appended := make(chan error, 1)
	n.broadcastAsync("account:a", 1, func(err error) { appended <- err }) // through the publisher
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher never appended")
	}
	if got := c.seqs(); len(got) != 0 {
		t.Fatalf("delivered %v before the reader started", got)
	}

	close(release)
	n.emit("account:a", map[string]any{"seq": 2}) // read by the reader as usual
	eventually(t, 5*time.Second, func() error { return contiguous(c.seqs(), 0, 3) })
	time.Sleep(200 * time.Millisecond)
	if err := contiguous(c.seqs(), 0, 3); err != nil {
		t.Fatalf("later: %v (delivered twice?)", err)
	}
}
