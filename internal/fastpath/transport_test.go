package fastpath

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
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
