package realtime

import (
	"sync"
	"time"
)

// typingKey identifies one socket typing in one conversation room.
type typingKey struct{ room, sid string }

type typingState struct {
	conversationID string
	userID         string
	timer          *time.Timer
}

// typingTracker relays typing indicators and ends each one that is not
// stopped within its TTL, so a closed tab never leaves "typing..." behind.
type typingTracker struct {
	ttl  time.Duration
	emit func(room string, s typingState, typing bool)

	mu     sync.Mutex
	active map[typingKey]*typingState
}

func newTypingTracker(ttl time.Duration, emit func(string, typingState, bool)) *typingTracker {
	return &typingTracker{ttl: ttl, emit: emit, active: map[typingKey]*typingState{}}
}

// start relays typing:true once and (re)arms the expiry.
func (t *typingTracker) start(k typingKey, s typingState) {
	t.mu.Lock()
	if cur, ok := t.active[k]; ok {
		cur.timer.Reset(t.ttl)
		t.mu.Unlock()
		return
	}
	st := &s
	st.timer = time.AfterFunc(t.ttl, func() { t.expire(k, st) })
	t.active[k] = st
	t.mu.Unlock()
	t.emit(k.room, s, true)
}

// stop relays typing:false if the socket was typing there.
func (t *typingTracker) stop(k typingKey) {
	t.mu.Lock()
	st, ok := t.active[k]
	if ok {
		delete(t.active, k)
		st.timer.Stop()
	}
	t.mu.Unlock()
	if ok {
		t.emit(k.room, *st, false)
	}
}

func (t *typingTracker) expire(k typingKey, st *typingState) {
	t.mu.Lock()
	cur, ok := t.active[k]
	if !ok || cur != st {
		t.mu.Unlock()
		return
	}
	delete(t.active, k)
	t.mu.Unlock()
	t.emit(k.room, *st, false)
}

// stopConn ends every indicator of a socket (it disconnected).
func (t *typingTracker) stopConn(sid string) {
	t.mu.Lock()
	var keys []typingKey
	for k := range t.active {
		if k.sid == sid {
			keys = append(keys, k)
		}
	}
	t.mu.Unlock()
	for _, k := range keys {
		t.stop(k)
	}
}

// stopAll cancels every timer without relaying (the Hub is shutting down).
func (t *typingTracker) stopAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, st := range t.active {
		st.timer.Stop()
		delete(t.active, k)
	}
}

// emitTyping relays an indicator to the conversation room, except to the
// typing user's own sockets.
func (h *Hub) emitTyping(room string, s typingState, typing bool) {
	err := h.emit(Emit{
		Rooms:   []string{room},
		Except:  UserRoom(s.userID),
		Event:   EventTyping,
		Payload: map[string]any{"conversation_id": s.conversationID, "user_id": s.userID, "typing": typing},
	})
	if err != nil {
		h.log.Warn("typing relay failed", "room", room, "err", err)
	}
}
