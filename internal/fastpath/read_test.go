package fastpath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	ws "github.com/gorilla/websocket"

	"github.com/turumba/realtime/internal/sio"
)

var testKey = [4]byte{9, 8, 7, 6}

// clientFrame is one masked frame as a client sends it; fin false leaves
// the message open for continuation frames.
func clientFrame(op byte, payload []byte, fin bool) []byte {
	f := sio.AppendFrame(nil, op, payload, &testKey)
	if !fin {
		f[0] &^= 0x80
	}
	return f
}

func readerOf(frames ...[]byte) *frameReader {
	return &frameReader{r: bytes.NewReader(bytes.Join(frames, nil)), limit: 1 << 20}
}

func TestFrameReaderReadsMessagesAndControlFrames(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 70_000) // a 64-bit length
	mid := bytes.Repeat([]byte("y"), 300)     // a 16-bit length
	fr := readerOf(
		clientFrame(sio.OpText, []byte("3"), true),
		clientFrame(sio.OpBinary, mid, true),
		clientFrame(sio.OpText, []byte("42[\"a\","), false),
		clientFrame(sio.OpPing, []byte("are you there"), true), // between fragments
		clientFrame(sio.OpContinuation, []byte("1"), false),
		clientFrame(sio.OpContinuation, []byte("]"), true),
		clientFrame(sio.OpText, long, true),
		clientFrame(sio.OpText, nil, true),
	)
	want := []struct {
		op byte
		p  []byte
	}{
		{sio.OpText, []byte("3")}, {sio.OpBinary, mid}, {sio.OpPing, []byte("are you there")},
		{sio.OpText, []byte(`42["a",1]`)}, {sio.OpText, long}, {sio.OpText, []byte{}},
	}
	for i, w := range want {
		op, p, err := fr.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if op != w.op || !bytes.Equal(p, w.p) {
			t.Fatalf("message %d: opcode %d, %d bytes; want %d, %d bytes", i, op, len(p), w.op, len(w.p))
		}
		if single := i != 3; single && op < sio.OpClose && cap(p) != len(p) {
			t.Errorf("message %d: capacity %d for %d bytes; a one-frame message is kept at its own size", i, cap(p), len(p))
		}
	}
	if _, _, err := fr.next(); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
	if fr.buf != nil {
		t.Error("the reader still holds the fragments of a finished message")
	}
}

func TestFrameReaderRefusesWhatAServerMust(t *testing.T) {
	unmasked := sio.AppendFrame(nil, sio.OpText, []byte("hi"), nil)
	rsv := clientFrame(sio.OpText, []byte("hi"), true)
	rsv[0] |= 0x40
	opcode3 := clientFrame(sio.OpText, []byte("hi"), true)
	opcode3[0] = 0x80 | 3
	opcode11 := clientFrame(sio.OpText, nil, true)
	opcode11[0] = 0x80 | 11
	longPing := clientFrame(sio.OpPing, bytes.Repeat([]byte("p"), 126), true)
	for _, c := range []struct {
		name   string
		frames [][]byte
		limit  int64
		code   int
	}{
		{"unmasked", [][]byte{unmasked}, 0, ws.CloseProtocolError},
		{"reserved bit", [][]byte{rsv}, 0, ws.CloseProtocolError},
		{"data opcode 3", [][]byte{opcode3}, 0, ws.CloseProtocolError},
		{"control opcode 11", [][]byte{opcode11}, 0, ws.CloseProtocolError},
		{"continuation first", [][]byte{clientFrame(sio.OpContinuation, []byte("x"), true)}, 0, ws.CloseProtocolError},
		{"new message mid-fragment", [][]byte{clientFrame(sio.OpText, []byte("a"), false), clientFrame(sio.OpText, []byte("b"), true)}, 0, ws.CloseProtocolError},
		{"fragmented ping", [][]byte{clientFrame(sio.OpPing, nil, false)}, 0, ws.CloseProtocolError},
		{"ping over 125 bytes", [][]byte{longPing}, 0, ws.CloseProtocolError},
		{"message over the limit", [][]byte{clientFrame(sio.OpText, make([]byte, 101), true)}, 100, ws.CloseMessageTooBig},
		{"fragments over the limit", [][]byte{clientFrame(sio.OpText, make([]byte, 60), false), clientFrame(sio.OpContinuation, make([]byte, 60), true)}, 100, ws.CloseMessageTooBig},
	} {
		t.Run(c.name, func(t *testing.T) {
			fr := readerOf(c.frames...)
			if c.limit > 0 {
				fr.limit = c.limit
			}
			var err error
			for range c.frames {
				if _, _, err = fr.next(); err != nil {
					break
				}
			}
			var pe *protocolError
			if !errors.As(err, &pe) || pe.code != c.code {
				t.Fatalf("got %v, want a protocol error with close code %d", err, c.code)
			}
		})
	}
}

func TestFrameReaderSeesAConnectionCutInAFrame(t *testing.T) {
	f := clientFrame(sio.OpText, []byte("hello"), true)
	for _, n := range []int{1, 2, 4, 6, len(f) - 1} {
		fr := &frameReader{r: bytes.NewReader(f[:n]), limit: 1 << 20}
		if _, _, err := fr.next(); err != io.ErrUnexpectedEOF {
			t.Errorf("cut after %d bytes: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
}

func TestCloseReply(t *testing.T) {
	withCode := func(code int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(code)) }
	for _, c := range []struct {
		name    string
		payload []byte
		reply   []byte // the reply's payload; nil: refused
		code    int
	}{
		{"no status", nil, []byte{}, 0},
		{"normal, with a reason", append(withCode(1000), "bye"...), ws.FormatCloseMessage(1000, ""), 0},
		{"going away", withCode(1001), ws.FormatCloseMessage(1001, ""), 0},
		{"application code", withCode(4000), ws.FormatCloseMessage(4000, ""), 0},
		{"one byte", []byte{3}, nil, ws.CloseProtocolError},
		{"1005 is never sent", withCode(1005), nil, ws.CloseProtocolError},
		{"1006 is never sent", withCode(1006), nil, ws.CloseProtocolError},
		{"999", withCode(999), nil, ws.CloseProtocolError},
		{"5000", withCode(5000), nil, ws.CloseProtocolError},
		{"reason not UTF-8", append(withCode(1000), 0xff, 0xfe), nil, ws.CloseInvalidFramePayloadData},
	} {
		t.Run(c.name, func(t *testing.T) {
			reply, err := closeReply(c.payload)
			if c.reply == nil {
				var pe *protocolError
				if !errors.As(err, &pe) || pe.code != c.code {
					t.Fatalf("got %q, %v; want a protocol error %d", reply, err, c.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := frame(ws.CloseMessage, c.reply); !bytes.Equal(reply, want) {
				t.Errorf("reply %x, want %x", reply, want)
			}
		})
	}
}

// FuzzFrameReader: whatever a client sends, the reader neither panics nor
// returns more than its limit, and a stream it accepts ends in io.EOF.
func FuzzFrameReader(f *testing.F) {
	f.Add(clientFrame(sio.OpText, []byte("40/agents,{}"), true))
	f.Add(append(clientFrame(sio.OpText, []byte("4"), false), clientFrame(sio.OpContinuation, []byte("2"), true)...))
	f.Add(clientFrame(sio.OpClose, ws.FormatCloseMessage(1000, "bye"), true))
	f.Add(sio.AppendFrame(nil, sio.OpText, []byte("unmasked"), nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := &frameReader{r: bytes.NewReader(data), limit: 4096}
		for range 64 {
			op, p, err := fr.next()
			if err != nil {
				return
			}
			if int64(len(p)) > fr.limit {
				t.Fatalf("a message of %d bytes passed the limit of %d", len(p), fr.limit)
			}
			if op == sio.OpClose {
				_, _ = closeReply(p)
			}
		}
	})
}

// BenchmarkFrameReader reads a pong and a CONNECT with a Cognito token as
// a client sends them; B/op is the message itself, nothing is held after.
func BenchmarkFrameReader(b *testing.B) {
	connect := `40/agents,{"token":"` + strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 50) + `"}`
	for _, m := range []struct{ name, msg string }{{"pong", "3"}, {"connect", connect}} {
		b.Run(m.name, func(b *testing.B) {
			f := clientFrame(sio.OpText, []byte(m.msg), true)
			r := bytes.NewReader(f)
			fr := &frameReader{r: r, limit: 1 << 20}
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(f)
				if _, p, err := fr.next(); err != nil || len(p) != len(m.msg) {
					b.Fatal(err)
				}
			}
		})
	}
}
