package loadclient

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/turumba/realtime/internal/loadstats"
	"github.com/turumba/realtime/internal/sio"
)

func TestLayout(t *testing.T) {
	for _, l := range []Layout{{1000, 10, 5}, {1001, 10, 5}, {7, 3, 2}, {5, 5, 1}, {10, 1, 3}} {
		if err := l.Validate(); err != nil {
			t.Fatal(err)
		}
		accounts := make([]int, l.Accounts)
		convs := map[[2]int]int{}
		for i := 0; i < l.Clients; i++ {
			a, c := l.Account(i), l.Conversation(i)
			accounts[a]++
			convs[[2]int{a, c}]++
			if c >= l.Conversations(a) {
				t.Fatalf("%+v: client %d in conversation %d of %d", l, i, c, l.Conversations(a))
			}
		}
		for a, n := range accounts {
			if n != l.AccountSize(a) {
				t.Fatalf("%+v: account %d has %d clients, AccountSize says %d", l, a, n, l.AccountSize(a))
			}
		}
		for k, n := range convs {
			if n > l.ConvSize {
				t.Fatalf("%+v: conversation %v has %d agents", l, k, n)
			}
		}
	}
	for _, bad := range []Layout{{0, 1, 1}, {5, 6, 1}, {5, 0, 1}, {5, 1, 0}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:3299", "http://127.0.0.5:1", "http://[::1]:80", "http://localhost:3299", "amqp://guest:guest@127.0.0.1:5672"} {
		if err := CheckLoopback(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://10.0.0.1:3299", "http://example.com", "http://0.0.0.0:3299", "amqp://guest@192.168.0.1", "http://", "::"} {
		if err := CheckLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestEventBodies(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 89, time.UTC)
	var ev map[string]any
	if err := json.Unmarshal(AppendAccountEvent(nil, 3, 7, 42, at), &ev); err != nil {
		t.Fatal(err)
	}
	if ev["account_id"] != "acct-3" || ev["conversation_id"] != "conv-3-7" || ev["contact_identifier"] != "42" ||
		ev["created_at"] != "2026-03-04T05:06:07.000000089Z" {
		t.Fatalf("account event %v", ev)
	}
	ev = nil
	if err := json.Unmarshal(AppendMessageEvent(nil, 1, 2, 9, at), &ev); err != nil {
		t.Fatal(err)
	}
	if ev["conversation_id"] != "conv-1-2" || ev["message_id"] != "9" || ev["is_private"] != false {
		t.Fatalf("message event %v", ev)
	}
}

// deliver feeds the client what the server would send for one event.
func deliver(t *testing.T, c *Client, event string, fields map[string]any) {
	t.Helper()
	payload, _ := json.Marshal(fields)
	if err := c.handle(sio.AppendEvent(nil, Namespace, -1, event, payload, []byte(`"offset-1"`))); err != nil {
		t.Fatal(err)
	}
}

// The client's books: latency and distinct deliveries per phase, duplicates
// detected per stream, late deliveries charged to the phase of their send.
func TestClientCountsDeliveries(t *testing.T) {
	rec := &Recorder{}
	c := &Client{N: 1, rec: rec}
	before := time.Now()
	deliver(t, c, EventAccount, map[string]any{"contact_identifier": "1", "created_at": time.Now().UTC().Format(time.RFC3339Nano)})
	if rec.Stale.Load() != 1 {
		t.Fatal("an event sent before any phase is not stale")
	}
	p1 := rec.Begin("one")
	stamp := func() string { return string(sio.AppendTime(nil, time.Now()))[1:31] }
	for seq := 1; seq <= 10; seq++ {
		deliver(t, c, EventAccount, map[string]any{"contact_identifier": strconv.Itoa(seq), "created_at": stamp()})
	}
	deliver(t, c, EventAccount, map[string]any{"contact_identifier": "3", "created_at": stamp()}) // duplicate
	deliver(t, c, EventConversation, map[string]any{"message_id": 3, "created_at": stamp()})      // another stream
	deliver(t, c, EventUpdated, map[string]any{"last_message_at": stamp()})
	deliver(t, c, "agent:presence", map[string]any{"user_id": "u"})
	deliver(t, c, EventAccount, map[string]any{"contact_identifier": "x", "created_at": stamp()})
	lateStamp := stamp()
	p2 := rec.Begin("two")
	deliver(t, c, EventAccount, map[string]any{"contact_identifier": "11", "created_at": lateStamp}) // sent in one
	deliver(t, c, EventAccount, map[string]any{"contact_identifier": "12", "created_at": stamp()})

	if got := p1.Distinct.Load(); got != 13 {
		t.Errorf("phase one: %d distinct deliveries, want 13", got)
	}
	if p1.Dups.Load() != 1 || p2.Dups.Load() != 0 || p2.Distinct.Load() != 1 {
		t.Errorf("dups %d/%d, phase two distinct %d", p1.Dups.Load(), p2.Dups.Load(), p2.Distinct.Load())
	}
	if rec.Other.Load() != 1 || rec.BadEvents.Load() != 1 {
		t.Errorf("other %d bad %d", rec.Other.Load(), rec.BadEvents.Load())
	}
	s := p1.Latency.Snapshot()
	if s.N != 14 || time.Duration(s.Max) > time.Since(before) {
		t.Errorf("latency: %d samples, max %v", s.N, time.Duration(s.Max))
	}

	var sent loadstats.SeqSet
	for seq := uint64(1); seq <= 14; seq++ {
		sent.Add(seq)
	}
	missing, extra := c.Missing(&sent, nil)
	if missing != 2 || extra != 0 { // 13 and 14 were published, never received
		t.Errorf("missing %d extra %d", missing, extra)
	}
	p1.Expected.Store(20)
	if p1.Missing() != 7 {
		t.Errorf("phase missing %d", p1.Missing())
	}
}

func TestClientHandlesControlMessages(t *testing.T) {
	c := &Client{rec: &Recorder{}}
	if err := c.handle([]byte("41/agents,")); err == nil {
		t.Error("a namespace disconnect does not end the client")
	}
	if err := c.handle([]byte("1")); err == nil {
		t.Error("an engine.io close does not end the client")
	}
	if err := c.handle([]byte("6")); err != nil {
		t.Error(err)
	}
}

func TestDriverRecipients(t *testing.T) {
	l := Layout{Clients: 1000, Accounts: 10, ConvSize: 5}
	var clients []*Client
	for i := 0; i < l.Clients; i++ {
		clients = append(clients, &Client{N: i, Account: l.Account(i), Conv: l.Conversation(i)})
	}
	if got := NewDriver(l, KindAccount, nil, clients).RecipientsPerEvent(); got != 100 {
		t.Errorf("account events: %v recipients", got)
	}
	if got := NewDriver(l, KindConversation, nil, clients).RecipientsPerEvent(); got != 105 {
		t.Errorf("conversation events: %v recipients", got)
	}
	if got := NewDriver(l, KindAccount, nil, clients[:500]).RecipientsPerEvent(); got != 50 {
		t.Errorf("half connected: %v recipients", got)
	}
}
