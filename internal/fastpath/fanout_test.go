package fastpath

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zishang520/socket.io/servers/engine/v3"
	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/turumba/realtime/internal/sio"
)

// testServer serves namespace /t over our websocket transport and the
// Constructor's adapters. A socket joins the rooms listed in its CONNECT
// auth ({"rooms": [...]}) and is then sent "ready".
type testServer struct {
	srv   *socket.Server
	nsp   socket.Namespace
	ctor  *Constructor
	addr  string
	slows chan string // reasons given to Hooks.SlowClient

	mu     sync.Mutex
	counts Counts // summed over every delivery
}

func newTestServer(t *testing.T, limits Limits) *testServer {
	t.Helper()
	ts := &testServer{slows: make(chan string, 16)}
	opts := socket.DefaultServerOptions()
	b := &Builder{Limits: limits, Hooks: Hooks{SlowClient: func(reason, _ string) { ts.slows <- reason }}}
	opts.SetTransports(types.NewSet[transports.TransportCtor](engine.Polling, b))
	ts.ctor = &Constructor{Delivered: func(c Counts) {
		ts.mu.Lock()
		ts.counts.Websocket += c.Websocket
		ts.counts.Library += c.Library
		ts.mu.Unlock()
	}}
	opts.SetAdapter(ts.ctor)
	ts.srv = socket.NewServer(nil, opts)
	ts.nsp = ts.srv.Of("/t", nil)
	_ = ts.nsp.On("connection", func(args ...any) {
		s := args[0].(*socket.Socket)
		rooms, _ := s.Handshake().Auth["rooms"].([]any)
		for _, r := range rooms {
			s.Join(socket.Room(r.(string)))
		}
		_ = s.Emit("ready")
	})
	hs := httptest.NewServer(ts.srv.ServeHandler(nil))
	ts.addr = hs.Listener.Addr().String()
	t.Cleanup(func() {
		ts.srv.Close(nil)
		hs.Close()
	})
	return ts
}

func (ts *testServer) delivered() Counts {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.counts
}

func (ts *testServer) fanout() *Fanout { return ts.nsp.Adapter().(*indexed).f }

// socket is the server side of a client.
func (ts *testServer) socket(t *testing.T, c *wsClient) *socket.Socket {
	t.Helper()
	s, ok := ts.nsp.Sockets().Load(socket.SocketId(c.sid))
	if !ok {
		t.Fatalf("no socket %s", c.sid)
	}
	return s
}

// waitGone waits until the server has removed c's socket (after the
// library persisted its session and left its rooms).
func (ts *testServer) waitGone(t *testing.T, c *wsClient) {
	t.Helper()
	waitFor(t, "the server to drop socket "+c.sid, func() bool {
		_, ok := ts.nsp.Sockets().Load(socket.SocketId(c.sid))
		return !ok
	})
}

// waitFor polls cond every millisecond for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// wsClient is a raw websocket Socket.IO client of namespace /t.
type wsClient struct {
	conn net.Conn
	fr   sio.FrameReader
	mask [4]byte
	sid  string
}

// dial connects a client in rooms and waits until the server has put it
// there.
func dial(t *testing.T, ts *testServer, rooms ...string) *wsClient {
	t.Helper()
	return dialWith(t, ts, net.Dialer{}, rooms...)
}

// dialWith is dial with d's settings.
func dialWith(t *testing.T, ts *testServer, d net.Dialer, rooms ...string) *wsClient {
	t.Helper()
	conn, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{conn: conn, mask: [4]byte{1, 2, 3, 4}}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br, err := sio.ClientHandshake(conn, ts.addr, "/socket.io/?EIO=4&transport=websocket", nil, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	c.fr = sio.FrameReader{R: br, Max: 8 << 20}
	if msg := c.message(t); msg[0] != sio.EIOOpen {
		t.Fatalf("engine.io open: got %q", msg)
	}
	auth, _ := json.Marshal(map[string]any{"rooms": rooms})
	c.send(t, sio.AppendPacket(nil, sio.Connect, "/t", -1, auth))
	p := c.packet(t)
	if p.Type != sio.Connect {
		t.Fatalf("CONNECT answered with %q", p.Data)
	}
	sid, _ := sio.Field(p.Data, "sid")
	c.sid = strings.Trim(string(sid), `"`)
	if name, _ := c.event(t); name != "ready" {
		t.Fatalf("first event %q, want ready", name)
	}
	return c
}

func (c *wsClient) send(t *testing.T, msg []byte) {
	t.Helper()
	if _, err := c.conn.Write(sio.AppendFrame(nil, sio.OpText, msg, &c.mask)); err != nil {
		t.Fatal(err)
	}
}

// message returns the next Engine.IO message, answering pings.
func (c *wsClient) message(t *testing.T) []byte {
	t.Helper()
	for {
		op, p, err := c.fr.Next()
		if err != nil {
			t.Fatalf("client %s: %v", c.sid, err)
		}
		switch {
		case op == sio.OpText && len(p) == 1 && p[0] == sio.EIOPing:
			c.send(t, []byte{sio.EIOPong})
		case op == sio.OpText && len(p) > 0:
			return slices.Clone(p)
		case op == sio.OpClose:
			t.Fatalf("client %s: closed by the server", c.sid)
		}
	}
}

// packet returns the next Socket.IO packet of namespace /t.
func (c *wsClient) packet(t *testing.T) sio.Packet {
	t.Helper()
	for {
		msg := c.message(t)
		if p, err := sio.ParsePacket(msg); err == nil && string(p.Nsp) == "/t" {
			return p
		}
	}
}

// event returns the next event's name and its first argument (raw JSON).
func (c *wsClient) event(t *testing.T) (string, string) {
	t.Helper()
	p := c.packet(t)
	if p.Type != sio.Event {
		t.Fatalf("client %s: packet %c %s, want an event", c.sid, p.Type, p.Data)
	}
	name, args, err := sio.SplitEvent(p.Data, true)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := sio.FirstValue(args)
	return string(name), string(first)
}

// until returns the first arguments of the events before the event named
// end.
func (c *wsClient) until(t *testing.T, end string) []string {
	t.Helper()
	var got []string
	for {
		name, arg := c.event(t)
		if name == end {
			return got
		}
		got = append(got, arg)
	}
}

func TestFanoutIndex(t *testing.T) {
	srv := recoveryServer(t, 0, nil)
	f := NewFanout(srv.Of("/idx", nil), nil)
	f.Add("a", []socket.Room{"r1", "r2"})
	f.Add("b", []socket.Room{"r1"})
	f.Add("c", []socket.Room{"r1", "r3"})
	f.Add("a", []socket.Room{"r1", "r4"}) // r1 again: no second entry
	check := func(when string, want map[socket.Room][]socket.SocketId) {
		t.Helper()
		got := map[socket.Room][]socket.SocketId{}
		for name, r := range f.rooms {
			if r.name != name {
				t.Errorf("%s: room %s is named %s", when, name, r.name)
			}
			for i, m := range r.members {
				k := m.slotOf(r)
				if k < 0 {
					t.Errorf("%s: %s in room %s does not list it", when, m.id, name)
				} else if m.in[k].at != i {
					t.Errorf("%s: room %s: %s at %d, indexed at %d", when, name, m.id, i, m.in[k].at)
				}
				if f.members[m.id] != m {
					t.Errorf("%s: %s in room %s is not the indexed member", when, m.id, name)
				}
				got[name] = append(got[name], m.id)
			}
			slices.Sort(got[name])
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: rooms %v, want %v", when, got, want)
		}
	}
	check("added", map[socket.Room][]socket.SocketId{"r1": {"a", "b", "c"}, "r2": {"a"}, "r3": {"c"}, "r4": {"a"}})
	f.Del("a", "r1")
	f.Del("a", "r9")       // not in it
	f.Del("nobody", "r1")  // unknown
	f.DelAll("nobody too") // unknown
	check("a left r1", map[socket.Room][]socket.SocketId{"r1": {"b", "c"}, "r2": {"a"}, "r3": {"c"}, "r4": {"a"}})
	f.DelAll("c")
	check("c gone", map[socket.Room][]socket.SocketId{"r1": {"b"}, "r2": {"a"}, "r4": {"a"}})
	if _, ok := f.members["c"]; ok {
		t.Error("DelAll kept the member")
	}
	f.Del("a", "r2")
	f.Del("a", "r4")
	f.DelAll("b")
	check("all left", map[socket.Room][]socket.SocketId{})
	if _, ok := f.members["a"]; !ok {
		t.Error("Del of its last room forgot a socket that is still connected")
	}
	f.DelAll("a")
	if len(f.members) != 0 || len(f.rooms) != 0 {
		t.Errorf("empty index keeps %d members, %d rooms", len(f.members), len(f.rooms))
	}

	// Removing from the middle of a large room keeps every position right.
	for i := range 50 {
		f.Add(socket.SocketId(fmt.Sprint(i)), []socket.Room{"big"})
	}
	want := map[socket.Room][]socket.SocketId{}
	for i := range 50 {
		if i%3 == 0 {
			f.Del(socket.SocketId(fmt.Sprint(i)), "big")
		} else {
			want["big"] = append(want["big"], socket.SocketId(fmt.Sprint(i)))
		}
	}
	slices.Sort(want["big"])
	check("every third left", want)
}

func TestFanoutDeliversOnceToEachTarget(t *testing.T) {
	ts := newTestServer(t, DefaultLimits)
	a := dial(t, ts, "r1", "r2")
	b := dial(t, ts, "r1")
	c := dial(t, ts, "r2")
	d := dial(t, ts, "r3")
	start := ts.delivered()
	emit := func(op *socket.BroadcastOperator, n int) {
		t.Helper()
		if err := op.Emit("e", n); err != nil {
			t.Fatal(err)
		}
	}
	emit(ts.nsp.To("r1", "r2"), 1)                                  // a (in both) once, b, c
	emit(ts.nsp.To("r1").Except("r2"), 2)                           // b
	emit(ts.nsp.To(), 3)                                            // everyone
	emit(ts.nsp.To("r3", "r1").Except(socket.Room(b.sid)), 4)       // a, d: a socket's own room excludes it
	emit(ts.nsp.To("r9"), 5)                                        // nobody
	emit(ts.nsp.Except("r1"), 6)                                    // c, d
	emit(ts.nsp.To("r2", "r2", socket.Room(a.sid)).Except("r3"), 7) // a once, c
	for _, cl := range []*wsClient{a, b, c, d} {
		_ = ts.socket(t, cl).Emit("end") // after every broadcast on the same queue
	}
	for _, x := range []struct {
		c    *wsClient
		name string
		want []string
	}{
		{a, "a", []string{"1", "3", "4", "7"}},
		{b, "b", []string{"1", "2", "3"}},
		{c, "c", []string{"1", "3", "6", "7"}},
		{d, "d", []string{"3", "4", "6"}},
	} {
		if got := x.c.until(t, "end"); !reflect.DeepEqual(got, x.want) {
			t.Errorf("%s got %v, want %v", x.name, got, x.want)
		}
	}
	got := ts.delivered()
	if n := got.Websocket - start.Websocket; n != 14 || got.Library != start.Library {
		t.Errorf("deliveries: websocket %d, library %d; want 14 queued on our websocket writers and none through the library",
			n, got.Library-start.Library)
	}
}

func TestFanoutFollowsJoinsAndLeaves(t *testing.T) {
	ts := newTestServer(t, DefaultLimits)
	a := dial(t, ts, "r1")
	b := dial(t, ts, "r1")
	sa := ts.socket(t, a)
	sa.Join("r2")
	sa.Leave("r1")
	_ = ts.nsp.To("r1").Emit("e", 1)
	_ = ts.nsp.To("r2").Emit("e", 2)
	_ = sa.Emit("end")
	if got := a.until(t, "end"); !reflect.DeepEqual(got, []string{"2"}) {
		t.Errorf("a (left r1, joined r2) got %v, want [2]", got)
	}

	// A socket that disconnects is forgotten by the index.
	_ = a.conn.Close()
	ts.waitGone(t, a)
	f := ts.fanout()
	f.mu.Lock()
	_, member := f.members[socket.SocketId(a.sid)]
	_, r2 := f.rooms["r2"]
	f.mu.Unlock()
	if member || r2 {
		t.Errorf("after the disconnect: member %v, room r2 %v; want both gone", member, r2)
	}
	_ = ts.nsp.To("r1").Emit("e", 3)
	_ = ts.socket(t, b).Emit("end")
	if got := b.until(t, "end"); !reflect.DeepEqual(got, []string{"1", "3"}) {
		t.Errorf("b got %v, want [1 3]", got)
	}
}

func TestSealStopsEveryDelivery(t *testing.T) {
	ts := newTestServer(t, DefaultLimits)
	a := dial(t, ts, "r1")
	b := dial(t, ts, "r2")
	_ = ts.nsp.To("r1", "r2").Emit("e", 1)
	before := ts.delivered()
	ts.ctor.Seal()
	_ = ts.nsp.To("r1", "r2").Emit("e", 2)
	_ = ts.nsp.Emit("e", 3)
	for _, c := range []*wsClient{a, b} {
		_ = ts.socket(t, c).Emit("end") // direct emits are not broadcasts: they still go
		if got := c.until(t, "end"); !reflect.DeepEqual(got, []string{"1"}) {
			t.Errorf("%s got %v, want [1]: nothing after Seal", c.sid, got)
		}
	}
	if after := ts.delivered(); after != before {
		t.Errorf("deliveries after Seal: %+v -> %+v", before, after)
	}
}

func TestTargets(t *testing.T) {
	rooms := types.NewSet[socket.Room]("sid1", "account:a", "conv:a:1")
	opts := func(to, except []socket.Room) *socket.BroadcastOptions {
		return &socket.BroadcastOptions{Rooms: types.NewSet(to...), Except: types.NewSet(except...)}
	}
	for _, tc := range []struct {
		name string
		opts *socket.BroadcastOptions
		want bool
	}{
		{"to everyone", opts(nil, nil), true},
		{"to one of its rooms", opts([]socket.Room{"account:b", "conv:a:1"}, nil), true},
		{"to other rooms", opts([]socket.Room{"account:b"}, nil), false},
		{"except its own room", opts([]socket.Room{"conv:a:1"}, []socket.Room{"sid1"}), false},
		{"except another room", opts([]socket.Room{"conv:a:1"}, []socket.Room{"sid2"}), true},
		{"nil options", nil, true},
	} {
		if got := Targets(rooms, tc.opts); got != tc.want {
			t.Errorf("%s: got %v", tc.name, got)
		}
	}
	if Targets(nil, nil) {
		t.Error("a socket without rooms is included")
	}
}
