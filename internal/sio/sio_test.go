package sio

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func reader(b []byte, size int) *FrameReader {
	return &FrameReader{R: bufio.NewReaderSize(bytes.NewReader(b), size)}
}

func TestFrameRoundTrip(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 125, 126, 4000, 65535, 65536, 70000} {
		for _, mask := range []*[4]byte{nil, &key} {
			payload := bytes.Repeat([]byte("x"), n)
			for i := range payload {
				payload[i] = byte('a' + i%26)
			}
			frame := AppendFrame(nil, OpText, payload, mask)
			if mask != nil && n > 0 && bytes.Contains(frame, payload) {
				t.Fatalf("n=%d: masked frame carries the payload in clear", n)
			}
			fr := reader(frame, 4096)
			op, got, err := fr.Next()
			if err != nil || op != OpText || !bytes.Equal(got, payload) {
				t.Fatalf("n=%d masked=%v: op %d err %v, payload equal %v", n, mask != nil, op, err, bytes.Equal(got, payload))
			}
			if _, _, err := fr.Next(); err != io.EOF {
				t.Fatalf("n=%d: want EOF after the frame, got %v", n, err)
			}
		}
	}
}

func TestFramesInSequenceReuseBuffer(t *testing.T) {
	var stream []byte
	for i := 0; i < 100; i++ {
		stream = AppendFrame(stream, OpText, []byte(strings.Repeat("m", i)), nil)
	}
	fr := reader(stream, 512)
	for i := 0; i < 100; i++ {
		_, p, err := fr.Next()
		if err != nil || len(p) != i {
			t.Fatalf("frame %d: len %d err %v", i, len(p), err)
		}
	}
}

// A fragmented message is joined, and a ping between its fragments comes out
// on its own without disturbing it.
func TestFragmentsAndInterleavedControl(t *testing.T) {
	var s []byte
	s = append(s, OpText, 3) // FIN clear, text, "abc"
	s = append(s, "abc"...)
	s = AppendFrame(s, OpPing, []byte("p"), nil)
	s = append(s, OpContinuation, 2)
	s = append(s, "de"...)
	s = append(s, 0x80|OpContinuation, 1)
	s = append(s, "f"...)
	fr := reader(s, 64)
	op, p, err := fr.Next()
	if err != nil || op != OpPing || string(p) != "p" {
		t.Fatalf("first: op %d %q %v", op, p, err)
	}
	op, p, err = fr.Next()
	if err != nil || op != OpText || string(p) != "abcdef" {
		t.Fatalf("joined: op %d %q %v", op, p, err)
	}
}

func TestFrameErrors(t *testing.T) {
	cases := []struct {
		name  string
		bytes []byte
		max   int
		want  error
	}{
		{"rsv bit", []byte{0x80 | 0x40 | OpText, 0}, 0, ErrProtocol},
		{"fragmented control", []byte{OpPing, 0}, 0, ErrProtocol},
		{"lone continuation", []byte{0x80 | OpContinuation, 0}, 0, ErrProtocol},
		{"too large", AppendFrame(nil, OpText, make([]byte, 100), nil), 50, ErrTooLarge},
		{"truncated", AppendFrame(nil, OpText, make([]byte, 100), nil)[:50], 0, io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fr := reader(c.bytes, 4096)
			fr.Max = c.max
			_, _, err := fr.Next()
			if !errors.Is(err, c.want) && !(c.want == io.ErrUnexpectedEOF && err == io.EOF) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestParsePacket(t *testing.T) {
	cases := []struct {
		in   string
		typ  byte
		nsp  string
		id   int64
		data string
		err  bool
	}{
		{in: "40", typ: Connect, nsp: "/", id: -1},
		{in: `40/agents,{"sid":"x"}`, typ: Connect, nsp: "/agents", id: -1, data: `{"sid":"x"}`},
		{in: `42/agents,["e",{"a":1}]`, typ: Event, nsp: "/agents", id: -1, data: `["e",{"a":1}]`},
		{in: `42/agents,17["e"]`, typ: Event, nsp: "/agents", id: 17, data: `["e"]`},
		{in: `43/agents,1[{"ok":true}]`, typ: Ack, nsp: "/agents", id: 1, data: `[{"ok":true}]`},
		{in: `44/agents,{"message":"Invalid token"}`, typ: ConnectError, nsp: "/agents", id: -1, data: `{"message":"Invalid token"}`},
		{in: `41/agents,`, typ: Disconnect, nsp: "/agents", id: -1},
		{in: `41/agents`, typ: Disconnect, nsp: "/agents", id: -1},
		{in: `42["e"]`, typ: Event, nsp: "/", id: -1, data: `["e"]`},
		{in: `2`, err: true},
		{in: `4`, err: true},
		{in: `49`, err: true},
		{in: `451-["e",{"_placeholder":true,"num":0}]`, err: true},
		{in: `421234567890123456["e"]`, err: true},
	}
	for _, c := range cases {
		p, err := ParsePacket([]byte(c.in))
		if c.err {
			if err == nil {
				t.Errorf("%q: want an error", c.in)
			}
			continue
		}
		if err != nil || p.Type != c.typ || string(p.Nsp) != c.nsp || p.ID != c.id || string(p.Data) != c.data {
			t.Errorf("%q: got %c %q %d %q %v", c.in, p.Type, p.Nsp, p.ID, p.Data, err)
		}
	}
}

func TestEventRoundTrip(t *testing.T) {
	msg := AppendEvent(nil, "/agents", 3, "account:subscribe", []byte(`{"account_id":"a1"}`), []byte(`"off"`))
	if got, want := string(msg), `42/agents,3["account:subscribe",{"account_id":"a1"},"off"]`; got != want {
		t.Fatalf("encoded %s, want %s", got, want)
	}
	p, err := ParsePacket(msg)
	if err != nil {
		t.Fatal(err)
	}
	name, args, err := SplitEvent(p.Data, true)
	if err != nil || string(name) != "account:subscribe" {
		t.Fatalf("name %q err %v", name, err)
	}
	first, err := FirstValue(args)
	if err != nil || string(first) != `{"account_id":"a1"}` {
		t.Fatalf("first arg %q err %v", first, err)
	}
	if v, ok := Field(first, "account_id"); !ok || string(v) != `"a1"` {
		t.Fatalf("field %q %v", v, ok)
	}
	_, args, err = SplitEvent([]byte(`[{"ok":true}]`), false)
	if err != nil || string(args) != `{"ok":true}` {
		t.Fatalf("ack args %q err %v", args, err)
	}
	for _, bad := range []string{``, `{}`, `[1]`, `["unterminated]`, `["a\"b"]`, `["a" 1]`} {
		if _, _, err := SplitEvent([]byte(bad), true); err == nil {
			t.Errorf("SplitEvent(%s): want an error", bad)
		}
	}
}

func TestField(t *testing.T) {
	obj := []byte(` { "s" : "a,}\"b" , "o":{"x":[1,{"y":"}"}]}, "n": -1.5e3, "t":true, "z":null, "seq":42 } `)
	want := map[string]string{"s": `"a,}\"b"`, "o": `{"x":[1,{"y":"}"}]}`, "n": `-1.5e3`, "t": `true`, "z": `null`, "seq": `42`}
	for k, v := range want {
		got, ok := Field(obj, k)
		if !ok || string(got) != v {
			t.Errorf("Field(%q) = %q %v, want %q", k, got, ok, v)
		}
	}
	for _, k := range []string{"x", "y", "missing"} {
		if _, ok := Field(obj, k); ok {
			t.Errorf("Field(%q) found a nested or absent key", k)
		}
	}
	if _, ok := Field([]byte(`[1]`), "a"); ok {
		t.Error("Field on an array")
	}
}

func TestUint(t *testing.T) {
	for in, want := range map[string]uint64{`0`: 0, `42`: 42, `"42"`: 42, `18446744073709551`: 18446744073709551} {
		if got, ok := Uint([]byte(in)); !ok || got != want {
			t.Errorf("Uint(%s) = %d %v", in, got, ok)
		}
	}
	for _, in := range []string{``, `""`, `-1`, `1.5`, `"x"`, `12345678901234567890`} {
		if _, ok := Uint([]byte(in)); ok {
			t.Errorf("Uint(%s) accepted", in)
		}
	}
}

func TestTimeNanos(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 2, 28, 23, 59, 59, 999999999, time.UTC),
		time.Date(2024, 2, 29, 0, 0, 0, 1, time.UTC),
		time.Date(1999, 12, 31, 12, 0, 0, 0, time.FixedZone("x", 3600)),
		time.Now(),
	} {
		raw := AppendTime(nil, tm)
		got, ok := TimeNanos(raw)
		if !ok || got != tm.UnixNano() {
			t.Errorf("%s: got %d %v, want %d", raw, got, ok, tm.UnixNano())
		}
	}
	if got, ok := TimeNanos([]byte(`"2026-01-02T03:04:05.5+01:00"`)); !ok || got != time.Date(2026, 1, 2, 2, 4, 5, 5e8, time.UTC).UnixNano() {
		t.Errorf("fallback parse: %d %v", got, ok)
	}
	for _, bad := range []string{`2026`, `"nope"`, `"2026-13-02T03:04:05.000000000Z"`} {
		if _, ok := TimeNanos([]byte(bad)); ok {
			t.Errorf("TimeNanos(%s) accepted", bad)
		}
	}
}

func TestAppendString(t *testing.T) {
	if got := string(AppendString(nil, "a\"b\\c\n")); got != `"a\"b\\c\u000a"` {
		t.Fatalf("got %s", got)
	}
}

// The client's receive path (frame, packet, event, fields, timestamp) must
// not allocate: it runs once per delivery.
func TestReceivePathDoesNotAllocate(t *testing.T) {
	msg := AppendEvent(nil, "/agents", -1, "conversation:new",
		[]byte(`{"account_id":"a1","contact_identifier":"17","created_at":"2026-01-02T03:04:05.000000006Z"}`), []byte(`"offset"`))
	frame := AppendFrame(nil, OpText, msg, nil)
	stream := bytes.Repeat(frame, 200)
	br := bytes.NewReader(stream)
	fr := &FrameReader{R: bufio.NewReaderSize(br, 4096)}
	allocs := testing.AllocsPerRun(100, func() {
		_, p, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		pk, _ := ParsePacket(p)
		_, args, _ := SplitEvent(pk.Data, true)
		obj, _ := FirstValue(args)
		seq, _ := Field(obj, "contact_identifier")
		ts, _ := Field(obj, "created_at")
		if _, ok := Uint(seq); !ok {
			t.Fatal("seq")
		}
		if _, ok := TimeNanos(ts); !ok {
			t.Fatal("time")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per delivery", allocs)
	}
}

func TestHandshake(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, br, err := Accept(w, r)
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = conn.Write(AppendFrame(nil, OpText, []byte("0{}"), nil))
		fr := &FrameReader{R: br}
		op, p, err := fr.Next()
		if err == nil {
			_, _ = conn.Write(AppendFrame(nil, op, p, nil)) // echo
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br, err := ClientHandshake(conn, addr, "/socket.io/?EIO=4&transport=websocket", http.Header{"X-Test": {"1"}}, 1024)
	if err != nil {
		t.Fatal(err)
	}
	fr := &FrameReader{R: br}
	if _, p, err := fr.Next(); err != nil || string(p) != "0{}" {
		t.Fatalf("open: %q %v", p, err)
	}
	key := [4]byte{9, 8, 7, 6}
	if _, err := conn.Write(AppendFrame(nil, OpText, []byte("hello"), &key)); err != nil {
		t.Fatal(err)
	}
	if _, p, err := fr.Next(); err != nil || string(p) != "hello" {
		t.Fatalf("echo: %q %v", p, err)
	}

	resp, err := http.Get(srv.URL) // not an upgrade
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}
}

// FuzzReceive feeds arbitrary bytes through everything the load client does
// with what a server sends: none of it may panic or loop.
func FuzzReceive(f *testing.F) {
	msg := AppendEvent(nil, "/agents", -1, "conversation:new", []byte(`{"contact_identifier":"7","created_at":"2026-01-02T03:04:05.000000006Z"}`))
	f.Add(AppendFrame(nil, OpText, msg, nil))
	f.Add(AppendFrame(nil, OpText, []byte(`43/agents,1[{"ok":true}]`), &[4]byte{1, 2, 3, 4}))
	f.Add([]byte{OpText, 2, 'a', 'b', 0x80 | OpContinuation, 1, 'c'})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := &FrameReader{R: bufio.NewReaderSize(bytes.NewReader(b), 64), Max: 1 << 16}
		for i := 0; i < 100; i++ {
			_, p, err := fr.Next()
			if err != nil {
				return
			}
			pk, err := ParsePacket(p)
			if err != nil {
				continue
			}
			_, args, err := SplitEvent(pk.Data, pk.Type == Event)
			if err != nil {
				continue
			}
			if obj, err := FirstValue(args); err == nil {
				v, _ := Field(obj, "created_at")
				TimeNanos(v)
				v, _ = Field(obj, "contact_identifier")
				Uint(v)
			}
		}
	})
}

// BenchmarkReceive is the client's cost per delivery above the kernel: frame,
// packet, event, fields, timestamp.
func BenchmarkReceive(b *testing.B) {
	msg := AppendEvent(nil, "/agents", -1, "conversation:new",
		[]byte(`{"channel_id":"load","contact_identifier":"17","conversation_id":"conv-1-2","created_at":"2026-01-02T03:04:05.000000006Z","status":"open"}`), []byte(`"offset-1"`))
	frame := AppendFrame(nil, OpText, msg, nil)
	stream := bytes.Repeat(frame, 64)
	r := bytes.NewReader(stream)
	fr := &FrameReader{R: bufio.NewReaderSize(r, 4096)}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		_, p, err := fr.Next()
		if err != nil {
			r.Reset(stream)
			fr.R.Reset(r)
			fr.pending = 0
			continue
		}
		pk, _ := ParsePacket(p)
		_, args, _ := SplitEvent(pk.Data, true)
		obj, _ := FirstValue(args)
		v, _ := Field(obj, "created_at")
		TimeNanos(v)
		v, _ = Field(obj, "contact_identifier")
		Uint(v)
	}
}
