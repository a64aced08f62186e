package fastpath

import (
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
