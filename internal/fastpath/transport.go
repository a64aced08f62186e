// Package fastpath is the Hub's hot path under the Socket.IO library: a
// websocket transport registered with the engine's transport builders, whose
// one writer per socket sends every pending frame with one writev, and a
// broadcast path that encodes each broadcast once and hands the same frame
// bytes to the writer of every websocket recipient. The library keeps what
// it does well (sessions, handshake and middlewares, long-polling and
// upgrades, acknowledgements, recovery); a socket that is not on a settled
// websocket of ours is served by the library's path.
package fastpath

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	ws "github.com/gorilla/websocket"
	"github.com/zishang520/socket.io/parsers/engine/v3/packet"
	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/turumba/realtime/internal/sio"
)

// Limits bound what one socket may hold back.
type Limits struct {
	// Queue is the number of frames that may wait for a socket's writer;
	// a socket further behind is disconnected (a slow client).
	Queue int
	// WriteTimeout bounds one batched write; a socket whose writes block
	// longer is disconnected.
	WriteTimeout time.Duration
	// ReadLimit bounds one message from the client, as the engine's
	// MaxHttpBufferSize bounds a polling request; a larger message closes
	// the connection (close code 1009). 0: DefaultLimits.ReadLimit.
	ReadLimit int64
}

// DefaultLimits are the Hub's limits unless configured. A Builder with no
// Queue uses DefaultLimits.Queue; one with no WriteTimeout has no write
// watchdog.
var DefaultLimits = Limits{Queue: 4096, WriteTimeout: 10 * time.Second, ReadLimit: 1e6}

// Hooks report what the transports do; nil hooks are skipped.
type Hooks struct {
	// SlowClient is called once for each socket disconnected because it
	// fell Queue frames behind ("queue") or a write blocked for
	// WriteTimeout ("write timeout"); addr is the client's address.
	SlowClient func(reason, addr string)
}

// Builder is the engine's constructor of our websocket transport; register
// it with the engine's transports in place of the library's websocket.
type Builder struct {
	Limits Limits
	Hooks  Hooks

	mu   sync.Mutex
	live map[*Transport]struct{}

	// The write watchdog: a coarse clock, in quarters of WriteTimeout, and
	// the goroutine that cuts off writes older than four of them. One
	// timer for all sockets instead of a deadline set on every write.
	tick      atomic.Int64
	watchOnce sync.Once
	stopWatch chan struct{}
	closeOnce sync.Once
}

// New builds the transport of one websocket connection (engine API).
func (b *Builder) New(ctx *types.HttpContext) transports.Transport {
	t := &Transport{Transport: transports.MakeTransport(), limits: b.Limits, hooks: b.Hooks,
		done: make(chan struct{}), builder: b}
	if t.limits.Queue <= 0 {
		t.limits.Queue = DefaultLimits.Queue
	}
	if t.limits.ReadLimit <= 0 {
		t.limits.ReadLimit = DefaultLimits.ReadLimit
	}
	b.mu.Lock()
	if b.live == nil {
		b.live = map[*Transport]struct{}{}
	}
	b.live[t] = struct{}{}
	b.mu.Unlock()
	if b.Limits.WriteTimeout > 0 {
		b.watchOnce.Do(b.startWatch)
	}
	t.Prototype(t)
	t.Construct(ctx)
	return t
}

func (b *Builder) startWatch() {
	b.tick.Store(1)
	b.mu.Lock()
	if b.stopWatch == nil {
		b.stopWatch = make(chan struct{})
	}
	stop := b.stopWatch
	b.mu.Unlock()
	period := max(b.Limits.WriteTimeout/4, 5*time.Millisecond)
	go func() {
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
			case <-stop:
				return
			}
			now := b.tick.Add(1)
			var stuck []*Transport
			b.mu.Lock()
			for t := range b.live {
				if since := t.writeTick.Load(); since != 0 && now-since > 4 {
					stuck = append(stuck, t)
				}
			}
			b.mu.Unlock()
			for _, t := range stuck {
				t.cutOff("write timeout")
			}
		}
	}()
}

// Close stops the write watchdog; the transports are closed by the engine.
func (b *Builder) Close() {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		if b.stopWatch == nil {
			b.stopWatch = make(chan struct{})
		}
		close(b.stopWatch)
		b.mu.Unlock()
	})
}

// Drain waits until every transport being closed has sent what it had
// queued and closed its connection, or ctx ends.
func (b *Builder) Drain(ctx context.Context) error {
	b.mu.Lock()
	var closing []*Transport
	for t := range b.live {
		t.mu.Lock()
		if t.closing {
			closing = append(closing, t)
		}
		t.mu.Unlock()
	}
	b.mu.Unlock()
	for _, t := range closing {
		select {
		case <-t.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Name is the transport's name in the Engine.IO protocol.
func (*Builder) Name() string { return transports.WEBSOCKET }

// HandlesUpgrades reports that polling clients may upgrade to it.
func (*Builder) HandlesUpgrades() bool { return true }

// UpgradesTo lists nothing: websocket is the last step.
func (*Builder) UpgradesTo() []string { return nil }

// Transport is one websocket connection. Frames reach the network in the
// order they were queued, whether they come from the library (Send) or
// from a broadcast (Queue); one writer goroutine, started when there is
// something to write and gone when the queue is empty, writes them.
type Transport struct {
	transports.Transport

	limits  Limits
	hooks   Hooks
	builder *Builder
	done    chan struct{} // closed once the connection is closed

	raw         net.Conn
	idleTimeout time.Duration

	// settled is set by the first Send of the engine once this transport
	// is the socket's current one: from then on a broadcast may queue
	// frames here directly (nothing of the library's can be waiting in the
	// engine's buffer ahead of them).
	settled atomic.Bool
	// writeTick is the builder's tick when the write in progress began
	// (0: none); the watchdog cuts off writes that take too long.
	writeTick atomic.Int64
	cut       atomic.Bool  // cut off as a slow client, once
	pings     atomic.Int64 // pings the engine sent (see echoPong)
	// hold, while set, keeps the client's packets from the engine: from
	// the namespace CONNECT packet we send until the library has
	// registered the socket with its client (it writes the packet first,
	// and a packet decoded in between would close the connection).
	hold atomic.Pointer[chan struct{}]

	mu      sync.Mutex
	queue   [][]byte    // frames waiting for the writer
	spare   [][]byte    // the writer's previous batch, reused
	writing bool        // a writer goroutine runs
	bufs    net.Buffers // the batch being written (the writer's only)
	closing bool        // no more frames are accepted
	closed  bool        // the connection is closed
	// writeFn is t.write as a func value, made once: "go t.write()"
	// would allocate a closure at every wake.
	writeFn func()
}

// Construct takes over the upgraded connection (engine API). Gorilla's
// connection, which the library's upgrader made, is used for nothing but
// its network connection: nothing has read from it yet (the upgrader
// refuses a client that sent data before the handshake completed), and our
// writer and frameReader use the network connection directly.
func (t *Transport) Construct(ctx *types.HttpContext) {
	t.Transport.Construct(ctx)
	t.writeFn = t.write
	t.idleTimeout = ctx.IdleTimeout
	t.raw = ctx.Websocket.NetConn()
	t.SetWritable(true)
	t.SetPerMessageDeflate(nil)
	transports.StartReader(t, ctx.TransportReadPermission(), func() {
		// The engine has finished with the upgrade (it read the handshake's
		// remote address and dropped its close listener before it let us
		// read). Forgetting gorilla's connection lets it go, with its two
		// buffers: the handshake context is kept for the socket's life.
		ctx.Websocket = nil
		t.read()
	})
}

// Name is the transport's name in the Engine.IO protocol.
func (t *Transport) Name() string { return transports.WEBSOCKET }

// HandlesUpgrades reports that polling clients may upgrade to it.
func (t *Transport) HandlesUpgrades() bool { return true }

// Settled reports whether broadcasts may queue frames here directly.
func (t *Transport) Settled() bool { return t.settled.Load() }

// read hands every message the client sends to the engine until the
// connection ends. Control frames are answered through the queue: nothing
// may write to the connection but the writer.
func (t *Transport) read() {
	fr := frameReader{r: t.raw, limit: t.limits.ReadLimit}
	for {
		if t.idleTimeout > 0 {
			_ = t.raw.SetReadDeadline(time.Now().Add(t.idleTimeout))
		}
		op, msg, err := fr.next()
		if err != nil {
			t.readFailed(err)
			return
		}
		var buf types.BufferInterface
		switch op {
		case sio.OpClose:
			reply, err := closeReply(msg)
			if err != nil {
				t.readFailed(err)
				return
			}
			t.finish(reply) // the client's close answered, then the connection closed
			return
		case sio.OpPing:
			t.queueControl(ws.PongMessage, msg)
			continue
		case sio.OpPong:
			continue
		case sio.OpText:
			buf = types.NewStringBuffer(msg)
		default:
			buf = types.NewBytesBuffer(msg)
		}
		if h := t.hold.Load(); h != nil {
			t.waitRegistered(h)
		}
		pong := op == sio.OpText && buf.Len() == 1 && buf.Bytes()[0] == '3' && t.Settled()
		t.handle(buf)
		if pong {
			t.echoPong()
		}
	}
}

// readFailed ends the connection after a failed read: a frame the client
// must not send is answered with a close frame saying why; a connection
// the client closed or cut just ends.
func (t *Transport) readFailed(err error) {
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		t.finish(frame(ws.CloseMessage, ws.FormatCloseMessage(pe.code, "")))
		t.OnError("websocket error", err)
	case errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		t.shut()
	default: // a read deadline, a reset
		t.OnError("websocket error", err)
		t.shut()
	}
}

// handle hands one message to the engine on a goroutine of its own and
// waits for it: what the library does with it (a handshake runs the
// middlewares, token verification included) may grow a stack to tens of
// kilobytes, and the reader, parked for the socket's whole life, keeps
// the stack it grew. Clients send little; this costs a microsecond each.
func (t *Transport) handle(buf types.BufferInterface) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.OnData(buf)
	}()
	<-done
}

// pongEcho is how long after a client's pong the engine is told of it a
// second time (see echoPong).
const pongEcho = time.Second

// echoPong works around a race in the library's heartbeat (engine v3.0.6,
// socket.schedulePing): its timer writes the ping and only then arms the
// pong timeout. A pong handled in between clears nothing, and the timeout
// armed after it closes a healthy connection 20 s later ("ping timeout").
// Our writer is fast enough on a loopback or LAN for that to happen now
// and then. Telling the engine of the pong again a second later clears
// such a timeout; it does nothing else but push the next ping back by a
// second. It is skipped when another ping went out meanwhile.
func (t *Transport) echoPong() {
	pings := t.pings.Load()
	time.AfterFunc(pongEcho, func() {
		if t.pings.Load() == pings && t.ReadyState() == "open" {
			t.OnPacket(&packet.Packet{Type: packet.PONG})
		}
	})
}

// registrationWait bounds how long a client's packet waits for its
// socket's registration (a few microseconds, unless the server is starved).
const registrationWait = 2 * time.Second

func (t *Transport) waitRegistered(h *chan struct{}) {
	tm := time.NewTimer(registrationWait)
	defer tm.Stop()
	select {
	case <-*h:
	case <-tm.C:
		t.hold.CompareAndSwap(h, nil)
	}
}

// Registered lets the client's packets through again once the library has
// registered the socket that the CONNECT packet announced.
func (t *Transport) Registered() {
	if h := t.hold.Swap(nil); h != nil {
		close(*h)
	}
}

// Send queues the engine's packets (engine API). It never blocks: the
// transport stays writable, so the engine flushes each packet at once and
// its buffer holds nothing that a broadcast could overtake.
func (t *Transport) Send(packets []*packet.Packet) {
	frames := make([][]byte, 0, len(packets))
	for _, p := range packets {
		data, err := t.Parser().EncodePacket(p, t.SupportsBinary())
		if err != nil {
			t.OnError("websocket encode", err)
			return
		}
		op := byte(ws.BinaryMessage)
		if _, ok := data.(*types.StringBuffer); ok {
			op = ws.TextMessage
		}
		b := data.Bytes()
		if p.Type == packet.PING {
			t.pings.Add(1)
		}
		if len(b) >= 2 && b[0] == '4' && b[1] == '0' && t.hold.Load() == nil {
			// A Socket.IO CONNECT: hold what the client sends next until
			// the socket is registered (see hold).
			h := make(chan struct{})
			t.hold.Store(&h)
		}
		frames = append(frames, frame(op, b))
	}
	t.enqueue(frames...)
	// The probe answer of an upgrade is sent before the engine switches to
	// this transport; anything else comes from the engine's flush. Settled
	// only now: a broadcast must not queue ahead of what this flush sends.
	if !(len(packets) == 1 && packets[0].Type == packet.PONG) {
		t.settled.Store(true)
	}
	t.Emit("drain")
}

// Queue hands a broadcast's frame to the writer. The frame is shared with
// other sockets and never modified. A volatile frame is dropped when the
// socket is behind. It reports false when the socket is closing.
func (t *Transport) Queue(frame []byte, volatile bool) bool {
	if volatile {
		t.mu.Lock()
		behind := len(t.queue) >= max(1, t.limits.Queue/16)
		t.mu.Unlock()
		if behind {
			return true
		}
	}
	return t.enqueue(frame)
}

func (t *Transport) enqueue(frames ...[]byte) bool {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return false
	}
	if len(t.queue)+len(frames) > t.limits.Queue {
		t.closing = true
		t.queue = t.queue[:0]
		t.mu.Unlock()
		// Not on the caller's goroutine: closing reaches the engine and
		// the adapter, whose locks a broadcast may hold.
		go t.cutOff("queue")
		return false
	}
	start := t.appendLocked(frames...)
	t.mu.Unlock()
	if start {
		go t.writeFn()
	}
	return true
}

// appendLocked queues frames (t.mu held) and reports whether the caller
// must start the writer once the lock is released.
func (t *Transport) appendLocked(frames ...[]byte) bool {
	if t.queue == nil {
		// The writer left its last batch's array in spare.
		t.queue, t.spare = t.spare, nil
	}
	t.queue = append(t.queue, frames...)
	start := !t.writing
	t.writing = true
	return start
}

// queueControl queues a control frame, bypassing the limit (it is tiny and
// the client is waiting for it).
func (t *Transport) queueControl(op int, payload []byte) {
	f := frame(byte(op), payload)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	start := t.appendLocked(f)
	t.mu.Unlock()
	if start {
		go t.writeFn()
	}
}

// write sends batches until the queue is empty; it closes the connection
// once a closing transport's queue is drained.
func (t *Transport) write() {
	for {
		t.mu.Lock()
		if len(t.queue) == 0 || t.closed {
			t.writing = false
			done := t.closing && !t.closed
			t.mu.Unlock()
			if done {
				t.shut()
			}
			return
		}
		batch := t.queue
		t.queue, t.spare = t.spare[:0], nil
		t.mu.Unlock()

		t.writeTick.Store(t.builder.tick.Load())
		t.bufs = batch // a field: a local would escape to the heap on every write
		_, err := t.bufs.WriteTo(t.raw)
		t.writeTick.Store(0)
		clear(batch)
		t.mu.Lock()
		if t.spare == nil {
			t.spare = batch[:0]
		}
		t.mu.Unlock()
		if err != nil { // the peer is gone, or the watchdog closed the connection
			t.mu.Lock()
			t.writing = false
			t.mu.Unlock()
			t.shut()
			return
		}
	}
}

// cutOff disconnects a slow client.
func (t *Transport) cutOff(reason string) {
	if t.cut.Swap(true) {
		return
	}
	if t.hooks.SlowClient != nil {
		t.hooks.SlowClient(reason, t.raw.RemoteAddr().String())
	}
	t.shut()
}

// DoClose closes the transport (engine API): what is queued is still sent,
// then a close frame, within the write timeout; fn runs at once.
func (t *Transport) DoClose(fn types.Callable) {
	t.finish(closeFrame)
	if fn != nil {
		fn()
	}
}

// finish stops accepting frames; the writer sends what is queued (and
// last, if not nil) and then closes the connection.
func (t *Transport) finish(last []byte) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	t.closing = true
	var start bool
	if last != nil {
		start = t.appendLocked(last)
	} else {
		start = t.appendLocked()
	}
	t.mu.Unlock()
	if start {
		go t.writeFn()
	}
}

// shut closes the connection and tells the engine, once.
func (t *Transport) shut() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed, t.closing = true, true
	t.queue, t.spare = nil, nil
	t.mu.Unlock()
	_ = t.raw.Close()
	b := t.builder
	b.mu.Lock()
	delete(b.live, t)
	b.mu.Unlock()
	close(t.done)
	t.OnClose()
}

var closeFrame = frame(ws.CloseMessage, ws.FormatCloseMessage(ws.CloseNormalClosure, ""))

// frame renders one unmasked, unfragmented websocket frame.
func frame(op byte, payload []byte) []byte {
	return sio.AppendFrame(make([]byte, 0, sio.MaxFrameHeader+len(payload)), op, payload, nil)
}
