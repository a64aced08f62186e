package redisadapter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/adapters/adapter/v3"
	sioredis "github.com/zishang520/socket.io/adapters/redis/v3"
	libadapter "github.com/zishang520/socket.io/adapters/redis/v3/adapter"
	"github.com/zishang520/socket.io/parsers/socket/v3/parser"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
	"github.com/zishang520/socket.io/v3/pkg/utils"
)

// deliveryWait bounds how long Broadcast waits for the reader to deliver
// its entry locally.
const deliveryWait = time.Second

// streamsHub is the Streams kind's socket.AdapterConstructor. It owns what
// the namespaces of one process share: the stream reader, which replaces the
// library builder's polling loop so that deliveries and session restores can
// be ordered against each other, and the trimmer.
type streamsHub struct {
	cfg    *config
	rc     *sioredis.RedisClient
	rdb    redis.UniversalClient
	stream string
	log    *slog.Logger
	m      *metrics
	ctx    context.Context

	mu      sync.Mutex
	nsps    map[string]*streamsAdapter
	started bool
	wg      sync.WaitGroup

	// pos is the id of the last stream entry the reader has delivered on
	// this instance; stored before the namespace's gate is released.
	pos atomic.Pointer[streamID]
	// window is the longest recovery window of the namespaces (ms).
	window atomic.Int64

	lastRead atomic.Int64 // unix nanos of the last XREAD that answered
	failing  atomic.Bool

	// advanced is closed (and replaced) whenever the reader has delivered
	// a batch, to wake publishers waiting for their entry.
	advMu    sync.Mutex
	advanced chan struct{}
	// applying is set while the reader runs the library's handling of a
	// remote join/leave/disconnect, whose handlers may broadcast: those
	// broadcasts must not wait for the reader.
	applying atomic.Bool
}

func newStreamsHub(ctx context.Context, cfg *config, rc *sioredis.RedisClient, stream string, m *metrics) *streamsHub {
	h := &streamsHub{cfg: cfg, rc: rc, rdb: rc.Client, stream: stream, log: cfg.logger, m: m, ctx: ctx,
		nsps: map[string]*streamsAdapter{}, advanced: make(chan struct{})}
	h.pos.Store(&streamID{})
	return h
}

// position is the reader's position.
func (h *streamsHub) position() streamID { return *h.pos.Load() }

// signalAdvance wakes the publishers waiting in waitDelivered.
func (h *streamsHub) signalAdvance() {
	h.advMu.Lock()
	close(h.advanced)
	h.advanced = make(chan struct{})
	h.advMu.Unlock()
}

// waitDelivered returns once the reader has delivered entry id on this
// instance, or after timeout (a reader cut off from Redis delivers it when
// it is back).
func (h *streamsHub) waitDelivered(id streamID, timeout time.Duration) {
	if h.applying.Load() {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		h.advMu.Lock()
		ch := h.advanced
		h.advMu.Unlock()
		if !h.position().less(id) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			return
		case <-h.ctx.Done():
			return
		}
	}
}

// New builds the adapter of a namespace: the library's streams adapter
// (publishing, pub/sub for requests, ServerCount) wrapped by ours.
func (h *streamsHub) New(nsp socket.Namespace) socket.Adapter {
	lib := libadapter.MakeRedisStreamsAdapter()
	a := &streamsAdapter{RedisStreamsAdapter: lib, hub: h,
		catching: map[socket.SocketId]*catchup{}, since: map[socket.SocketId]streamID{}}
	// Calls the library makes through its prototype (DoPublish, ...) reach
	// the wrapper first.
	lib.Prototype(a)
	lib.SetRedis(h.rc)
	o := libadapter.DefaultRedisStreamsAdapterOptions()
	o.SetStreamName(h.stream)
	o.SetStreamCount(1) // one stream keeps every broadcast in one order
	o.SetChannelPrefix(h.stream)
	o.SetMaxLen(h.cfg.maxLen)
	o.SetSessionKeyPrefix(h.cfg.prefix + "sio:session:")
	lib.SetOpts(o)
	lib.Construct(nsp)

	if rec := nsp.Server().Opts().ConnectionStateRecovery(); rec != nil {
		a.window = time.Duration(rec.MaxDisconnectionDuration()) * time.Millisecond
		for {
			old := h.window.Load()
			if a.window.Milliseconds() <= old || h.window.CompareAndSwap(old, a.window.Milliseconds()) {
				break
			}
		}
	}
	_ = nsp.On("connection", func(args ...any) {
		if s, ok := args[0].(*socket.Socket); ok {
			a.onConnection(s)
		}
	})

	h.mu.Lock()
	h.nsps[nsp.Name()] = a
	if !h.started {
		h.started = true
		h.wg.Add(2)
		go h.read()
		go h.trim()
	}
	h.mu.Unlock()
	return a
}

func (h *streamsHub) adapterOf(nsp string) *streamsAdapter {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nsps[nsp]
}

func (h *streamsHub) remove(a *streamsAdapter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nsps[a.Nsp().Name()] == a {
		delete(h.nsps, a.Nsp().Name())
	}
}

// wait returns once the reader and trimmer have stopped (after the context
// given to New is cancelled).
func (h *streamsHub) wait() { h.wg.Wait() }

// check reports a reader that has been failing for a while.
func (h *streamsHub) check() error {
	h.mu.Lock()
	started := h.started
	h.mu.Unlock()
	if !started || !h.failing.Load() {
		return nil
	}
	since := time.Since(time.Unix(0, h.lastRead.Load()))
	if since > 3*h.cfg.block+5*time.Second {
		return fmt.Errorf("redisadapter: cannot read stream %q for %s", h.stream, since.Round(time.Second))
	}
	return nil
}

// read delivers the stream's entries on this instance, in stream order,
// until the context ends. A failed read is retried from the same id, so a
// Redis outage shorter than the retention loses nothing.
func (h *streamsHub) read() {
	defer h.wg.Done()
	last := h.tail()
	start := last
	h.pos.Store(&start)
	h.lastRead.Store(time.Now().UnixNano())
	backoff := 100 * time.Millisecond
	for h.ctx.Err() == nil {
		res, err := h.rdb.XRead(h.ctx, &redis.XReadArgs{
			Streams: []string{h.stream, last.String()},
			Count:   h.cfg.readCount,
			Block:   h.cfg.block,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if h.ctx.Err() != nil {
				return
			}
			h.m.readErrors.Inc()
			if !h.failing.Swap(true) {
				h.log.Error("redis adapter: cannot read the stream; retrying", "stream", h.stream, "err", err)
			}
			sleep(h.ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		h.lastRead.Store(time.Now().UnixNano())
		if h.failing.Swap(false) {
			h.log.Info("redis adapter: reading the stream again", "stream", h.stream, "from", last.String())
		}
		backoff = 100 * time.Millisecond
		for _, s := range res {
			for _, msg := range s.Messages {
				id, ok := parseID(msg.ID)
				if !ok {
					continue
				}
				h.dispatch(id, msg.Values)
				last = id
			}
		}
		if len(res) > 0 {
			h.signalAdvance()
		}
	}
}

// tail returns the id of the stream's last entry (0-0 when empty), retrying
// until Redis answers: reading must start from a known position.
func (h *streamsHub) tail() streamID {
	backoff := 100 * time.Millisecond
	for h.ctx.Err() == nil {
		res, err := h.rdb.XRevRangeN(h.ctx, h.stream, "+", "-", 1).Result()
		if err == nil {
			if len(res) == 0 {
				return streamID{}
			}
			if id, ok := parseID(res[0].ID); ok {
				return id
			}
			return streamID{}
		}
		h.m.readErrors.Inc()
		h.failing.Store(true)
		h.log.Warn("redis adapter: cannot read the stream's tail; retrying", "stream", h.stream, "err", err)
		sleep(h.ctx, backoff)
		backoff = min(2*backoff, 5*time.Second)
	}
	return streamID{}
}

// dispatch delivers one entry to the sockets of its namespace on this
// instance and advances pos, under the namespace's gate. This instance's
// own broadcasts come this way too, so that every instance delivers in
// the stream's order: a client's offset then marks everything before it
// as received, which recovery relies on.
func (h *streamsHub) dispatch(id streamID, values map[string]any) {
	raw := libadapter.RawClusterMessage(values)
	a := h.adapterOf(raw.Nsp())
	if a == nil {
		h.pos.Store(&id)
		return
	}
	if raw.Type() != strconv.Itoa(int(adapter.BROADCAST)) {
		// Joins, leaves and disconnects requested by other instances (the
		// library applied this instance's own when it published them). Not
		// under the gate, which they do not need: a disconnect runs the
		// Hub's handlers, which broadcast.
		h.applying.Store(true)
		if err := a.OnRawMessage(raw, id.String()); err != nil {
			h.log.Debug("redis adapter: skipping a stream entry", "id", id.String(), "err", err)
		}
		h.applying.Store(false)
		h.pos.Store(&id)
		return
	}
	a.gate.RLock()
	defer a.gate.RUnlock()
	defer h.pos.Store(&id) // before the gate opens: a snapshot sees it delivered
	b, err := decodeBroadcast(raw)
	if err != nil {
		h.log.Warn("redis adapter: undecodable broadcast in the stream", "id", id.String(), "err", err)
		return
	}
	opts := adapter.DecodeOptions(b.Opts)
	if b.RequestId != nil {
		return // acknowledged broadcasts travel by pub/sub, never through the stream
	}
	if a.recoverable(b.Packet, opts) {
		b.Packet.Data = append(utils.TryCast[[]any](b.Packet.Data), id.String())
	}
	a.deliver(b.Packet, opts)
}

// trim drops entries older than the recovery window plus the margin, and
// recovering states nobody finished.
func (h *streamsHub) trim() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.trimEvery)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		for _, a := range h.nsps {
			a.sweep(time.Now())
		}
		h.mu.Unlock()
		keep := time.Duration(h.window.Load())*time.Millisecond + h.cfg.margin
		minID := streamID{ms: uint64(time.Now().Add(-keep).UnixMilli())}
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		err := h.rdb.XTrimMinIDApprox(ctx, h.stream, minID.String(), 0).Err()
		cancel()
		if err != nil && h.ctx.Err() == nil {
			h.log.Warn("redis adapter: cannot trim the stream", "stream", h.stream, "err", err)
		}
	}
}

// decodeBroadcast reads a BROADCAST entry the library's streams adapter
// wrote: JSON, or base64 MessagePack when the packet carries binary data.
func decodeBroadcast(raw libadapter.RawClusterMessage) (*adapter.BroadcastMessage, error) {
	data := raw.Data()
	if data == "" {
		return nil, errors.New("broadcast without data")
	}
	var b adapter.BroadcastMessage
	if data[0] == '{' {
		if err := json.Unmarshal([]byte(data), &b); err != nil {
			return nil, fmt.Errorf("decode JSON broadcast: %w", err)
		}
	} else {
		bin, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, fmt.Errorf("decode base64 broadcast: %w", err)
		}
		if err := utils.MsgPack().Decode(bin, &b); err != nil {
			return nil, fmt.Errorf("decode MessagePack broadcast: %w", err)
		}
	}
	if b.Packet == nil {
		return nil, errors.New("broadcast without packet")
	}
	return &b, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// streamsAdapter is one namespace's adapter. It lets the library publish
// and handle cluster requests, and takes over delivery: every broadcast is
// delivered from the stream, in its order, and a socket being recovered
// gets, in order and once, every packet it missed: those in the stream
// before its restore and those delivered meanwhile.
type streamsAdapter struct {
	libadapter.RedisStreamsAdapter
	hub    *streamsHub
	window time.Duration // 0: recovery off

	// gate orders deliveries (read-locked) against snapshots and replays of
	// recovering sockets (write-locked).
	gate sync.RWMutex

	mu       sync.Mutex
	catching map[socket.SocketId]*catchup
	since    map[socket.SocketId]streamID // stream position when each local socket connected

	// local delivers to this instance's sockets (the Hub's fast fanout);
	// nil: the library's in-memory delivery.
	local func(*parser.Packet, *socket.BroadcastOptions)
}

// SetLocalBroadcast makes deliveries to this instance's sockets go through
// fn (the Hub sets its fast fanout here) instead of the library's.
func (a *streamsAdapter) SetLocalBroadcast(fn func(*parser.Packet, *socket.BroadcastOptions)) {
	a.local = fn
}

// recoverable reports whether a packet gets an offset and can be replayed:
// plain events, without acknowledgement, not volatile (as in the library).
func (a *streamsAdapter) recoverable(p *parser.Packet, opts *socket.BroadcastOptions) bool {
	return a.window > 0 && p.Type == parser.EVENT && p.Id == nil &&
		(opts == nil || opts.Flags == nil || !opts.Flags.Volatile)
}

// Broadcast appends the packet to the stream; the reader then delivers it
// here as on every other instance, in stream order, with its stream id as
// offset. Broadcast returns once that is done on this instance (as with
// any Socket.IO adapter, an emit has reached the local sockets when it
// returns; a shutdown that follows cuts no broadcast in half). When Redis
// refuses it, it is delivered here only, at once.
func (a *streamsAdapter) Broadcast(packet *parser.Packet, opts *socket.BroadcastOptions) {
	if opts == nil || opts.Flags == nil || !opts.Flags.Local {
		off, err := a.PublishAndReturnOffset(&adapter.ClusterMessage{
			Type: adapter.BROADCAST,
			Data: &adapter.BroadcastMessage{Packet: packet, Opts: adapter.EncodeOptions(opts)},
		})
		if err == nil {
			if id, ok := parseID(string(off)); ok {
				a.hub.waitDelivered(id, deliveryWait)
			}
			return
		}
		a.hub.m.publishErrors.Inc()
		a.hub.m.publishFailures.Add(1)
		a.hub.log.Error("redis adapter: cannot publish a broadcast; delivered on this instance only", "err", err)
	}
	a.gate.RLock()
	defer a.gate.RUnlock()
	a.deliver(packet, opts)
}

// deliver hands a packet to this instance's sockets, except those being
// recovered, which queue it for their replay. Callers hold the gate.
func (a *streamsAdapter) deliver(packet *parser.Packet, opts *socket.BroadcastOptions) {
	var except []socket.Room
	a.mu.Lock()
	for sid, c := range a.catching {
		except = append(except, socket.Room(sid))
		if !c.closed && a.recoverable(packet, opts) && shouldInclude(c.rooms, opts) {
			c.pending = append(c.pending, queued{packet, opts})
		}
	}
	a.mu.Unlock()
	a.localBroadcast(packet, localOptions(opts, except))
}

// localBroadcast hands a packet to this instance's sockets; opts has Local.
func (a *streamsAdapter) localBroadcast(packet *parser.Packet, opts *socket.BroadcastOptions) {
	if a.local != nil {
		a.local(packet, opts)
		return
	}
	a.RedisStreamsAdapter.Broadcast(packet, opts)
}

// localOptions copies opts for a delivery on this instance only, also
// excluding the given rooms (recovering sockets' own rooms).
func localOptions(opts *socket.BroadcastOptions, except []socket.Room) *socket.BroadcastOptions {
	lo := &socket.BroadcastOptions{Flags: &socket.BroadcastFlags{}}
	if opts != nil {
		lo.Rooms = opts.Rooms
		if opts.Flags != nil {
			*lo.Flags = *opts.Flags
		}
	}
	lo.Flags.Local = true
	if len(except) == 0 && opts != nil && opts.Except != nil {
		lo.Except = opts.Except
		return lo
	}
	lo.Except = types.NewSet(except...)
	if opts != nil && opts.Except != nil {
		lo.Except.Add(opts.Except.Keys()...)
	}
	return lo
}

// shouldInclude reports whether a socket in rooms is a target of opts.
func shouldInclude(rooms *types.Set[socket.Room], opts *socket.BroadcastOptions) bool {
	if rooms == nil {
		return false
	}
	included := opts == nil || opts.Rooms == nil || opts.Rooms.Len() == 0
	if !included {
		for _, r := range opts.Rooms.Keys() {
			if rooms.Has(r) {
				included = true
				break
			}
		}
	}
	if included && opts != nil && opts.Except != nil {
		for _, r := range opts.Except.Keys() {
			if rooms.Has(r) {
				return false
			}
		}
	}
	return included
}

// onConnection runs when a socket of the namespace has passed the
// middlewares: a fresh socket records where the stream stood; a recovered
// one is replayed what it missed once the Hub's connection handler has run
// (the socket's task queue runs the replay after the current task).
func (a *streamsAdapter) onConnection(s *socket.Socket) {
	sid := s.Id()
	a.mu.Lock()
	c := a.catching[sid]
	if c == nil {
		a.since[sid] = a.hub.position()
	}
	a.mu.Unlock()
	if c != nil {
		s.Enqueue(func() { a.replay(sid) })
	}
}

// DelAll forgets a socket that leaves: recovering state and start
// position; a socket refused during its recovery gets its session back.
func (a *streamsAdapter) DelAll(id socket.SocketId) {
	a.mu.Lock()
	c := a.catching[id]
	if c != nil {
		// Restored but refused by a middleware (or gone before connecting).
		delete(a.catching, id)
		c.closed = true
	}
	delete(a.since, id)
	a.mu.Unlock()
	a.RedisStreamsAdapter.DelAll(id)
	if c != nil {
		a.hub.m.restores.WithLabelValues(outcomeAuthFail).Inc()
		a.putBack(c.rec)
	}
}

// Close unregisters the namespace from the reader.
func (a *streamsAdapter) Close() {
	a.hub.remove(a)
	a.RedisStreamsAdapter.Close()
}
