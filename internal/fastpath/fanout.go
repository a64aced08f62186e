package fastpath

import (
	"sync"
	"sync/atomic"

	"github.com/zishang520/socket.io/parsers/socket/v3/parser"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/turumba/realtime/internal/sio"
)

// Counts tells how a broadcast reached its recipients.
type Counts struct {
	Websocket int // frames queued on our websocket writers
	Library   int // sockets served by the library's path (polling, mid-upgrade)
}

// Fanout delivers the broadcasts of one namespace to this instance's
// sockets. It keeps its own index of the rooms (socket pointers per room,
// fed by the adapter's AddAll/Del/DelAll), renders a broadcast once as a
// websocket frame, and queues that frame on every settled websocket
// recipient; every other recipient gets the library's write.
//
// Listeners registered with the library's OnAnyOutgoing are not called for
// broadcasts: the Hub registers none.
type Fanout struct {
	nsp       socket.Namespace
	encoder   parser.Encoder
	delivered func(Counts)

	mu      sync.Mutex
	rooms   map[socket.Room]*room
	members map[socket.SocketId]*member
	mark    uint64 // one per broadcast: a member marked with it is served or excluded
	sealed  bool   // no more deliveries (shutdown)
	held    map[socket.SocketId]*held
}

type member struct {
	id   socket.SocketId
	sock *socket.Socket // resolved at the first broadcast that finds it connected
	in   []slot         // the rooms it is in (a few: slices, not maps, for memory)
	mark uint64
	held bool // being restored (Hold)
	// ws is the socket's transport once it is settled on our websocket (a
	// websocket is never replaced; a member leaves the index before its
	// socket counts as disconnected).
	ws *Transport

	// The library's writes to this socket, in broadcast order, and the
	// lock of whoever is writing them (see drain).
	libMu       sync.Mutex
	lib         []libWrite
	libInFlight atomic.Int32
	writing     sync.Mutex
}

type room struct {
	name    socket.Room
	members []*member
}

// slot is a member's place in one room: members[at] is the member.
type slot struct {
	r  *room
	at int
}

// slotOf returns the index in m.in of room r, or -1.
func (m *member) slotOf(r *room) int {
	for k := range m.in {
		if m.in[k].r == r {
			return k
		}
	}
	return -1
}

// NewFanout builds the fanout of nsp; delivered, if not nil, is told how
// each broadcast was delivered.
func NewFanout(nsp socket.Namespace, delivered func(Counts)) *Fanout {
	return &Fanout{
		nsp:       nsp,
		encoder:   nsp.Server().Encoder(),
		delivered: delivered,
		rooms:     map[socket.Room]*room{},
		members:   map[socket.SocketId]*member{},
	}
}

// Add puts a socket in rooms.
func (f *Fanout) Add(id socket.SocketId, rooms []socket.Room) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.members[id]
	if m == nil {
		m = &member{id: id, in: make([]slot, 0, len(rooms))}
		_, m.held = f.held[id]
		f.members[id] = m
	}
	for _, name := range rooms {
		r := f.rooms[name]
		if r == nil {
			r = &room{name: name}
			f.rooms[name] = r
		} else if m.slotOf(r) >= 0 {
			continue
		}
		m.in = append(m.in, slot{r: r, at: len(r.members)})
		r.members = append(r.members, m)
	}
}

// Del takes a socket out of one room.
func (f *Fanout) Del(id socket.SocketId, name socket.Room) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, r := f.members[id], f.rooms[name]; m != nil && r != nil {
		if k := m.slotOf(r); k >= 0 {
			f.leave(m, k)
		}
	}
}

// DelAll forgets a socket.
func (f *Fanout) DelAll(id socket.SocketId) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, id)
	m := f.members[id]
	if m == nil {
		return
	}
	for len(m.in) > 0 {
		f.leave(m, len(m.in)-1)
	}
	delete(f.members, id)
}

// leave takes m out of the room of its slot k, in O(rooms of the member
// moved into its place).
func (f *Fanout) leave(m *member, k int) {
	sl := m.in[k]
	r := sl.r
	last := len(r.members) - 1
	if moved := r.members[last]; moved != m {
		r.members[sl.at] = moved
		moved.in[moved.slotOf(r)].at = sl.at
	}
	r.members[last] = nil
	r.members = r.members[:last]
	m.in[k] = m.in[len(m.in)-1]
	m.in = m.in[:len(m.in)-1]
	if last == 0 {
		delete(f.rooms, r.name)
	}
}

// Deliver sends a packet to the sockets of this instance that opts target
// (every socket when opts names no room), each once, none in opts.Except.
// stamp, if not nil, runs first under the index's lock (the recovery
// offset is added there). Broadcasts reach every socket in the order they
// took the lock, on either path: the fast path queues under the lock; the
// library's writes go through a per-socket queue that keeps that order
// (see member.lib), and a socket with library writes in flight takes
// that path until they are done.
func (f *Fanout) Deliver(p *parser.Packet, opts *socket.BroadcastOptions, stamp func(*parser.Packet)) {
	flags := &socket.BroadcastFlags{}
	if opts != nil && opts.Flags != nil {
		flags = opts.Flags
	}
	p.Nsp = f.nsp.Name()

	f.mu.Lock()
	if f.sealed {
		f.mu.Unlock()
		return
	}
	if stamp != nil {
		stamp(p)
	}
	b := &rendered{encoded: f.encoder.Encode(p), volatile: flags.Volatile,
		wopts: &socket.WriteOptions{PreEncoded: true, Volatile: flags.Volatile}}
	b.wopts.Compress = flags.Compress
	if len(b.encoded) == 1 {
		if sb, ok := b.encoded[0].(*types.StringBuffer); ok {
			// One Engine.IO message ("4") in one text frame.
			n := 1 + sb.Len()
			b.frame = sio.AppendFrameHeader(make([]byte, 0, sio.MaxFrameHeader+n), sio.OpText, n, nil)
			b.frame = append(append(b.frame, '4'), sb.Bytes()...)
		}
	}
	for _, h := range f.held {
		if Targets(h.rooms, opts) {
			h.pending = append(h.pending, b)
		}
	}
	var slow []*member
	var counts Counts
	f.mark++
	mark := f.mark
	if opts != nil && opts.Except != nil {
		for _, name := range opts.Except.Keys() {
			if r := f.rooms[name]; r != nil {
				for _, m := range r.members {
					m.mark = mark
				}
			}
		}
	}
	visit := func(m *member) {
		if m.mark == mark {
			return
		}
		m.mark = mark
		if m.held {
			return // being restored: it gets this from its catch-up
		}
		switch f.send(m, b) {
		case fast:
			counts.Websocket++
		case viaLibrary:
			slow = append(slow, m)
		}
	}
	if opts == nil || opts.Rooms == nil || opts.Rooms.Len() == 0 {
		for _, m := range f.members {
			visit(m)
		}
	} else {
		for _, name := range opts.Rooms.Keys() {
			if r := f.rooms[name]; r != nil {
				for _, m := range r.members {
					visit(m)
				}
			}
		}
	}
	f.mu.Unlock()

	// The library's writes run outside the lock: a write may close its
	// socket, and the close comes back here through DelAll.
	for _, m := range slow {
		m.drain()
	}
	counts.Library = len(slow)
	if f.delivered != nil {
		f.delivered(counts)
	}
}

// rendered is one packet rendered for both paths.
type rendered struct {
	encoded  []types.BufferInterface // for the library's path
	wopts    *socket.WriteOptions
	frame    []byte // the websocket frame; nil: not one text packet
	volatile bool
}

// How send handed a broadcast to a socket.
const (
	dropped    = iota // the socket is closing or not connected
	fast              // queued on its websocket writer
	viaLibrary        // queued for the library's write (m.drain)
)

// send queues b on m's settled websocket, or on m's library queue, to be
// drained by the caller once the lock is released. Called under f.mu.
func (f *Fanout) send(m *member, b *rendered) int {
	if b.frame != nil && m.libInFlight.Load() == 0 {
		if m.ws == nil {
			// Once settled on our websocket (which is final) the member
			// keeps it: no lookups per broadcast.
			if s := f.resolve(m); s != nil && s.Connected() {
				if t, ok := s.Conn().Transport().(*Transport); ok && t.Settled() {
					m.ws = t
				}
			}
		}
		if m.ws != nil {
			if m.ws.Queue(b.frame, b.volatile) {
				return fast
			}
			return dropped
		}
	}
	s := f.resolve(m)
	if s == nil || !s.Connected() {
		return dropped
	}
	m.libInFlight.Add(1)
	m.libMu.Lock()
	m.lib = append(m.lib, libWrite{s, b})
	m.libMu.Unlock()
	return viaLibrary
}

type libWrite struct {
	s *socket.Socket
	b *rendered
}

// drain writes m's queued library writes in order. Whoever holds writing
// writes everything queued, including what is queued meanwhile (by
// another broadcast, or by one that a write triggered on this goroutine).
func (m *member) drain() {
	for {
		if !m.writing.TryLock() {
			return // the holder writes ours too
		}
		for {
			m.libMu.Lock()
			if len(m.lib) == 0 {
				m.libMu.Unlock()
				break
			}
			w := m.lib[0]
			m.lib[0] = libWrite{}
			m.lib = m.lib[1:]
			m.libMu.Unlock()
			w.s.Client().WriteToEngine(w.b.encoded, w.b.wopts)
			m.libInFlight.Add(-1)
		}
		m.writing.Unlock()
		m.libMu.Lock()
		more := len(m.lib) > 0
		m.libMu.Unlock()
		if !more {
			return
		}
	}
}

// Hold keeps broadcasts from a socket being restored with rooms, from the
// moment its missed packets are computed until Release: they are queued
// for it instead, so that none falls between what it missed and what it
// gets live.
func (f *Fanout) Hold(id socket.SocketId, rooms *types.Set[socket.Room]) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held == nil {
		f.held = map[socket.SocketId]*held{}
	}
	f.held[id] = &held{rooms: rooms}
	if m := f.members[id]; m != nil {
		m.held = true
	}
}

// Held reports whether a socket is held.
func (f *Fanout) Held(id socket.SocketId) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.held[id]
	return ok
}

// Release sends a held socket what was queued for it, in order, and lets
// broadcasts reach it directly again.
func (f *Fanout) Release(id socket.SocketId) {
	f.mu.Lock()
	h := f.held[id]
	delete(f.held, id)
	m := f.members[id]
	var slow bool
	if m != nil {
		m.held = false
		if h != nil {
			for _, b := range h.pending {
				if f.send(m, b) == viaLibrary {
					slow = true
				}
			}
		}
	}
	f.mu.Unlock()
	if slow {
		m.drain()
	}
}

type held struct {
	rooms   *types.Set[socket.Room]
	pending []*rendered
}

// Targets reports whether a socket in rooms is a target of opts: in one of
// its rooms (or any socket when it names none) and in none of its Except
// rooms. A socket in no known rooms is none.
func Targets(rooms *types.Set[socket.Room], opts *socket.BroadcastOptions) bool {
	if rooms == nil {
		return false
	}
	if opts != nil && opts.Except != nil {
		for _, r := range opts.Except.Keys() {
			if rooms.Has(r) {
				return false
			}
		}
	}
	if opts == nil || opts.Rooms == nil || opts.Rooms.Len() == 0 {
		return true
	}
	for _, r := range opts.Rooms.Keys() {
		if rooms.Has(r) {
			return true
		}
	}
	return false
}

func (f *Fanout) seal() {
	f.mu.Lock()
	f.sealed = true
	f.mu.Unlock()
}

// resolve finds the socket of a member once it is registered with the
// namespace.
func (f *Fanout) resolve(m *member) *socket.Socket {
	if m.sock == nil {
		if s, ok := f.nsp.Sockets().Load(m.id); ok {
			m.sock = s
		}
	}
	return m.sock
}
