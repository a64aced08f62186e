package fastpath

import (
	"sync"

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
}

type member struct {
	id    socket.SocketId
	sock  *socket.Socket // resolved at the first broadcast that finds it connected
	rooms map[socket.Room]struct{}
	mark  uint64
}

type room struct {
	members []*member
	at      map[*member]int // index in members, for removal in O(1)
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
		m = &member{id: id, rooms: make(map[socket.Room]struct{}, len(rooms))}
		f.members[id] = m
	}
	for _, name := range rooms {
		if _, ok := m.rooms[name]; ok {
			continue
		}
		m.rooms[name] = struct{}{}
		r := f.rooms[name]
		if r == nil {
			r = &room{at: map[*member]int{}}
			f.rooms[name] = r
		}
		r.at[m] = len(r.members)
		r.members = append(r.members, m)
	}
}

// Del takes a socket out of one room.
func (f *Fanout) Del(id socket.SocketId, name socket.Room) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m := f.members[id]; m != nil {
		f.leave(m, name)
	}
}

// DelAll forgets a socket.
func (f *Fanout) DelAll(id socket.SocketId) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.members[id]
	if m == nil {
		return
	}
	for name := range m.rooms {
		f.leave(m, name)
	}
	delete(f.members, id)
}

func (f *Fanout) leave(m *member, name socket.Room) {
	if _, ok := m.rooms[name]; !ok {
		return
	}
	delete(m.rooms, name)
	r := f.rooms[name]
	i := r.at[m]
	last := len(r.members) - 1
	r.members[i] = r.members[last]
	r.at[r.members[i]] = i
	r.members[last] = nil
	r.members = r.members[:last]
	delete(r.at, m)
	if last == 0 {
		delete(f.rooms, name)
	}
}

// Deliver sends a packet to the sockets of this instance that opts target
// (every socket when opts names no room), each once, none in opts.Except.
// stamp, if not nil, runs first under the index's lock (the recovery
// offset is added there), so that offsets reach every socket in order.
// Per socket, frames keep the order of the calls that queued them: the
// fast path and the library's path both write before Deliver returns.
func (f *Fanout) Deliver(p *parser.Packet, opts *socket.BroadcastOptions, stamp func(*parser.Packet)) {
	flags := &socket.BroadcastFlags{}
	if opts != nil && opts.Flags != nil {
		flags = opts.Flags
	}
	wopts := &socket.WriteOptions{PreEncoded: true, Volatile: flags.Volatile}
	wopts.Compress = flags.Compress
	p.Nsp = f.nsp.Name()

	f.mu.Lock()
	if f.sealed {
		f.mu.Unlock()
		return
	}
	if stamp != nil {
		stamp(p)
	}
	encoded := f.encoder.Encode(p)
	var frame []byte // nil: not one text packet; every socket takes the library's path
	if len(encoded) == 1 {
		if sb, ok := encoded[0].(*types.StringBuffer); ok {
			// One Engine.IO message ("4") in one text frame.
			n := 1 + sb.Len()
			frame = sio.AppendFrameHeader(make([]byte, 0, sio.MaxFrameHeader+n), sio.OpText, n, nil)
			frame = append(append(frame, '4'), sb.Bytes()...)
		}
	}
	var slow []*socket.Socket
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
		s := f.resolve(m)
		if s == nil || !s.Connected() {
			return
		}
		if frame != nil {
			if t, ok := s.Conn().Transport().(*Transport); ok && t.Settled() {
				if t.Queue(frame, flags.Volatile) {
					counts.Websocket++
				}
				return
			}
		}
		slow = append(slow, s)
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
	for _, s := range slow {
		s.Client().WriteToEngine(encoded, wopts)
	}
	counts.Library = len(slow)
	if f.delivered != nil {
		f.delivered(counts)
	}
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
