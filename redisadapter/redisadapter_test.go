package redisadapter

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

// payloads are what the Hub emits: the router decodes event fields with
// encoding/json, so values are string, bool, float64, nil, []any and
// map[string]any.
func payloads(t *testing.T) []map[string]any {
	t.Helper()
	raw := []string{
		`{"conversation_id":"c-1","message_id":"m-1","sender_type":"contact","message_body":"héllo 👋 \"quoted\" \\ back\nslash","is_private":false,"created_at":"2026-01-02T03:04:05.123Z"}`,
		`{"unassigned_count":0,"oldest_waiting_seconds":31.5,"negative":-7,"big":9007199254740991,"tiny":1e-9}`,
		`{"labels":["vip","","日本語"],"priority":null,"nested":{"a":[1,true,null,{"b":"c"}]},"empty_list":[],"empty_obj":{}}`,
		`{"status":"open","assignee_id":"","looks_numeric":"0012","brace":"{not json","bool":true}`,
	}
	out := make([]map[string]any, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal([]byte(r), &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestPayloadsSurviveEveryKind: what a client of another instance receives
// equals what a client of the emitting instance receives, which equals the
// payload emitted (the library encodes MessagePack for pubsub and sharded,
// JSON or MessagePack for streams).
func TestPayloadsSurviveEveryKind(t *testing.T) {
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			f := newFleet(t, fleetOpts{n: 2, window: time.Minute, kind: kind, needReal: kind == Sharded})
			local := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
			remote := dial(t, f.nodes[1].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
			time.Sleep(100 * time.Millisecond)
			want := payloads(t)
			for _, p := range want {
				f.nodes[0].emit("r", p)
			}
			for name, c := range map[string]*client{"local": local, "remote": remote} {
				eventually(t, 3*time.Second, func() error {
					if n := len(c.received()); n != len(want) {
						return fmt.Errorf("%s got %d of %d", name, n, len(want))
					}
					return nil
				})
				for i, r := range c.received() {
					if !reflect.DeepEqual(r.payload, want[i]) {
						t.Errorf("%s payload %d:\n got %#v\nwant %#v", name, i, r.payload, want[i])
					}
				}
			}
		})
	}
}

func TestStreamID(t *testing.T) {
	for _, bad := range []string{"", "1", "a-1", "1-b", "-1", "1-", "1-2-3", "18446744073709551616-0"} {
		if _, ok := parseID(bad); ok {
			t.Errorf("parseID(%q) accepted", bad)
		}
	}
	a, _ := parseID("1700000000000-5")
	b, _ := parseID("1700000000000-12")
	c, _ := parseID("1700000000001-0")
	if !a.less(b) || !b.less(c) || c.less(a) || a.less(a) {
		t.Error("ordering is wrong")
	}
	if a.String() != "1700000000000-5" || a.next().String() != "1700000000000-6" {
		t.Errorf("String/next: %s %s", a, a.next())
	}
	if maxID(a, c) != c || maxID(c, a) != c {
		t.Error("maxID")
	}
	last := streamID{ms: 5, seq: ^uint64(0)}
	if last.next() != (streamID{ms: 6}) {
		t.Errorf("next of the last sequence: %v", last.next())
	}
}

func TestLocalOptionsKeepsTheOriginal(t *testing.T) {
	orig := &socket.BroadcastOptions{Rooms: types.NewSet[socket.Room]("r"), Except: types.NewSet[socket.Room]("x"),
		Flags: &socket.BroadcastFlags{Broadcast: true}}
	lo := localOptions(orig, []socket.Room{"sid"})
	if !lo.Flags.Local || !lo.Flags.Broadcast || !lo.Except.Has("x") || !lo.Except.Has("sid") || !lo.Rooms.Has("r") {
		t.Fatalf("local options: %+v %+v", lo.Flags, lo.Except.Keys())
	}
	if orig.Flags.Local || orig.Except.Has("sid") {
		t.Fatal("the original options were changed")
	}
}

func TestOptionsAndKinds(t *testing.T) {
	for _, s := range []string{"", "streams", "STREAMS", " pubsub ", "sharded"} {
		if _, err := ParseKind(s); err != nil {
			t.Errorf("ParseKind(%q): %v", s, err)
		}
	}
	if _, err := ParseKind("kafka"); err == nil {
		t.Error("ParseKind(kafka) accepted")
	}
	if !Streams.SupportsRecovery() || PubSub.SupportsRecovery() || Sharded.SupportsRecovery() {
		t.Error("SupportsRecovery")
	}
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	defer rdb.Close()
	for _, bad := range []Option{WithKind("x"), WithKeyPrefix("a b"), WithKeyPrefix("a#"), WithRetentionMargin(-1),
		WithMaxLen(-1), WithMaxReplay(0), WithReadBlock(time.Millisecond), WithTrimInterval(0), WithLogger(nil), WithMetrics(nil)} {
		if _, err := New(rdb, bad); err == nil {
			t.Error("a bad option was accepted")
		}
	}
	if _, err := New(nil); err == nil {
		t.Error("a nil client was accepted")
	}
	a, err := New(rdb, WithKind(PubSub))
	if err != nil || a.Kind() != PubSub {
		t.Fatalf("New: %v %v", a, err)
	}
	_ = a.Close()
}

// TestIntactAfter covers the decision to recover after trimming.
func TestIntactAfter(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	cfg := defaultConfig()
	h := &streamsHub{cfg: cfg, rdb: rdb, stream: "s"}
	ctx := context.Background()
	now := time.Now()
	disc := now.Add(-5 * time.Second)

	ok, err := h.intactAfter(ctx, streamID{ms: 1}, disc)
	if err != nil || !ok {
		t.Fatalf("empty stream: %v %v", ok, err)
	}
	add := func(at time.Time) streamID {
		id := streamID{ms: uint64(at.UnixMilli())}
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", ID: id.String(), Values: []any{"k", "v"}}).Err(); err != nil {
			t.Fatal(err)
		}
		return id
	}
	old := add(now.Add(-3 * time.Minute))
	recent := add(now.Add(-10 * time.Second))
	for _, tc := range []struct {
		name string
		from streamID
		want bool
	}{
		{"offset is the head", old, true},
		{"offset after the head", recent, true},
		{"offset before a head older than disconnect-margin", streamID{ms: 1}, true},
	} {
		if ok, err := h.intactAfter(ctx, tc.from, disc); err != nil || ok != tc.want {
			t.Errorf("%s: %v %v", tc.name, ok, err)
		}
	}
	// Trim up to the recent entry: the head is now newer than the disconnect
	// minus the margin, so an offset before it may have lost entries.
	if err := rdb.XTrimMinID(ctx, "s", recent.String()).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.intactAfter(ctx, old, disc); ok {
		t.Error("recoverable although entries after the offset were trimmed")
	}
	if ok, _ := h.intactAfter(ctx, recent, disc); !ok {
		t.Error("not recoverable from the head itself")
	}
}

func TestCheckReportsRedisDown(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	a, err := New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Check(context.Background()); err != nil {
		t.Fatalf("Check with Redis up: %v", err)
	}
	m.Close()
	if err := a.Check(context.Background()); err == nil {
		t.Fatal("Check with Redis down passed")
	}
}
