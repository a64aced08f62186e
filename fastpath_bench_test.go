package realtime

import (
	"bytes"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/zishang520/socket.io/servers/engine/v3"
	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/turumba/realtime/internal/fastpath"
	"github.com/turumba/realtime/internal/sio"
)

// fanoutBench is a Socket.IO server with sockets connected over loopback,
// all in room "r" of namespace /b, each read by a raw client that counts
// the events it gets.
type fanoutBench struct {
	nsp  socket.Namespace
	addr string

	got  atomic.Int64  // events read by all clients
	want atomic.Int64  // the count at which done is signalled
	done chan struct{} // one signal when got reaches want
}

// newFanoutBench starts a server with connection state recovery on (as
// the Hub runs it), fast: our transport and Constructor as the Hub wires
// them; else the library as documented (its websocket transport, its
// session-aware in-memory adapter). It connects n clients.
func newFanoutBench(b *testing.B, fast bool, n int) *fanoutBench {
	b.Helper()
	opts := socket.DefaultServerOptions()
	rec := socket.DefaultConnectionStateRecovery()
	rec.SetMaxDisconnectionDuration(120_000)
	opts.SetConnectionStateRecovery(rec)
	if fast {
		opts.SetTransports(types.NewSet[transports.TransportCtor](engine.Polling, &fastpath.Builder{Limits: fastpath.DefaultLimits}))
		opts.SetAdapter(&fastpath.Constructor{})
	}
	srv := socket.NewServer(nil, opts)
	fb := &fanoutBench{nsp: srv.Of("/b", nil), done: make(chan struct{}, 1)}
	_ = fb.nsp.On("connection", func(args ...any) {
		s := args[0].(*socket.Socket)
		s.Join("r")
		_ = s.Emit("ready")
	})
	hs := httptest.NewServer(srv.ServeHandler(nil))
	fb.addr = hs.Listener.Addr().String()
	b.Cleanup(func() {
		srv.Close(nil)
		hs.Close()
	})

	// Connect a few at a time; each is ready once it is in the room.
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fb.connect(b); err != nil {
				failed.Store(err)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return fb
}

var (
	benchConnect = sio.AppendPacket(nil, sio.Connect, "/b", -1, nil)
	benchReady   = []byte(`42/b,["ready"`)
	benchEvent   = []byte(`42/b,`)
)

// connect opens one client, waits until it is in the room and leaves it
// reading on its own goroutine.
func (fb *fanoutBench) connect(b *testing.B) error {
	w := openWS(b, fb.addr, &net.Dialer{}, "")
	if err := w.text(benchConnect); err != nil {
		return err
	}
	for {
		op, p, err := w.fr.Next()
		if err != nil {
			return err
		}
		if op == sio.OpText && bytes.HasPrefix(p, benchReady) {
			break
		}
	}
	go fb.read(w)
	return nil
}

// read counts events until the connection ends; it answers pings.
func (fb *fanoutBench) read(w *wsConn) {
	for {
		op, p, err := w.fr.Next()
		if err != nil {
			return
		}
		switch {
		case op == sio.OpText && bytes.HasPrefix(p, benchEvent):
			if fb.got.Add(1) == fb.want.Load() {
				fb.done <- struct{}{}
			}
		case op == sio.OpText && len(p) == 1 && p[0] == sio.EIOPing:
			_ = w.text([]byte{sio.EIOPong})
		case op == sio.OpPing:
			_ = w.write(sio.OpPong, p)
		}
	}
}

// benchPayload is shaped like a conversation:message.
var benchPayload = map[string]any{
	"conversation_id": "conv-1", "message_id": "m-1", "sender_type": "contact", "is_private": false,
	"message_body": strings.Repeat("Hello, I need help with my order. ", 4), "created_at": "2026-11-27T10:00:00Z",
}

// broadcast emits one event to the room; with wait it returns once every
// client has read it.
func (fb *fanoutBench) broadcast(b *testing.B, clients int, wait bool) {
	fb.want.Store(fb.got.Load() + int64(clients))
	if err := fb.nsp.To("r").Emit("conversation:message", benchPayload); err != nil {
		b.Fatal(err)
	}
	if wait {
		<-fb.done
	}
}

// BenchmarkFanout1000 broadcasts one event to 1,000 websocket sockets on
// loopback, through our fast path and through the library's path, each
// measured two ways: queued (the server's cost: the emit until it returns,
// frames handed to every socket's writer; the wait for the clients is not
// timed) and delivered (until every client has read the frame).
func BenchmarkFanout1000(b *testing.B) {
	const clients = 1000
	for _, path := range []string{"fastpath", "library"} {
		b.Run(path, func(b *testing.B) {
			fb := newFanoutBench(b, path == "fastpath", clients)
			b.Run("queued", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					fb.broadcast(b, clients, false)
					b.StopTimer()
					<-fb.done
					b.StartTimer()
				}
			})
			b.Run("delivered", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					fb.broadcast(b, clients, true)
				}
			})
		})
	}
}
