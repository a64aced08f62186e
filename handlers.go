package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Client events the Hub sends on its own (not from the routing table).
const (
	EventTyping      = "conversation:typing"
	EventPresence    = "agent:presence"
	EventAuthExpired = "auth:expired"
	EventShutdown    = "server:shutdown"
)

// Error codes of acknowledgements and connect errors.
const (
	codeInvalidPayload = "invalid_payload"
	codeForbidden      = "forbidden"
	codeRateLimited    = "rate_limited"
	codeInternal       = "internal_error"
	codeAuthRequired   = "auth_required"
	codeInvalidToken   = "invalid_token"
	codeTokenExpired   = "token_expired"
	codeAuthUnavail    = "auth_unavailable"
	codeShuttingDown   = "shutting_down"
)

// clientError is an error a client is told about, with a machine-readable code.
type clientError struct {
	Code    string
	Message string
}

func (e *clientError) Error() string { return e.Code + ": " + e.Message }

var (
	errRateLimited  = &clientError{Code: codeRateLimited, Message: "too many events; slow down"}
	errAuthRequired = &clientError{Code: codeAuthRequired, Message: "Authentication required"}
	errShuttingDown = &clientError{Code: codeShuttingDown, Message: "Server shutting down; reconnect"}
)

// asClientError turns any handler error into what the client is told.
func asClientError(err error) *clientError {
	var ce *clientError
	if errors.As(err, &ce) {
		return ce
	}
	return &clientError{Code: codeInternal, Message: "the server could not do that; try again"}
}

// authError maps a TokenVerifier error to the connect error a client sees.
func authError(err error) *clientError {
	switch {
	case errors.Is(err, ErrTokenExpired):
		return &clientError{Code: codeTokenExpired, Message: "Token expired"}
	case errors.Is(err, ErrAuthUnavailable):
		return &clientError{Code: codeAuthUnavail, Message: "Authentication unavailable"}
	default:
		return &clientError{Code: codeInvalidToken, Message: "Invalid token"}
	}
}

// Ack is the acknowledgement of every client event: {ok:true, ...} or
// {ok:false, error, message}.
type Ack struct {
	OK             bool        `json:"ok"`
	Error          string      `json:"error,omitempty"`
	Message        string      `json:"message,omitempty"`
	AccountID      string      `json:"account_id,omitempty"`
	ConversationID string      `json:"conversation_id,omitempty"`
	Status         Status      `json:"status,omitempty"`
	Presence       *[]Presence `json:"presence,omitempty"` // a pointer, so an empty list is sent as []
	ExpiresAt      string      `json:"expires_at,omitempty"`
}

// AccountPayload is the payload of account:subscribe, account:unsubscribe
// and agent:presence:list.
type AccountPayload struct {
	AccountID string `json:"account_id"`
}

// ConversationPayload is the payload of conversation:join, :leave and the
// typing events; AccountID may be left out when the token lists one account.
type ConversationPayload struct {
	ConversationID string `json:"conversation_id"`
	AccountID      string `json:"account_id,omitempty"`
}

// StatusPayload is the payload of agent:status.
type StatusPayload struct {
	Status Status `json:"status"`
}

// RefreshPayload is the payload of auth:refresh.
type RefreshPayload struct {
	Token string `json:"token"`
}

// clientEvent is one row of the client->server contract.
type clientEvent struct {
	name   string
	typing bool // also counts against the typing rate limit
	handle func(c *conn, raw json.RawMessage) (Ack, error)
}

// clientEvents is the client->server contract as data.
var clientEvents = []clientEvent{
	{name: "account:subscribe", handle: (*conn).subscribe},
	{name: "account:unsubscribe", handle: (*conn).unsubscribe},
	{name: "conversation:join", handle: (*conn).join},
	{name: "conversation:leave", handle: (*conn).leave},
	{name: "conversation:typing:start", typing: true, handle: func(c *conn, raw json.RawMessage) (Ack, error) { return c.setTyping(raw, true) }},
	{name: "conversation:typing:stop", typing: true, handle: func(c *conn, raw json.RawMessage) (Ack, error) { return c.setTyping(raw, false) }},
	{name: "agent:status", handle: (*conn).setStatus},
	{name: "agent:presence:list", handle: (*conn).listPresence},
	{name: "auth:refresh", handle: (*conn).refresh},
}

// clientEventByName indexes clientEvents.
var clientEventByName = func() map[string]clientEvent {
	m := make(map[string]clientEvent, len(clientEvents))
	for _, ev := range clientEvents {
		m[ev.name] = ev
	}
	return m
}()

func (c *conn) accountPayload(raw json.RawMessage) (string, error) {
	var p AccountPayload
	if err := decodePayload(raw, &p); err != nil {
		return "", err
	}
	return p.AccountID, validateID("account_id", p.AccountID)
}

func (c *conn) subscribe(raw json.RawMessage) (Ack, error) {
	account, err := c.accountPayload(raw)
	if err != nil {
		return Ack{}, err
	}
	if err := c.authorize(account); err != nil {
		return Ack{}, err
	}
	c.sc.join(AccountRoomName(account))
	return Ack{AccountID: account}, nil
}

func (c *conn) unsubscribe(raw json.RawMessage) (Ack, error) {
	account, err := c.accountPayload(raw)
	if err != nil {
		return Ack{}, err
	}
	c.sc.leave(AccountRoomName(account))
	return Ack{AccountID: account}, nil
}

func (c *conn) join(raw json.RawMessage) (Ack, error) {
	p, room, err := c.conversation(raw)
	if err != nil {
		return Ack{}, err
	}
	c.sc.join(room)
	return Ack{AccountID: p.AccountID, ConversationID: p.ConversationID}, nil
}

func (c *conn) leave(raw json.RawMessage) (Ack, error) {
	p, room, err := c.conversation(raw)
	if err != nil {
		return Ack{}, err
	}
	c.sc.leave(room)
	c.h.typing.stop(typingKey{room: room, sid: c.sid})
	return Ack{AccountID: p.AccountID, ConversationID: p.ConversationID}, nil
}

func (c *conn) setTyping(raw json.RawMessage, typing bool) (Ack, error) {
	p, room, err := c.conversation(raw)
	if err != nil {
		return Ack{}, err
	}
	if !c.sc.inRoom(room) {
		return Ack{}, &clientError{Code: codeForbidden, Message: "join the conversation before typing in it"}
	}
	key := typingKey{room: room, sid: c.sid}
	if typing {
		c.h.typing.start(key, typingState{conversationID: p.ConversationID, userID: c.identity().Subject})
	} else {
		c.h.typing.stop(key)
	}
	return Ack{AccountID: p.AccountID, ConversationID: p.ConversationID}, nil
}

func (c *conn) setStatus(raw json.RawMessage) (Ack, error) {
	var p StatusPayload
	if err := decodePayload(raw, &p); err != nil {
		return Ack{}, err
	}
	if !p.Status.Valid() {
		return Ack{}, &clientError{Code: codeInvalidPayload, Message: `status must be "online", "away" or "offline"`}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pr, changed, err := c.h.presence.SetStatus(ctx, c.presenceConn(), p.Status)
	c.h.presenceResult("set_status", pr, changed, err)
	if err != nil {
		return Ack{}, &clientError{Code: "presence_unavailable", Message: "presence is unavailable right now; try again"}
	}
	return Ack{Status: p.Status}, nil
}

func (c *conn) listPresence(raw json.RawMessage) (Ack, error) {
	account, err := c.accountPayload(raw)
	if err != nil {
		return Ack{}, err
	}
	if err := c.authorize(account); err != nil {
		return Ack{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	list, err := c.h.presence.List(ctx, account)
	if err != nil {
		c.h.presenceResult("list", Presence{}, false, err)
		return Ack{}, &clientError{Code: "presence_unavailable", Message: "presence is unavailable right now; try again"}
	}
	if list == nil {
		list = []Presence{}
	}
	return Ack{AccountID: account, Presence: &list}, nil
}

func (c *conn) refresh(raw json.RawMessage) (Ack, error) {
	var p RefreshPayload
	if err := decodePayload(raw, &p); err != nil {
		return Ack{}, err
	}
	if p.Token == "" {
		return Ack{}, &clientError{Code: codeInvalidPayload, Message: "token is required"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.h.cfg.handshakeTimeout)
	defer cancel()
	id, err := c.h.verifier.Verify(ctx, p.Token)
	if err != nil {
		return Ack{}, authError(err)
	}
	if id.Subject != c.identity().Subject {
		return Ack{}, &clientError{Code: codeForbidden, Message: "the new token is for another user"}
	}
	c.mu.Lock()
	c.ident = id
	c.mu.Unlock()
	c.sc.setIdentity(&id)
	c.armExpiry(id.ExpiresAt)
	c.dropUnauthorizedRooms(ctx)
	ack := Ack{}
	if !id.ExpiresAt.IsZero() {
		ack.ExpiresAt = id.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return ack, nil
}

// decodePayload reads a client payload that must be a JSON object.
func decodePayload(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return &clientError{Code: codeInvalidPayload, Message: "payload must be an object"}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &clientError{Code: codeInvalidPayload, Message: "payload fields have the wrong types: " + jsonProblem(err)}
	}
	return nil
}

func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s must be a %s", te.Field, te.Type)
	}
	return "malformed"
}

// validateID checks an id taken from a client payload.
func validateID(field, v string) error {
	if !validID(v) {
		return &clientError{Code: codeInvalidPayload,
			Message: fmt.Sprintf("%s must be a non-empty string of at most %d characters without ':'", field, MaxIDLength)}
	}
	return nil
}
