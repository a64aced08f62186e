package fastpath

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/zishang520/socket.io/parsers/socket/v3/parser"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

// recoveryServer is a Socket.IO server whose namespaces get their adapter
// from c, with connection state recovery over window (0: off).
func recoveryServer(t *testing.T, window time.Duration, c socket.AdapterConstructor) *socket.Server {
	t.Helper()
	opts := socket.DefaultServerOptions()
	if window > 0 {
		rec := socket.DefaultConnectionStateRecovery()
		rec.SetMaxDisconnectionDuration(window.Milliseconds())
		opts.SetConnectionStateRecovery(rec)
	}
	if c != nil {
		opts.SetAdapter(c)
	}
	return socket.NewServer(nil, opts)
}

// memAdapter is the in-memory adapter of a fresh namespace of a server
// with recovery over window, built through the Constructor as the Hub does.
func memAdapter(t *testing.T, window time.Duration, maxPackets int) *memoryAdapter {
	t.Helper()
	srv := recoveryServer(t, window, &Constructor{MaxPackets: maxPackets})
	ix, ok := srv.Of("/t", nil).Adapter().(*indexed)
	if !ok {
		t.Fatalf("the Constructor built %T, want *indexed", srv.Of("/t", nil).Adapter())
	}
	a, ok := ix.Adapter.(*memoryAdapter)
	if !ok {
		t.Fatalf("the Constructor without Inner built %T, want *memoryAdapter", ix.Adapter)
	}
	return a
}

// target is a broadcast's rooms and exceptions.
type target struct{ rooms, except []socket.Room }

func (tg target) opts() *socket.BroadcastOptions {
	return &socket.BroadcastOptions{Rooms: types.NewSet(tg.rooms...), Except: types.NewSet(tg.except...), Flags: &socket.BroadcastFlags{}}
}

// broadcast emits event "ev" with args through the adapter a namespace's
// BroadcastOperator would call, and returns the packet's data as sent.
func broadcast(a socket.Adapter, tg target, args ...any) []any {
	p := &parser.Packet{Type: parser.EVENT, Data: append([]any{"ev"}, args...)}
	a.Broadcast(p, tg.opts())
	return p.Data.([]any)
}

// offsetOf is the recovery offset a broadcast's data carries: its last
// element, a string of the adapter's prefix.
func offsetOf(t *testing.T, a *memoryAdapter, data []any) string {
	t.Helper()
	off, ok := data[len(data)-1].(string)
	if !ok || !strings.HasPrefix(off, a.prefix) {
		t.Fatalf("data %v does not end with an offset of prefix %q", data, a.prefix)
	}
	return off
}

func persist(a socket.Adapter, pid string, rooms ...socket.Room) {
	a.PersistSession(&socket.SessionToPersist{Sid: socket.SocketId("sid-" + pid), Pid: socket.PrivateSessionId(pid),
		Rooms: types.NewSet(rooms...), Data: pid})
}

func TestRecoveryOffsetsOnlyOnRecoverablePackets(t *testing.T) {
	a := memAdapter(t, time.Minute, 0)
	seen := map[string]bool{}
	for i := range 3 {
		data := broadcast(a, target{rooms: []socket.Room{"r"}}, i)
		if len(data) != 3 {
			t.Fatalf("event %d: data %v, want [ev %d offset]", i, data, i)
		}
		off := offsetOf(t, a, data)
		if seen[off] {
			t.Fatalf("offset %q given twice", off)
		}
		seen[off] = true
	}

	id := uint64(7)
	withAck := &parser.Packet{Type: parser.EVENT, Id: &id, Data: []any{"ev", "ack"}}
	a.Broadcast(withAck, target{}.opts())
	volatile := &parser.Packet{Type: parser.EVENT, Data: []any{"ev", "volatile"}}
	vopts := target{}.opts()
	vopts.Flags.Volatile = true
	a.Broadcast(volatile, vopts)
	binary := &parser.Packet{Type: parser.BINARY_EVENT, Data: []any{"ev", "binary"}}
	a.Broadcast(binary, target{}.opts())
	for _, p := range []*parser.Packet{withAck, volatile, binary} {
		if got := p.Data.([]any); len(got) != 2 {
			t.Errorf("%v: data %v got an offset; only events without ack, not volatile, are recoverable", p.Data, got)
		}
	}
	if len(a.packets) != 3 {
		t.Errorf("kept %d packets, want the 3 recoverable ones", len(a.packets))
	}
}

func TestRecoveryOffWithoutConnectionStateRecovery(t *testing.T) {
	a := memAdapter(t, 0, 0)
	data := broadcast(a, target{}, "x")
	if len(data) != 2 {
		t.Errorf("recovery off: data %v got an offset", data)
	}
	persist(a, "p", "r")
	if s, err := a.RestoreSession("p", a.prefix+"1"); s != nil || err != nil {
		t.Errorf("recovery off: RestoreSession = %v, %v; want nil", s, err)
	}
	if len(a.packets) != 0 || len(a.sessions) != 0 {
		t.Errorf("recovery off: kept %d packets and %d sessions", len(a.packets), len(a.sessions))
	}
}

// restoreScenario broadcasts to every kind of target after the offset of a
// first packet and returns that offset and the data of each broadcast a
// session in rooms {sid-p, a, b} must get back, in order.
func restoreScenario(t *testing.T, a socket.Adapter, offset func([]any) string) (string, [][]any) {
	t.Helper()
	first := broadcast(a, target{rooms: []socket.Room{"a"}}, "before")
	persist(a, "p", "sid-p", "a", "b")
	var want [][]any
	for _, c := range []struct {
		tg   target
		name string
		in   bool
	}{
		{target{rooms: []socket.Room{"a"}}, "to a", true},
		{target{rooms: []socket.Room{"z"}}, "to z", false},
		{target{}, "to all", true},
		{target{rooms: []socket.Room{"a", "b"}}, "to a and b", true},
		{target{rooms: []socket.Room{"b"}, except: []socket.Room{"a"}}, "to b except a", false},
		{target{rooms: []socket.Room{"b"}, except: []socket.Room{"z"}}, "to b except z", true},
		{target{except: []socket.Room{"sid-p"}}, "to all except the socket", false},
		{target{rooms: []socket.Room{"sid-p"}}, "to the socket", true},
		{target{rooms: []socket.Room{"z", "b"}}, "to z and b", true},
	} {
		data := broadcast(a, c.tg, c.name)
		if c.in {
			want = append(want, data)
		}
	}
	return offset(first), want
}

func TestRestoreSessionReturnsWhatItsRoomsMissed(t *testing.T) {
	a := memAdapter(t, time.Minute, 0)
	off, want := restoreScenario(t, a, func(d []any) string { return offsetOf(t, a, d) })
	s, err := a.RestoreSession("p", off)
	if err != nil || s == nil {
		t.Fatalf("RestoreSession = %v, %v", s, err)
	}
	if s.Sid != "sid-p" || s.Pid != "p" || s.Data != "p" || !s.Rooms.Has("a") {
		t.Errorf("session %+v is not the one persisted", s.SessionToPersist)
	}
	if !reflect.DeepEqual(s.MissedPackets, toAny(want)) {
		t.Errorf("missed packets:\n got %v\nwant %v", s.MissedPackets, want)
	}

	// From the middle: what follows that packet only.
	mid := offsetOf(t, a, want[1])
	if s, _ := a.RestoreSession("p", mid); s == nil || !reflect.DeepEqual(s.MissedPackets, toAny(want[2:])) {
		t.Errorf("from %s: %v, want %v", mid, s, want[2:])
	}
	// From the last packet: the session, nothing missed.
	last := offsetOf(t, a, want[len(want)-1])
	if s, _ := a.RestoreSession("p", last); s == nil || len(s.MissedPackets) != 0 {
		t.Errorf("from the last offset: %+v, want the session with nothing missed", s)
	}
}

func toAny(packets [][]any) []any {
	out := make([]any, len(packets))
	for i, p := range packets {
		out[i] = p
	}
	return out
}

// The library's session-aware adapter is the reference: the same scenario
// restores the same events (offsets aside).
func TestRestoreSessionAgreesWithTheLibrary(t *testing.T) {
	lib := recoveryServer(t, time.Minute, nil).Of("/lib", nil).Adapter()
	libOff, libWant := restoreScenario(t, lib, func(d []any) string { return d[len(d)-1].(string) })
	libSession, err := lib.RestoreSession("p", libOff)
	if err != nil || libSession == nil {
		t.Fatalf("the library's RestoreSession = %v, %v", libSession, err)
	}
	ours := memAdapter(t, time.Minute, 0)
	off, want := restoreScenario(t, ours, func(d []any) string { return offsetOf(t, ours, d) })
	s, _ := ours.RestoreSession("p", off)
	if s == nil {
		t.Fatal("our RestoreSession = nil")
	}
	if names(s.MissedPackets) != names(libSession.MissedPackets) || names(toAny(want)) != names(toAny(libWant)) {
		t.Errorf("restored\n ours    %s\n library %s", names(s.MissedPackets), names(libSession.MissedPackets))
	}
}

// names lists the events' first arguments (the scenario's case names).
func names(packets []any) string {
	var b strings.Builder
	for _, p := range packets {
		fmt.Fprintf(&b, "%v;", p.([]any)[1])
	}
	return b.String()
}

func TestRestoreSessionRefusesWhatItCannotRestoreWhole(t *testing.T) {
	a := memAdapter(t, time.Minute, 0)
	first := offsetOf(t, a, broadcast(a, target{}, 0))
	broadcast(a, target{}, 1)
	persist(a, "p", "r")
	other := memAdapter(t, time.Minute, 0) // another process: another prefix
	otherOff := offsetOf(t, other, broadcast(other, target{}, 0))
	if a.prefix == other.prefix {
		t.Fatalf("two adapters share the prefix %q", a.prefix)
	}
	seq := strings.TrimPrefix(first, a.prefix)
	for _, c := range []struct{ name, pid, offset string }{
		{"unknown session", "nobody", first},
		{"offset of another process", "p", otherOff},
		{"same sequence, another prefix", "p", other.prefix + seq},
		{"unknown offset", "p", a.prefix + "zz"},
		{"not base 36", "p", a.prefix + "!"},
		{"no prefix", "p", seq},
		{"empty offset", "p", ""},
	} {
		if s, err := a.RestoreSession(socket.PrivateSessionId(c.pid), c.offset); s != nil || err != nil {
			t.Errorf("%s (%q): RestoreSession = %+v, %v; want nil", c.name, c.offset, s, err)
		}
	}
	if s, _ := a.RestoreSession("p", first); s == nil || len(s.MissedPackets) != 1 {
		t.Errorf("the valid offset: %+v, want the session with 1 packet", s)
	}
}

func TestRecoveryKeepsAtMostMaxPackets(t *testing.T) {
	a := memAdapter(t, time.Minute, 3)
	persist(a, "p", "r")
	var offs []string
	var data [][]any
	for i := range 5 {
		d := broadcast(a, target{rooms: []socket.Room{"r"}}, i)
		data = append(data, d)
		offs = append(offs, offsetOf(t, a, d))
	}
	if len(a.packets) != 3 {
		t.Fatalf("kept %d packets, want 3", len(a.packets))
	}
	for _, off := range offs[:2] {
		if s, _ := a.RestoreSession("p", off); s != nil {
			t.Errorf("offset %s was trimmed (older than the 3 kept): got %d packets, want nil", off, len(s.MissedPackets))
		}
	}
	if s, _ := a.RestoreSession("p", offs[2]); s == nil || !reflect.DeepEqual(s.MissedPackets, toAny(data[3:])) {
		t.Errorf("from the oldest kept offset: %+v, want packets 3 and 4", s)
	}
}

func TestRecoveryDefaultMaxPackets(t *testing.T) {
	if a := memAdapter(t, time.Minute, 0); a.maxPackets != 100_000 {
		t.Errorf("MaxPackets 0 keeps %d, want 100,000", a.maxPackets)
	}
}

// The time-based parts run in a synctest bubble: time.Now is the bubble's
// and time.Sleep advances it at once.
func TestRecoveryTrimsPacketsOlderThanTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := memAdapter(t, 10*time.Second, 0)
		old := offsetOf(t, a, broadcast(a, target{}, "old"))
		time.Sleep(6 * time.Second)
		mid := broadcast(a, target{}, "mid")
		time.Sleep(5 * time.Second) // old is 11 s old, mid 5 s
		persist(a, "p", "r")
		last := broadcast(a, target{}, "last") // keeping it trims
		if len(a.packets) != 2 {
			t.Fatalf("kept %d packets, want mid and last", len(a.packets))
		}
		if s, _ := a.RestoreSession("p", old); s != nil {
			t.Errorf("an offset older than the window: %+v, want nil", s)
		}
		s, _ := a.RestoreSession("p", offsetOf(t, a, mid))
		if s == nil || !reflect.DeepEqual(s.MissedPackets, []any{last}) {
			t.Errorf("from mid: %+v, want [last]", s)
		}
	})
}

func TestRecoverySessionExpiresAfterTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := memAdapter(t, 10*time.Second, 0)
		off := offsetOf(t, a, broadcast(a, target{}, 0))
		persist(a, "p", "r")
		time.Sleep(10 * time.Second)
		if s, _ := a.RestoreSession("p", off); s == nil {
			t.Fatal("at exactly the window: nil, want the session")
		}
		time.Sleep(time.Millisecond)
		if s, _ := a.RestoreSession("p", off); s != nil {
			t.Errorf("past the window: %+v, want nil", s)
		}
	})
}

func TestRecoverySweepsSessionsPastTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := memAdapter(t, 10*time.Second, 0)
		persist(a, "gone", "r")
		time.Sleep(8 * time.Second)
		persist(a, "kept", "r") // a sweep (8 s after the adapter began): nothing is past the window
		time.Sleep(5 * time.Second)
		// 13 s: "gone" is 13 s old, "kept" 5 s; the last sweep was 5 s ago.
		off := offsetOf(t, a, broadcast(a, target{}, 0))
		if _, ok := a.sessions["gone"]; !ok {
			t.Fatal("swept 5 s after the last sweep: sweeps run when more than 5 s have passed")
		}
		if s, _ := a.RestoreSession("gone", off); s != nil {
			t.Errorf("a session past the window, not swept yet, was restored: %+v", s)
		}
		time.Sleep(time.Millisecond)
		broadcast(a, target{}, 1)
		if _, ok := a.sessions["gone"]; ok {
			t.Error("a session past the window was not swept")
		}
		if s, _ := a.RestoreSession("kept", off); s == nil || len(s.MissedPackets) != 1 {
			t.Errorf("the session inside the window: %+v, want it with 1 packet", s)
		}
	})
}
