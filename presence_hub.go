package realtime

import (
	"context"
	"time"
)

// presenceResult logs a failed presence call and broadcasts a changed presence.
func (h *Hub) presenceResult(op string, p Presence, changed bool, err error) {
	if err != nil {
		h.metrics.presenceErrors.WithLabelValues(op).Inc()
		h.log.Warn("presence call failed", "op", op, "user", p.UserID, "err", err)
		return
	}
	if changed {
		h.broadcastPresence(p)
	}
}

// broadcastPresence sends a user's presence to every account room of theirs;
// a socket in several of those rooms receives it once.
func (h *Hub) broadcastPresence(p Presence) {
	if len(p.AccountIDs) == 0 {
		return
	}
	rooms := make([]string, len(p.AccountIDs))
	for i, a := range p.AccountIDs {
		rooms[i] = AccountRoomName(a)
	}
	h.metrics.presenceChanges.WithLabelValues(string(p.Status)).Inc()
	err := h.emit(Emit{Rooms: rooms, Event: EventPresence, Payload: map[string]any{"user_id": p.UserID, "status": string(p.Status)}})
	if err != nil {
		h.log.Warn("presence broadcast failed", "user", p.UserID, "err", err)
	}
}

// heartbeatLoop keeps this instance's connections alive in the presence
// store and expires those of crashed instances, every third of the TTL; it
// is also when the Socket.IO server's client map is compacted (the Hub's
// one periodic task).
func (h *Hub) heartbeatLoop() {
	defer h.bg.Done()
	t := time.NewTicker(h.cfg.presenceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-h.bgCtx.Done():
			return
		case <-t.C:
			h.heartbeat(h.bgCtx)
			h.io.compact()
		}
	}
}

func (h *Hub) heartbeat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.presenceTTL/3)
	defer cancel()
	var conns []PresenceConn
	var stale []*conn
	h.conns.Range(func(_, v any) bool {
		c := v.(*conn)
		if !c.sc.connected() {
			stale = append(stale, c) // never keep a dead socket present
			return true
		}
		conns = append(conns, c.presenceConn())
		return true
	})
	for _, c := range stale {
		c.release(ctx)
	}
	if len(conns) > 0 {
		changes, err := h.presence.Heartbeat(ctx, conns)
		if err != nil {
			h.presenceResult("heartbeat", Presence{}, false, err)
		}
		for _, p := range changes {
			h.broadcastPresence(p)
		}
	}
	changes, err := h.presence.Expire(ctx)
	if err != nil {
		h.presenceResult("expire", Presence{}, false, err)
	}
	for _, p := range changes {
		h.broadcastPresence(p)
	}
}
