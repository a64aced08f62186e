package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// socketConn is what a conn needs of its Socket.IO socket; sockConn is the
// library's, tests use their own.
type socketConn interface {
	id() string
	address() string
	transport() string
	join(room string)
	leave(room string)
	inRoom(room string) bool
	rooms() []string
	emit(event string, v any)
	setIdentity(id *Identity)
	connected() bool
	disconnect()
	closeTransport()
	transportClosed() bool
}

// conn is the Hub's view of one connected socket.
type conn struct {
	h      *Hub
	sc     socketConn
	sid    string
	rate   *rate.Limiter
	typing *rate.Limiter
	opened time.Time

	mu     sync.Mutex
	ident  Identity
	expiry *time.Timer

	// lifecycle orders start and release, which the library may run on
	// different goroutines when a socket drops while it is being set up.
	lifecycle sync.Mutex
	started   bool
	released  atomic.Bool
}

func newConn(h *Hub, sc socketConn, id Identity) *conn {
	return &conn{
		h:      h,
		sc:     sc,
		sid:    sc.id(),
		ident:  id,
		rate:   rate.NewLimiter(rate.Limit(h.cfg.clientRate.PerSecond), h.cfg.clientRate.Burst),
		typing: rate.NewLimiter(rate.Limit(h.cfg.typingRate.PerSecond), h.cfg.typingRate.Burst),
		opened: time.Now(),
	}
}

// identity returns the connection's current identity (auth:refresh replaces it).
func (c *conn) identity() Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ident
}

func (c *conn) presenceConn() PresenceConn {
	id := c.identity()
	return PresenceConn{ID: c.sid, UserID: id.Subject, AccountIDs: id.AccountIDs}
}

// start runs once the socket is connected: user room, presence, expiry.
func (c *conn) start(recovered bool) {
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	if c.released.Load() {
		return // gone before it was set up
	}
	c.started = true
	h := c.h
	id := c.identity()
	h.conns.Store(c.sid, c)
	c.sc.join(UserRoom(id.Subject))
	if recovered {
		// Rooms came back with the session; the token may allow less now.
		c.dropUnauthorizedRooms(context.Background())
	}
	c.armExpiry(id.ExpiresAt)
	h.metrics.connected.Inc()
	h.metrics.connects.Inc()
	h.log.Info("connection opened", "sid", c.sid, "user", id.Subject, "accounts", len(id.AccountIDs),
		"transport", c.sc.transport(), "recovered", recovered, "address", c.sc.address())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p, changed, err := h.presence.Connect(ctx, c.presenceConn())
	h.presenceResult("connect", p, changed, err)
}

// onDisconnect runs when the socket goes, for whatever reason.
func (c *conn) onDisconnect(reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.release(ctx)
	c.h.log.Info("connection closed", "sid", c.sid, "user", c.identity().Subject, "reason", reason,
		"duration", time.Since(c.opened).Round(time.Millisecond).String())
}

// release forgets the connection once: typing, expiry timer, presence.
func (c *conn) release(ctx context.Context) {
	if !c.released.CompareAndSwap(false, true) {
		return
	}
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	if !c.started {
		return
	}
	h := c.h
	c.mu.Lock()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
	h.typing.stopConn(c.sid)
	h.conns.Delete(c.sid)
	h.metrics.connected.Dec()
	p, changed, err := h.presence.Disconnect(ctx, c.presenceConn())
	h.presenceResult("disconnect", p, changed, err)
}

func (c *conn) closeTransport() { c.sc.closeTransport() }

// armExpiry disconnects the socket when its token expires.
func (c *conn) armExpiry(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	if at.IsZero() {
		return
	}
	c.expiry = time.AfterFunc(time.Until(at), func() {
		c.h.log.Info("token expired, disconnecting", "sid", c.sid, "user", c.identity().Subject)
		c.sc.emit(EventAuthExpired, map[string]any{"code": codeTokenExpired, "message": "Token expired; reconnect with a new token"})
		c.sc.disconnect()
	})
}

// dropUnauthorizedRooms leaves account and conversation rooms the current
// identity may no longer see, and the user rooms of anyone else (a session
// recovered with another user's token).
func (c *conn) dropUnauthorizedRooms(ctx context.Context) {
	id := c.identity()
	for _, room := range c.sc.rooms() {
		if strings.HasPrefix(room, "user:") && room != UserRoom(id.Subject) {
			c.sc.leave(room)
			continue
		}
		account, ok := roomAccount(room)
		if !ok {
			continue
		}
		if c.h.cfg.authorizer.AuthorizeAccount(ctx, id, account) != nil {
			c.sc.leave(room)
			if strings.HasPrefix(room, "conv:") {
				c.h.typing.stop(typingKey{room: room, sid: c.sid})
			}
		}
	}
}

// dispatch runs one client event: rate limit, size bound, handler, reply.
func (c *conn) dispatch(ev clientEvent, payload json.RawMessage) Ack {
	h := c.h
	var err error
	switch {
	case !c.rate.Allow() || (ev.typing && !c.typing.Allow()):
		err = errRateLimited
	case len(payload) > h.cfg.maxPayloadBytes:
		err = &clientError{Code: codeInvalidPayload, Message: fmt.Sprintf("payload is larger than %d bytes", h.cfg.maxPayloadBytes)}
	default:
		var reply Ack
		reply, err = ev.handle(c, payload)
		if err == nil {
			reply.OK = true
			return reply
		}
	}
	ce := asClientError(err)
	h.metrics.rejected.WithLabelValues(ev.name, ce.Code).Inc()
	if ce.Code == codeInternal {
		h.log.Error("client event failed", "event", ev.name, "sid", c.sid, "err", err)
	}
	return Ack{Error: ce.Code, Message: ce.Message}
}

// account resolves the account of a conversation payload: the given one, or
// the token's only account.
func (c *conn) account(given string) (string, error) {
	if given != "" {
		return given, validateID("account_id", given)
	}
	id := c.identity()
	if len(id.AccountIDs) == 1 {
		return id.AccountIDs[0], nil
	}
	return "", &clientError{Code: codeInvalidPayload, Message: "account_id is required when the token lists more than one account"}
}

func (c *conn) authorize(account string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.h.cfg.authorizer.AuthorizeAccount(ctx, c.identity(), account); err != nil {
		if errors.Is(err, ErrForbidden) {
			return &clientError{Code: codeForbidden, Message: fmt.Sprintf("account %q is not one of yours", account)}
		}
		return fmt.Errorf("authorize account %q: %w", account, err)
	}
	return nil
}

// conversation validates a conversation payload and returns its room.
func (c *conn) conversation(raw json.RawMessage) (ConversationPayload, string, error) {
	var p ConversationPayload
	if err := decodePayload(raw, &p); err != nil {
		return p, "", err
	}
	if err := validateID("conversation_id", p.ConversationID); err != nil {
		return p, "", err
	}
	account, err := c.account(p.AccountID)
	if err != nil {
		return p, "", err
	}
	p.AccountID = account
	if err := c.authorize(account); err != nil {
		return p, "", err
	}
	return p, ConversationRoomName(account, p.ConversationID), nil
}

// UserRoom is the room every connection of a user joins.
func UserRoom(userID string) string { return "user:" + userID }

// AccountRoomName is the room of an account's agents.
func AccountRoomName(accountID string) string { return "account:" + accountID }

// ConversationRoomName is the room of a conversation, scoped by account so
// no tenant can reach another's conversation.
func ConversationRoomName(accountID, conversationID string) string {
	return "conv:" + accountID + ":" + conversationID
}

// roomAccount returns the account an account or conversation room belongs to.
func roomAccount(room string) (string, bool) {
	rest, ok := strings.CutPrefix(room, "account:")
	if ok {
		return rest, true
	}
	if rest, ok = strings.CutPrefix(room, "conv:"); ok {
		account, _, found := strings.Cut(rest, ":")
		return account, found
	}
	return "", false
}
