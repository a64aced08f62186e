package fastpath

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zishang520/socket.io/parsers/socket/v3/parser"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

// LocalBroadcaster is implemented by adapters that deliver broadcasts to
// this instance's sockets through a function they are given (the Redis
// streams adapter delivers what it reads from the stream that way).
type LocalBroadcaster interface {
	SetLocalBroadcast(func(*parser.Packet, *socket.BroadcastOptions))
}

// AsyncBroadcaster is implemented by adapters that can start a broadcast
// and report its outcome later (the Redis streams adapter appends to the
// stream on a goroutine of its own); done is called exactly once.
type AsyncBroadcaster interface {
	BroadcastAsync(p *parser.Packet, opts *socket.BroadcastOptions, done func(error))
}

// Constructor builds the adapter of each namespace so that its broadcasts
// go through a Fanout: Inner's adapter (nil: an in-memory one, with
// connection state recovery when the server has it on) wrapped to keep
// the Fanout's room index.
type Constructor struct {
	Inner     socket.AdapterConstructor
	Delivered func(Counts)
	// MaxPackets bounds the packets the in-memory adapter keeps for
	// recovery (0: 100,000); older ones are dropped sooner than the window.
	MaxPackets int

	mu      sync.Mutex
	fanouts []*Fanout
}

// New builds the adapter of nsp (library API).
func (c *Constructor) New(nsp socket.Namespace) socket.Adapter {
	f := NewFanout(nsp, c.Delivered)
	c.mu.Lock()
	c.fanouts = append(c.fanouts, f)
	c.mu.Unlock()
	var inner socket.Adapter
	if c.Inner != nil {
		inner = c.Inner.New(nsp)
		if lb, ok := inner.(LocalBroadcaster); ok {
			lb.SetLocalBroadcast(func(p *parser.Packet, opts *socket.BroadcastOptions) { f.Deliver(p, opts, nil) })
		}
	} else {
		inner = newMemoryAdapter(nsp, f, c.MaxPackets)
	}
	// "connect" comes once the library has registered the socket with its
	// client: the client's next packets may reach it.
	_ = nsp.On("connect", func(args ...any) {
		if s, ok := args[0].(*socket.Socket); ok {
			if t, ok := s.Conn().Transport().(*Transport); ok {
				t.Registered()
			}
		}
	})
	return &indexed{Adapter: inner, f: f}
}

// Seal stops every delivery to this instance's sockets, at once for all of
// them: a broadcast reaches either every socket it targets or none. The
// Hub seals before it closes the connections on shutdown; what follows is
// for the instances the clients reconnect to.
func (c *Constructor) Seal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.fanouts {
		f.seal()
	}
}

// indexed keeps the Fanout's room index in step with the adapter's.
type indexed struct {
	socket.Adapter
	f *Fanout
}

// AsyncOf returns the namespace adapter's AsyncBroadcaster, when the
// adapter a Constructor built wraps one.
func AsyncOf(a socket.Adapter) (AsyncBroadcaster, bool) {
	if ix, ok := a.(*indexed); ok {
		a = ix.Adapter
	}
	ab, ok := a.(AsyncBroadcaster)
	return ab, ok
}

func (a *indexed) AddAll(id socket.SocketId, rooms *types.Set[socket.Room]) {
	a.Adapter.AddAll(id, rooms)
	a.f.Add(id, rooms.Keys())
}

func (a *indexed) Del(id socket.SocketId, room socket.Room) {
	a.f.Del(id, room)
	a.Adapter.Del(id, room)
}

func (a *indexed) DelAll(id socket.SocketId) {
	a.f.DelAll(id)
	a.Adapter.DelAll(id)
}

// memoryAdapter is the single-instance adapter: the library's in-memory
// adapter for rooms and queries, broadcasts through the Fanout, and the
// sessions and recent packets of connection state recovery.
type memoryAdapter struct {
	socket.Adapter
	f          *Fanout
	window     time.Duration // 0: recovery off
	maxPackets int
	prefix     string // offsets of another process never match

	mu        sync.Mutex
	seq       uint64
	packets   []kept // oldest first
	sessions  map[socket.PrivateSessionId]keptSession
	lastSweep time.Time
}

type kept struct {
	seq  uint64
	at   time.Time
	data any
	opts *socket.BroadcastOptions // whom it was for
}

type keptSession struct {
	s  *socket.SessionToPersist
	at time.Time
}

func newMemoryAdapter(nsp socket.Namespace, f *Fanout, maxPackets int) *memoryAdapter {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	a := &memoryAdapter{
		Adapter:    socket.MakeAdapter(),
		f:          f,
		maxPackets: maxPackets,
		prefix:     hex.EncodeToString(b) + "-",
		sessions:   map[socket.PrivateSessionId]keptSession{},
		lastSweep:  time.Now(),
	}
	if a.maxPackets <= 0 {
		a.maxPackets = 100_000
	}
	a.Construct(nsp)
	if rec := nsp.Server().Opts().ConnectionStateRecovery(); rec != nil {
		a.window = time.Duration(rec.MaxDisconnectionDuration()) * time.Millisecond
	}
	// A restored socket gets what was held for it once the connection
	// handlers have run (the task queue runs this after the current task).
	_ = nsp.On("connection", func(args ...any) {
		if s, ok := args[0].(*socket.Socket); ok && f.Held(s.Id()) {
			id := s.Id()
			s.Enqueue(func() { f.Release(id) })
		}
	})
	return a
}

// Broadcast delivers through the Fanout; a recoverable packet (a plain
// event, without acknowledgement, not volatile) gets its offset and is kept
// for the recovery window.
func (a *memoryAdapter) Broadcast(p *parser.Packet, opts *socket.BroadcastOptions) {
	if a.window <= 0 || p.Type != parser.EVENT || p.Id != nil || (opts != nil && opts.Flags != nil && opts.Flags.Volatile) {
		a.f.Deliver(p, opts, nil)
		return
	}
	a.f.Deliver(p, opts, func(p *parser.Packet) { a.keep(p, opts) })
}

// keep gives p its offset and keeps it; it runs under the Fanout's lock.
func (a *memoryAdapter) keep(p *parser.Packet, opts *socket.BroadcastOptions) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	data, _ := p.Data.([]any)
	p.Data = append(data, a.prefix+strconv.FormatUint(a.seq, 36))
	k := kept{seq: a.seq, at: time.Now(), data: p.Data, opts: opts}
	a.packets = append(a.packets, k)
	a.trim(k.at)
}

// trim drops packets older than the window or beyond the bound, and
// forgets sessions past the window (at most every few seconds).
func (a *memoryAdapter) trim(now time.Time) {
	drop := 0
	for drop < len(a.packets) && (now.Sub(a.packets[drop].at) > a.window || len(a.packets)-drop > a.maxPackets) {
		drop++
	}
	if drop > 0 {
		clear(a.packets[:drop])
		a.packets = a.packets[drop:]
		if cap(a.packets) > 1024 && len(a.packets) < cap(a.packets)/4 {
			a.packets = append([]kept(nil), a.packets...)
		}
	}
	if now.Sub(a.lastSweep) > 5*time.Second {
		a.lastSweep = now
		for pid, s := range a.sessions {
			if now.Sub(s.at) > a.window {
				delete(a.sessions, pid)
			}
		}
	}
}

// PersistSession keeps a disconnected socket's session (library API).
func (a *memoryAdapter) PersistSession(s *socket.SessionToPersist) {
	if a.window <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	a.sessions[s.Pid] = keptSession{s: s, at: now}
	a.trim(now)
}

// RestoreSession returns a session and the packets its socket missed after
// offset, or nil when it cannot be restored whole (library API).
func (a *memoryAdapter) RestoreSession(pid socket.PrivateSessionId, offset string) (*socket.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ks, ok := a.sessions[pid]
	if !ok {
		return nil, nil
	}
	if time.Since(ks.at) > a.window {
		return nil, nil
	}
	seqStr, ok := strings.CutPrefix(offset, a.prefix)
	if !ok {
		return nil, nil
	}
	seq, err := strconv.ParseUint(seqStr, 36, 64)
	if err != nil {
		return nil, nil
	}
	i := sort.Search(len(a.packets), func(i int) bool { return a.packets[i].seq >= seq })
	if i == len(a.packets) || a.packets[i].seq != seq {
		return nil, nil // the offset is older than what is kept: packets would be missing
	}
	var missed []any
	for _, k := range a.packets[i+1:] {
		if Targets(ks.s.Rooms, k.opts) {
			missed = append(missed, k.data)
		}
	}
	// What is broadcast from now until the socket's connection handlers
	// have run is queued for it (see Fanout.Hold).
	a.f.Hold(ks.s.Sid, ks.s.Rooms)
	return &socket.Session{SessionToPersist: ks.s, MissedPackets: missed}, nil
}
