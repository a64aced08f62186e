package redisadapter

// Connection state recovery across instances.
//
// The library's streams adapter can restore a session on any instance, but
// it hands the missed packets to the socket before the middlewares run (a
// client with an expired token is sent them before being refused), and a
// broadcast read from the stream between its replay and the moment the
// socket is registered is lost, or sent twice if the reader was behind.
// This file keeps the session format and the stream, and replaces the
// restore:
//
//  1. RestoreSession takes the session from Redis, checks that the stream
//     still holds everything after the client's offset, and, under the
//     gate, marks the socket as recovering: from then on every delivery on
//     this instance skips it and queues the packet for it instead. It
//     returns the session without missed packets, so nothing is written to
//     the client.
//  2. The middlewares run (the token is verified again). A refused socket
//     was sent nothing; DelAll puts its session back for the rest of the
//     window, so the client can retry with a fresh token.
//  3. Once the Hub's connection handler has run (it drops rooms the new
//     token no longer allows), replay sends, under the gate, the stream's
//     entries after the offset up to the reader's position at step 1, then
//     the queued ones, each filtered by the socket's rooms at that moment,
//     and ends the recovering state. Later packets flow as usual.
//
// Every instance delivers broadcasts in the stream's order (its own too,
// see dispatch), so the offset a client sends marks everything before it
// as received.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/adapters/adapter/v3"
	libadapter "github.com/zishang520/socket.io/adapters/redis/v3/adapter"
	"github.com/zishang520/socket.io/parsers/socket/v3/parser"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
	"github.com/zishang520/socket.io/v3/pkg/utils"

	"github.com/turumba/realtime/internal/fastpath"
)

// staleCatchup is how long a socket may stay recovering (restored but
// neither connected nor refused) before its state is dropped.
const staleCatchup = time.Minute

// catchup is the state of a socket being recovered on this instance.
type catchup struct {
	rec     sessionRecord           // as taken from Redis, to put back if the socket is refused
	rooms   *types.Set[socket.Room] // the session's rooms (a superset of the final ones)
	since   streamID
	before  []queued // from the stream, delivered here before the restore
	pending []queued // delivered here since the restore
	started time.Time
	closed  bool
}

type queued struct {
	packet *parser.Packet
	opts   *socket.BroadcastOptions
}

// sessionRecord is a disconnected socket's session as stored in Redis.
type sessionRecord struct {
	Sid   string   `json:"sid"`
	Pid   string   `json:"pid"`
	Rooms []string `json:"rooms"`
	Data  any      `json:"data,omitempty"`
	// DisconnectedAt is when this instance noticed the disconnection (unix ms).
	DisconnectedAt int64 `json:"disconnected_at"`
	// Since is the stream position when the socket first connected: nothing
	// before it was meant for this session.
	Since string `json:"since"`
}

func (a *streamsAdapter) sessionKey(pid socket.PrivateSessionId) string {
	return a.hub.cfg.prefix + "realtime:session:" + string(pid)
}

// PersistSession saves the session of a socket that dropped for a
// recoverable reason, for the recovery window.
func (a *streamsAdapter) PersistSession(s *socket.SessionToPersist) {
	if a.window <= 0 || s == nil {
		return
	}
	a.mu.Lock()
	since := a.since[s.Sid]
	a.mu.Unlock()
	rec := sessionRecord{Sid: string(s.Sid), Pid: string(s.Pid), Data: s.Data,
		DisconnectedAt: time.Now().UnixMilli(), Since: since.String()}
	if s.Rooms != nil {
		for _, r := range s.Rooms.Keys() {
			rec.Rooms = append(rec.Rooms, string(r))
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		// The socket's data is not JSON; the Hub derives it again from the token.
		a.hub.log.Warn("redis adapter: session data is not JSON; persisting without it", "sid", s.Sid, "err", err)
		rec.Data = nil
		if b, err = json.Marshal(rec); err != nil {
			a.hub.m.persisted.WithLabelValues("error").Inc()
			return
		}
	}
	ctx, cancel := context.WithTimeout(a.hub.ctx, 2*time.Second)
	defer cancel()
	if err := a.hub.rdb.Set(ctx, a.sessionKey(s.Pid), b, a.window).Err(); err != nil {
		a.hub.m.persisted.WithLabelValues("error").Inc()
		a.hub.log.Warn("redis adapter: cannot persist a session; the client will not be recovered", "sid", s.Sid, "err", err)
		return
	}
	a.hub.m.persisted.WithLabelValues("ok").Inc()
}

// RestoreSession takes a session out of Redis for a reconnecting client and
// prepares the replay of what it missed after offset (see the file comment).
// It returns nil, nil when the session cannot be recovered, so the client
// connects as new and sees socket.recovered === false.
func (a *streamsAdapter) RestoreSession(pid socket.PrivateSessionId, offset string) (*socket.Session, error) {
	if a.window <= 0 {
		return nil, nil
	}
	m := a.hub.m.restores
	from, ok := parseID(offset)
	if !ok {
		m.WithLabelValues(outcomeBadOffset).Inc()
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(a.hub.ctx, 5*time.Second)
	defer cancel()
	raw, err := a.hub.rdb.GetDel(ctx, a.sessionKey(pid)).Result()
	if errors.Is(err, redis.Nil) {
		m.WithLabelValues(outcomeNotFound).Inc()
		return nil, nil
	}
	if err != nil {
		m.WithLabelValues(outcomeError).Inc()
		return nil, fmt.Errorf("redisadapter: take session: %w", err)
	}
	var rec sessionRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil || rec.Sid == "" || rec.Pid != string(pid) {
		m.WithLabelValues(outcomeNotFound).Inc()
		return nil, nil
	}
	sid := socket.SocketId(rec.Sid)
	if _, live := a.Nsp().Sockets().Load(sid); live {
		// Two sockets with one id would share rooms and removal.
		m.WithLabelValues(outcomeInUse).Inc()
		return nil, nil
	}
	intact, err := a.hub.intactAfter(ctx, from, time.UnixMilli(rec.DisconnectedAt))
	if err != nil {
		m.WithLabelValues(outcomeError).Inc()
		return nil, err
	}
	if !intact {
		m.WithLabelValues(outcomeTrimmed).Inc()
		return nil, nil
	}
	since, _ := parseID(rec.Since)
	rooms := types.NewSet[socket.Room]()
	for _, r := range rec.Rooms {
		rooms.Add(socket.Room(r))
	}
	c := &catchup{rec: rec, rooms: rooms, since: since, started: time.Now()}

	// From here every local delivery skips the socket and queues for it.
	a.gate.Lock()
	a.mu.Lock()
	if a.catching[sid] != nil {
		a.mu.Unlock()
		a.gate.Unlock()
		m.WithLabelValues(outcomeInUse).Inc()
		return nil, nil
	}
	upTo := a.hub.position()
	a.catching[sid] = c
	a.mu.Unlock()
	a.gate.Unlock()

	before, err := a.collect(ctx, maxID(from, since), upTo, rooms)
	if err != nil {
		a.mu.Lock()
		delete(a.catching, sid)
		a.mu.Unlock()
		if errors.Is(err, errTooMany) {
			m.WithLabelValues(outcomeTooMany).Inc()
			return nil, nil
		}
		m.WithLabelValues(outcomeError).Inc()
		return nil, err
	}
	a.mu.Lock()
	c.before = before
	a.mu.Unlock()
	return &socket.Session{SessionToPersist: &socket.SessionToPersist{
		Sid: sid, Pid: pid, Rooms: rooms, Data: rec.Data,
	}}, nil
}

var errTooMany = errors.New("too many missed packets")

// putBack stores again the session of a socket refused after its restore,
// until the end of its window.
func (a *streamsAdapter) putBack(rec sessionRecord) {
	ttl := time.Until(time.UnixMilli(rec.DisconnectedAt).Add(a.window))
	if ttl <= 0 {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.hub.ctx, 2*time.Second)
	defer cancel()
	if err := a.hub.rdb.Set(ctx, a.sessionKey(socket.PrivateSessionId(rec.Pid)), b, ttl).Err(); err != nil {
		a.hub.log.Warn("redis adapter: cannot put a refused session back", "sid", rec.Sid, "err", err)
	}
}

// intactAfter reports whether the stream still holds every entry after
// from that the client may not have received. Trimming removes a prefix, so
// that is true when from is not before the first entry, or when everything
// trimmed predates the disconnection by more than the margin (it reached
// the client before its connection failed).
func (h *streamsHub) intactAfter(ctx context.Context, from streamID, disconnectedAt time.Time) (bool, error) {
	first, err := h.rdb.XRangeN(ctx, h.stream, "-", "+", 1).Result()
	if err != nil {
		return false, fmt.Errorf("redisadapter: read the stream's head: %w", err)
	}
	if len(first) == 0 {
		return true, nil // nothing kept: nothing recent was trimmed either
	}
	head, ok := parseID(first[0].ID)
	if !ok {
		return false, nil
	}
	if !from.less(head) {
		return true, nil
	}
	return int64(head.ms) <= disconnectedAt.Add(-h.cfg.margin).UnixMilli(), nil
}

// collect reads the stream after lower up to upTo (the reader's position
// when the socket started recovering: what this instance had delivered and
// will not deliver again) and returns the broadcasts of this namespace for
// the given rooms.
func (a *streamsAdapter) collect(ctx context.Context, lower, upTo streamID, rooms *types.Set[socket.Room]) ([]queued, error) {
	var out []queued
	const page = 512
	start := lower.next()
	broadcast := fmt.Sprint(int(adapter.BROADCAST))
	for !upTo.less(start) {
		entries, err := a.hub.rdb.XRangeN(ctx, a.hub.stream, start.String(), upTo.String(), page).Result()
		if err != nil {
			return nil, fmt.Errorf("redisadapter: read missed packets: %w", err)
		}
		for _, e := range entries {
			id, ok := parseID(e.ID)
			if !ok {
				continue
			}
			start = id.next()
			raw := libadapter.RawClusterMessage(e.Values)
			if raw.Nsp() != a.Nsp().Name() || raw.Type() != broadcast {
				continue
			}
			b, err := decodeBroadcast(raw)
			if err != nil || b.RequestId != nil {
				continue
			}
			opts := adapter.DecodeOptions(b.Opts)
			if !a.recoverable(b.Packet, opts) || !fastpath.Targets(rooms, opts) {
				continue
			}
			if len(out) >= a.hub.cfg.maxReplay {
				return nil, errTooMany
			}
			b.Packet.Data = append(utils.TryCast[[]any](b.Packet.Data), id.String())
			out = append(out, queued{b.Packet, opts})
		}
		if len(entries) < page {
			break
		}
	}
	return out, nil
}

// replay sends a recovered socket what it missed and ends its recovering
// state; it runs on the socket's task queue after the connection handlers.
func (a *streamsAdapter) replay(sid socket.SocketId) {
	a.gate.Lock()
	defer a.gate.Unlock()
	a.mu.Lock()
	c := a.catching[sid]
	delete(a.catching, sid)
	if c != nil {
		c.closed = true
		a.since[sid] = c.since
	}
	a.mu.Unlock()
	if c == nil {
		return
	}
	s, ok := a.Nsp().Sockets().Load(sid)
	if !ok || !s.Connected() {
		return
	}
	rooms := a.SocketRooms(sid)
	to := &socket.BroadcastOptions{Rooms: types.NewSet(socket.Room(sid)), Except: types.NewSet[socket.Room](),
		Flags: &socket.BroadcastFlags{Local: true}}
	n := 0
	for _, list := range [][]queued{c.before, c.pending} {
		for _, q := range list {
			if fastpath.Targets(rooms, q.opts) {
				a.localBroadcast(q.packet, to)
				n++
			}
		}
	}
	a.hub.m.restores.WithLabelValues(outcomeRecovered).Inc()
	a.hub.m.replayed.Add(float64(n))
}

// sweep drops recovering states nobody finished (a leak guard: the library
// calls DelAll or the connection handler for every restored socket).
func (a *streamsAdapter) sweep(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for sid, c := range a.catching {
		if now.Sub(c.started) > staleCatchup {
			delete(a.catching, sid)
			c.closed = true
		}
	}
}
