package fastpath

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ws "github.com/gorilla/websocket"

	"github.com/turumba/realtime/internal/sio"
)

// stalled connects a client that will not read, with a small receive
// buffer so that the server's writes block soon.
func stalled(t *testing.T, ts *testServer) *wsClient {
	t.Helper()
	// Set before connecting: a window shrunk after the handshake makes the
	// sender retransmit with backoff instead of waiting for the reader.
	small := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	return dialWith(t, ts, small, "r")
}

// waitCutOff waits for one slow-client report and for the server to drop
// the socket; it returns the reason.
func waitCutOff(t *testing.T, ts *testServer, c *wsClient, within time.Duration) string {
	t.Helper()
	var reason string
	select {
	case reason = <-ts.slows:
	case <-time.After(within):
		t.Fatalf("the stalled client was not cut off within %v", within)
	}
	ts.waitGone(t, c)
	// Its connection is closed: what the kernel had buffered, then EOF.
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c.fr.Next(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the cut-off client's connection is still open")
			}
			break
		}
	}
	select {
	case again := <-ts.slows:
		t.Errorf("a second slow-client report: %q", again)
	default:
	}
	return reason
}

func TestTransportCutsOffAClientTooFarBehind(t *testing.T) {
	ts := newTestServer(t, Limits{Queue: 16, WriteTimeout: time.Minute})
	c := stalled(t, ts)
	big := strings.Repeat("x", 64<<10)
	// The kernel's buffers take a few MB; then the writer blocks and the
	// queue fills.
	for range 400 {
		_ = ts.nsp.To("r").Emit("e", big)
	}
	if reason := waitCutOff(t, ts, c, 10*time.Second); reason != "queue" {
		t.Errorf("reason %q, want queue", reason)
	}
}

func TestTransportCutsOffAClientWhoseWritesBlock(t *testing.T) {
	ts := newTestServer(t, Limits{Queue: 1 << 16, WriteTimeout: 300 * time.Millisecond})
	c := stalled(t, ts)
	big := strings.Repeat("x", 64<<10)
	for range 200 { // 12.8 MB: more than the kernel's buffers
		_ = ts.nsp.To("r").Emit("e", big)
	}
	if reason := waitCutOff(t, ts, c, 10*time.Second); reason != "write timeout" {
		t.Errorf("reason %q, want write timeout", reason)
	}
}

// The library arms its pong timeout after it writes the ping; a pong handled
// in between would leave a timeout that closes a healthy connection. The
// transport tells the engine of each pong again a second later: the engine
// sees two heartbeats per pong, and the connection outlives its timeouts.
func TestPongIsEchoedToTheEngine(t *testing.T) {
	ts := newTestServer(t, DefaultLimits)
	ts.srv.Engine().Opts().SetPingInterval(1500 * time.Millisecond)
	// Longer than pongEcho, as in production (20 s against 1 s): a timeout
	// armed after the pong must find the echo there first. With the two
	// equal, the test raced the echo against the timeout and, on a loaded
	// machine, now and then lost (a close at 2.5 s).
	ts.srv.Engine().Opts().SetPingTimeout(pongEcho + time.Second)
	c := dial(t, ts)
	var mu sync.Mutex
	var beats []time.Time
	_ = ts.socket(t, c).Conn().On("heartbeat", func(...any) {
		mu.Lock()
		beats = append(beats, time.Now())
		mu.Unlock()
	})
	// Read (answering pings) for 4.2 s: pings at about 1.5 s and 4 s (the
	// echo at 2.5 s pushes the second one back by a second).
	_ = c.conn.SetReadDeadline(time.Now().Add(4200 * time.Millisecond))
	for {
		op, p, err := c.fr.Next()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			t.Fatalf("the connection ended: %v", err)
		}
		if op == sio.OpClose {
			t.Fatal("closed by the server")
		}
		if op == sio.OpText && len(p) == 1 && p[0] == sio.EIOPing {
			c.send(t, []byte{sio.EIOPong})
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(beats) < 2 {
		t.Fatalf("%d heartbeats, want the pong and its echo", len(beats))
	}
	if d := beats[1].Sub(beats[0]); d < pongEcho-100*time.Millisecond || d > pongEcho+500*time.Millisecond {
		t.Errorf("the echo came %v after the pong, want about %v", d, pongEcho)
	}
}

// controlReply reads frames until a control frame of op (skipping the
// engine's messages) and returns its payload; then the connection must end.
func controlReply(t *testing.T, c *wsClient, op byte) []byte {
	t.Helper()
	for {
		got, p, err := c.fr.Next()
		if err != nil {
			t.Fatalf("waiting for control frame %d: %v", op, err)
		}
		if got == op {
			return slices.Clone(p)
		}
	}
}

// The transport reads the client's frames itself: pings are answered, a
// close is echoed before the connection closes, and frames a server must
// refuse, or a message over the limit, get the close code that says why.
func TestTransportAnswersTheClientsControlFramesAndRefusesBadFrames(t *testing.T) {
	ts := newTestServer(t, Limits{Queue: 64, WriteTimeout: time.Minute, ReadLimit: 4096})
	ended := func(t *testing.T, c *wsClient) {
		t.Helper()
		if _, _, err := c.fr.Next(); err == nil {
			t.Error("the connection is still open after the close frame")
		}
	}

	t.Run("ping", func(t *testing.T) {
		c := dial(t, ts, "r")
		if _, err := c.conn.Write(sio.AppendFrame(nil, sio.OpPing, []byte("hello?"), &c.mask)); err != nil {
			t.Fatal(err)
		}
		if p := controlReply(t, c, sio.OpPong); string(p) != "hello?" {
			t.Errorf("pong %q, want the ping's payload", p)
		}
		// Still connected: a broadcast arrives.
		_ = ts.nsp.To("r").Emit("e", "after the ping")
		if name, arg := c.event(t); name != "e" || arg != `"after the ping"` {
			t.Errorf("got %s %s", name, arg)
		}
	})
	for _, tc := range []struct {
		name  string
		frame func(c *wsClient) []byte
		code  int
	}{
		{"close", func(c *wsClient) []byte {
			return sio.AppendFrame(nil, sio.OpClose, ws.FormatCloseMessage(ws.CloseGoingAway, "tab closed"), &c.mask)
		}, ws.CloseGoingAway},
		{"unmasked", func(*wsClient) []byte { return sio.AppendFrame(nil, sio.OpText, []byte("3"), nil) }, ws.CloseProtocolError},
		{"too big", func(c *wsClient) []byte {
			return sio.AppendFrame(nil, sio.OpText, []byte(strings.Repeat("x", 5000)), &c.mask)
		}, ws.CloseMessageTooBig},
		{"bad close code", func(c *wsClient) []byte {
			return sio.AppendFrame(nil, sio.OpClose, []byte{0x03, 0xED}, &c.mask) // 1005
		}, ws.CloseProtocolError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts, "r")
			if _, err := c.conn.Write(tc.frame(c)); err != nil {
				t.Fatal(err)
			}
			p := controlReply(t, c, sio.OpClose)
			if len(p) < 2 || int(p[0])<<8|int(p[1]) != tc.code {
				t.Errorf("close payload %x, want code %d", p, tc.code)
			}
			ended(t, c)
		})
	}
}
