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

	"github.com/turumba/realtime/internal/fastpath"
)

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

	// published is the id of the last entry this instance appended.
	published atomic.Pointer[streamID]
	// start is where the reader began (nil until it knows): entries up to
	// it are never read, so the ones this instance appended before the
	// reader knew its start are delivered here apart (early).
	start   atomic.Pointer[streamID]
	startMu sync.Mutex
	early   []earlyEntry
	// pubs feeds the publisher goroutine (BroadcastAsync), in call order;
	// queued counts what was given to it and is not appended yet.
	pubs   chan publication
	queued atomic.Int32
	// direct counts the Broadcast calls appending from their own goroutine
	// (see Broadcast).
	direct atomic.Int32
	// advanced is closed (and replaced) whenever the reader has delivered
	// a batch, to wake Flush.
	advMu    sync.Mutex
	advanced chan struct{}
}

func newStreamsHub(ctx context.Context, cfg *config, rc *sioredis.RedisClient, stream string, m *metrics) *streamsHub {
	h := &streamsHub{cfg: cfg, rc: rc, rdb: rc.Client, stream: stream, log: cfg.logger, m: m, ctx: ctx,
		nsps: map[string]*streamsAdapter{}, advanced: make(chan struct{}), pubs: make(chan publication, pubQueue)}
	h.pos.Store(&streamID{})
	h.published.Store(&streamID{})
	return h
}

// position is the reader's position.
func (h *streamsHub) position() streamID { return *h.pos.Load() }

// signalAdvance wakes the callers waiting in flush.
func (h *streamsHub) signalAdvance() {
	h.advMu.Lock()
	close(h.advanced)
	h.advanced = make(chan struct{})
	h.advMu.Unlock()
}

// appended records id as appended by this instance.
func (h *streamsHub) appended(id streamID) {
	for {
		old := h.published.Load()
		if !old.less(id) || h.published.CompareAndSwap(old, &id) {
			return
		}
	}
}

// flush returns once the reader has delivered on this instance every
// entry this instance appended before the call, or when ctx ends.
func (h *streamsHub) flush(ctx context.Context) error {
	id := *h.published.Load()
	for {
		h.advMu.Lock()
		ch := h.advanced
		h.advMu.Unlock()
		if !h.position().less(id) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("redisadapter: broadcasts not delivered locally (reader at %s, last appended %s): %w",
				h.position().String(), id.String(), ctx.Err())
		case <-h.ctx.Done():
			return errors.New("redisadapter: closed")
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
		h.wg.Add(3)
		go h.read()
		go h.trim()
		go h.publish()
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
	if h.cfg.beforeTail != nil {
		h.cfg.beforeTail()
	}
	last := h.tail()
	start := last
	h.pos.Store(&start)
	h.begin(start)
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

// earlyEntry is a broadcast this instance appended before the reader knew
// where it starts.
type earlyEntry struct {
	p  publication
	id streamID
}

// begin records where the reader starts and delivers here the broadcasts
// this instance appended at or before it (the reader will not read them).
func (h *streamsHub) begin(start streamID) {
	h.startMu.Lock()
	h.start.Store(&start)
	early := h.early
	h.early = nil
	h.startMu.Unlock()
	for _, e := range early {
		if !start.less(e.id) {
			e.p.a.deliverHere(e.p.packet, e.p.opts)
		}
	}
}

// checkStart runs for every entry this instance appended: one at or before
// the reader's start is delivered here (off the calling goroutine, which
// may be the publisher), and one appended before the reader knew its start
// is left to begin. Past the first moments only the first load runs.
func (h *streamsHub) checkStart(p publication, id streamID) {
	s := h.start.Load()
	if s == nil {
		h.startMu.Lock()
		if s = h.start.Load(); s == nil {
			h.early = append(h.early, earlyEntry{p, id})
			h.startMu.Unlock()
			return
		}
		h.startMu.Unlock()
	}
	if !s.less(id) {
		go p.a.deliverHere(p.packet, p.opts)
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
		if err := a.OnRawMessage(raw, id.String()); err != nil {
			h.log.Debug("redis adapter: skipping a stream entry", "id", id.String(), "err", err)
		}
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
	h.m.readLag.Observe(float64(time.Now().UnixNano()-int64(id.ms)*int64(time.Millisecond)) / float64(time.Second))
}

// pubQueue bounds the broadcasts waiting for the publisher goroutine; a
// caller of BroadcastAsync waits while it is full.
const pubQueue = 1024

// publication is a broadcast waiting for the publisher goroutine.
type publication struct {
	a      *streamsAdapter
	packet *parser.Packet
	opts   *socket.BroadcastOptions
	done   func(error)
}

// errClosed is the outcome of broadcasts started once the adapter closes.
var errClosed = errors.New("redisadapter: closed")

// pubBatch bounds the appends the publisher sends in one pipeline.
const pubBatch = 64

// publish appends the broadcasts queued on pubs in the order they were
// queued, until the context ends: whatever is queued when it comes back
// from Redis goes out in one pipeline (one round trip, one write), so
// concurrent emits and a pipelined consumer share the round trips. Those
// still queued when the context ends are delivered on this instance only
// and reported not appended.
func (h *streamsHub) publish() {
	defer h.wg.Done()
	batch := make([]publication, 0, pubBatch)
	for {
		select {
		case p := <-h.pubs:
			batch = append(batch[:0], p)
		more:
			for len(batch) < pubBatch {
				select {
				case p := <-h.pubs:
					batch = append(batch, p)
				default:
					break more
				}
			}
			h.appendBatch(batch)
			h.queued.Add(-int32(len(batch)))
			clear(batch)
		case <-h.ctx.Done():
			for {
				select {
				case p := <-h.pubs:
					h.queued.Add(-1)
					go p.a.fallback(p, errClosed)
				default:
					return
				}
			}
		}
	}
}

// appendBatch appends the broadcasts of batch to the stream in one
// pipeline and reports each outcome; one Redis refuses is delivered on this
// instance only (publish's fallback).
func (h *streamsHub) appendBatch(batch []publication) {
	pipe := h.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(batch))
	for i, p := range batch {
		values, err := p.a.entry(p.packet, p.opts)
		if err != nil {
			// Not encodable as the library would (binary data): the
			// library appends it, after those before it.
			h.execPipeline(pipe, batch[:i], cmds[:i])
			h.appendDirect(p, true)
			h.appendBatch(batch[i+1:])
			return
		}
		cmds[i] = pipe.XAdd(h.ctx, h.xadd(values))
	}
	h.execPipeline(pipe, batch, cmds)
}

// execPipeline sends the appends queued in pipe (those of batch) and
// reports each outcome.
func (h *streamsHub) execPipeline(pipe redis.Pipeliner, batch []publication, cmds []*redis.StringCmd) {
	if len(batch) == 0 {
		return
	}
	_, _ = pipe.Exec(h.ctx) // each command carries its own error
	var failed []publication
	var errs []error
	for i, p := range batch {
		if err := h.settle(p, cmds[i].Val(), cmds[i].Err()); err != nil {
			failed = append(failed, p)
			errs = append(errs, err)
		}
	}
	if len(failed) > 0 {
		// Not on this goroutine: a local delivery can close a socket,
		// whose handlers broadcast, and that waits for this goroutine.
		go func() {
			for i, p := range failed {
				p.a.fallback(p, errs[i])
			}
		}()
	}
}

// fallback delivers a publication on this instance only and reports err.
func (a *streamsAdapter) fallback(p publication, err error) {
	a.deliverHere(p.packet, p.opts)
	p.done(err)
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
		if fast, ok := decodeJSONBroadcast(data); ok {
			return fast, nil
		}
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

// wireBroadcast is a BROADCAST entry's JSON with the packet's arguments
// left encoded.
type wireBroadcast struct {
	Opts      *adapter.PacketOptions `json:"opts,omitempty"`
	Packet    *wirePacket            `json:"packet,omitempty"`
	RequestId *string                `json:"requestId,omitempty"`
}

type wirePacket struct {
	Type        parser.PacketType `json:"type"`
	Nsp         string            `json:"nsp"`
	Data        []json.RawMessage `json:"data"`
	Id          *uint64           `json:"id,omitempty"`
	Attachments *uint64           `json:"attachments,omitempty"`
}

// decodeJSONBroadcast decodes the usual entry, an event: its string
// arguments (the event's name) become strings and the others stay encoded
// JSON, which the sockets' encoder writes out as they are, instead of
// being decoded into maps and encoded again. ok is false for anything
// else (no packet, arguments not an array), left to the generic decoding.
func decodeJSONBroadcast(data string) (*adapter.BroadcastMessage, bool) {
	var w wireBroadcast
	if err := json.Unmarshal([]byte(data), &w); err != nil || w.Packet == nil || w.Packet.Data == nil {
		return nil, false
	}
	args := make([]any, len(w.Packet.Data))
	for i, raw := range w.Packet.Data {
		if len(raw) > 0 && raw[0] == '"' {
			var str string
			if err := json.Unmarshal(raw, &str); err != nil {
				return nil, false
			}
			args[i] = str
			continue
		}
		args[i] = raw
	}
	return &adapter.BroadcastMessage{Opts: w.Opts, RequestId: w.RequestId, Packet: &parser.Packet{
		Type: w.Packet.Type, Nsp: w.Packet.Nsp, Data: args, Id: w.Packet.Id, Attachments: w.Packet.Attachments,
	}}, true
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

// Broadcast appends the packet to the stream and returns: the reader
// delivers it here as on every other instance, in stream order, with its
// stream id as offset. The caller does not wait for that (the Hub's event
// source goes on with the next event once Redis has the entry); Flush
// waits for it. When Redis refuses the entry, it is delivered here only,
// at once, and counted as a failure. A call alone appends from its own
// goroutine; concurrent calls, or a call while BroadcastAsync appends are
// pending, go through the publisher (its pipelines batch them, and a call
// after a BroadcastAsync of the same goroutine stays behind it).
func (a *streamsAdapter) Broadcast(packet *parser.Packet, opts *socket.BroadcastOptions) {
	if opts != nil && opts.Flags != nil && opts.Flags.Local {
		a.deliverHere(packet, opts)
		return
	}
	h := a.hub
	if h.direct.Add(1) == 1 && h.queued.Load() == 0 && h.ctx.Err() == nil {
		// Alone: appended from this goroutine, without the publisher's
		// hop (lower latency at low rates).
		defer h.direct.Add(-1)
		h.appendNow(publication{a: a, packet: packet, opts: opts, done: func(error) {}})
		return
	}
	h.direct.Add(-1)
	// Concurrent emits: through the publisher, whose pipelines they share.
	done := make(chan struct{})
	a.BroadcastAsync(packet, opts, func(error) { close(done) }) // a failure is counted (BroadcastFailures)
	<-done
}

// BroadcastAsync is Broadcast without waiting for Redis: a publisher
// goroutine appends the broadcasts in the order of the calls, and done
// gets Broadcast's outcome (nil: Redis has the entry; an error: it was
// delivered on this instance only). The Hub's event source takes the next
// event meanwhile and settles this one when done is called.
func (a *streamsAdapter) BroadcastAsync(packet *parser.Packet, opts *socket.BroadcastOptions, done func(error)) {
	if opts != nil && opts.Flags != nil && opts.Flags.Local {
		a.deliverHere(packet, opts)
		done(nil)
		return
	}
	p := publication{a: a, packet: packet, opts: opts, done: done}
	if a.hub.ctx.Err() == nil {
		a.hub.queued.Add(1)
		select {
		case a.hub.pubs <- p:
			return
		case <-a.hub.ctx.Done():
			a.hub.queued.Add(-1)
		}
	}
	a.fallback(p, errClosed)
}

// entry is the stream entry of a broadcast, in the library's format (the
// fields of its RawClusterMessage: uid, nsp, type, data as JSON); an error
// for a packet with binary data, which the library encodes as base64
// MessagePack (publishDirect).
func (a *streamsAdapter) entry(packet *parser.Packet, opts *socket.BroadcastOptions) (map[string]any, error) {
	if parser.HasBinary(packet.Data) {
		return nil, errors.New("binary data")
	}
	data, err := json.Marshal(&adapter.BroadcastMessage{Packet: packet, Opts: adapter.EncodeOptions(opts)})
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"uid":  string(a.Uid()),
		"nsp":  a.Nsp().Name(),
		"type": strconv.Itoa(int(adapter.BROADCAST)),
		"data": string(data),
	}, nil
}

// appendNow appends one publication from the calling goroutine (not the
// publisher's): one XADD, the outcome reported as appendBatch does, a
// refused one delivered here at once.
func (h *streamsHub) appendNow(p publication) {
	values, err := p.a.entry(p.packet, p.opts)
	if err != nil {
		h.appendDirect(p, false)
		return
	}
	off, err := h.rdb.XAdd(h.ctx, h.xadd(values)).Result()
	h.outcome(p, off, err, false)
}

// xadd is the append of one entry, trimmed as the library trims.
func (h *streamsHub) xadd(values map[string]any) *redis.XAddArgs {
	return &redis.XAddArgs{Stream: h.stream, MaxLen: h.cfg.maxLen, Approx: true, ID: "*", Values: values}
}

// outcome reports an append's outcome; a refused broadcast is delivered on
// this instance only, off the calling goroutine when it is the publisher.
func (h *streamsHub) outcome(p publication, off string, err error, publisher bool) {
	err = h.settle(p, off, err)
	switch {
	case err == nil:
	case publisher:
		go p.a.fallback(p, err)
	default:
		p.a.fallback(p, err)
	}
}

// settle records an append's outcome: a success is done; a refusal is
// counted and returned, and the caller delivers the broadcast on this
// instance only (fallback), which also calls done.
func (h *streamsHub) settle(p publication, off string, err error) error {
	if err == nil {
		if id, ok := parseID(off); ok {
			h.appended(id)
			h.checkStart(p, id)
		}
		p.done(nil)
		return nil
	}
	p.a.failed(err)
	return fmt.Errorf("redisadapter: append to stream %q: %w", h.stream, err)
}

// appendDirect appends a publication through the library (its encoding,
// one round trip) and reports the outcome; publisher says whether this is
// the publisher goroutine (see outcome).
func (h *streamsHub) appendDirect(p publication, publisher bool) {
	off, err := p.a.PublishAndReturnOffset(&adapter.ClusterMessage{
		Type: adapter.BROADCAST,
		Data: &adapter.BroadcastMessage{Packet: p.packet, Opts: adapter.EncodeOptions(p.opts)},
	})
	h.outcome(p, string(off), err, publisher)
}

// failed counts an append Redis refused (BroadcastFailures); the broadcast
// is delivered on this instance only (fallback).
func (a *streamsAdapter) failed(err error) {
	a.hub.m.publishErrors.Inc()
	a.hub.m.publishFailures.Add(1)
	a.hub.log.Error("redis adapter: cannot publish a broadcast; delivered on this instance only", "err", err)
}

// deliverHere delivers a broadcast on this instance only, at once.
func (a *streamsAdapter) deliverHere(packet *parser.Packet, opts *socket.BroadcastOptions) {
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
		if !c.closed && a.recoverable(packet, opts) && fastpath.Targets(c.rooms, opts) {
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
