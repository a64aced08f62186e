// Package realtime relays domain events from an event source (RabbitMQ in
// production) to browsers over Socket.IO, tracks agent presence and relays
// typing indicators for a customer-support agent inbox.
//
// The root package holds the domain: the Hub, the event and identity types and
// the three ports it needs from the world (EventSource, PresenceStore,
// TokenVerifier). It imports no broker, database or identity provider; those
// live in the subpackages amqpsource, presence and auth.
package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Namespace is the Socket.IO namespace agents connect to.
const Namespace = "/agents"

// Event is one domain event as it arrives from an EventSource.
type Event struct {
	// RoutingKey is the topic routing key, such as "conversation.created".
	RoutingKey string
	// Body is the event's JSON object as published.
	Body json.RawMessage
}

// EventHandler processes one event. A nil error means the event was handed to
// the Socket.IO adapter and may be acknowledged; an error wrapping
// ErrInvalidEvent means it can never be handled (dead-letter it); any other
// error is transient (requeue it).
type EventHandler func(ctx context.Context, e Event) error

// EventSource delivers events to the Hub.
type EventSource interface {
	// Consume delivers every event whose routing key matches one of patterns
	// (AMQP topic syntax) to handle, one at a time and in order, until ctx ends.
	// It returns nil when ctx ends and an error only when it cannot go on.
	Consume(ctx context.Context, patterns []string, handle EventHandler) error
}

// AsyncEventHandler starts handling one event and returns without waiting
// for the slow part (the Redis adapter's append); done is called exactly
// once with the outcome, meaning what EventHandler's error means (nil:
// acknowledge; wrapping ErrInvalidEvent: dead-letter; other: requeue).
// done may be called before AsyncEventHandler returns or later, from
// another goroutine, and the calls for successive events may come in any
// order; the events themselves reach the clients in the order they were
// started.
type AsyncEventHandler func(ctx context.Context, e Event, done func(error))

// PipelinedEventSource is implemented by event sources that can keep
// several events in flight: the Hub hands each event to the adapter and
// takes the next while Redis appends the previous ones, and the source
// settles (acknowledges, dead-letters, requeues) each event when its done
// is called. The Hub uses it instead of Consume when the source has it,
// unless WithPipelinedConsume(false) is set.
type PipelinedEventSource interface {
	EventSource
	// ConsumePipelined is Consume with an AsyncEventHandler: handle is
	// called for every event, one at a time and in order, and may return
	// before the event is done. Before it returns, ConsumePipelined waits
	// for the done of every event it started (bounded as the source's
	// drain is) and settles them.
	ConsumePipelined(ctx context.Context, patterns []string, handle AsyncEventHandler) error
}

// Identity is the verified caller of a connection.
type Identity struct {
	// Subject is the user id (Cognito "sub").
	Subject string
	// Email is the user's email, when the token carries one.
	Email string
	// AccountIDs lists the accounts the user may see.
	AccountIDs []string
	// ExpiresAt is when the token stops being valid; zero means never.
	ExpiresAt time.Time
}

// HasAccount reports whether the identity lists accountID.
func (id Identity) HasAccount(accountID string) bool {
	for _, a := range id.AccountIDs {
		if a == accountID {
			return true
		}
	}
	return false
}

// TokenVerifier turns a bearer token into an Identity.
type TokenVerifier interface {
	// Verify checks token and returns who it names. Errors wrap ErrInvalidToken,
	// ErrTokenExpired or ErrAuthUnavailable so the Hub can tell clients why.
	Verify(ctx context.Context, token string) (Identity, error)
}

// Authorizer decides whether an identity may see an account's rooms.
type Authorizer interface {
	// AuthorizeAccount returns nil when id may join account accountID's rooms.
	AuthorizeAccount(ctx context.Context, id Identity, accountID string) error
}

// AuthorizerFunc adapts a function to the Authorizer interface.
type AuthorizerFunc func(ctx context.Context, id Identity, accountID string) error

// AuthorizeAccount calls f.
func (f AuthorizerFunc) AuthorizeAccount(ctx context.Context, id Identity, accountID string) error {
	return f(ctx, id, accountID)
}

// TokenAccounts is the default Authorizer: account membership listed in the
// token is the only authority.
var TokenAccounts Authorizer = AuthorizerFunc(func(_ context.Context, id Identity, accountID string) error {
	if id.HasAccount(accountID) {
		return nil
	}
	return ErrForbidden
})

// Status is an agent's presence as other agents see it.
type Status string

// The presence statuses an agent can have.
const (
	StatusOnline  Status = "online"
	StatusAway    Status = "away"
	StatusOffline Status = "offline"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	return s == StatusOnline || s == StatusAway || s == StatusOffline
}

// PresenceConn is one live connection of a user, as presence sees it.
type PresenceConn struct {
	// ID identifies the connection fleet-wide (the Socket.IO socket id).
	ID string
	// UserID is the connection's user.
	UserID string
	// AccountIDs are the accounts whose agents see this user's presence.
	AccountIDs []string
}

// Presence is one user's presence.
type Presence struct {
	UserID   string    `json:"user_id"`
	Status   Status    `json:"status"`
	LastSeen time.Time `json:"last_seen"`
	// AccountIDs are the account rooms a change of this presence is broadcast to.
	AccountIDs []string `json:"-"`
}

// PresenceStore tracks presence per connection, so that a user is online
// while any of their connections, on any instance, is alive.
//
// Methods that change presence return the user's presence after the call and
// whether it changed as other agents see it; the Hub broadcasts changed ones.
type PresenceStore interface {
	// Connect records a live connection.
	Connect(ctx context.Context, c PresenceConn) (Presence, bool, error)
	// Disconnect forgets a connection; the user goes offline with their last one.
	Disconnect(ctx context.Context, c PresenceConn) (Presence, bool, error)
	// SetStatus records the status the user chose; it holds for every
	// connection of the user until changed or until the user goes offline.
	SetStatus(ctx context.Context, c PresenceConn, s Status) (Presence, bool, error)
	// Heartbeat keeps the given live connections of this instance alive for
	// another TTL, re-registering any the store lost (a restarted Redis).
	// It returns the users whose presence changed because of that.
	Heartbeat(ctx context.Context, conns []PresenceConn) ([]Presence, error)
	// Expire removes connections whose heartbeat lapsed (a crashed instance)
	// and returns the users that went offline. Each change is returned to
	// exactly one caller, fleet-wide, so it is broadcast once.
	Expire(ctx context.Context) ([]Presence, error)
	// List returns the presence of the users of an account who are not offline.
	List(ctx context.Context, accountID string) ([]Presence, error)
}

// Checker is implemented by ports that can tell whether their backend is
// reachable; the Hub's readiness report asks them.
type Checker interface {
	// Check returns nil when the backend is connected.
	Check(ctx context.Context) error
}

// BroadcastFailureCounter is implemented by adapters (WithAdapter) that can
// fail to hand a broadcast to the other instances while still delivering it
// locally. The Hub compares the count around each event's emits and returns
// ErrAdapterUnavailable instead of letting the source acknowledge the event.
type BroadcastFailureCounter interface {
	BroadcastFailures() uint64
}

// BroadcastFlusher is implemented by adapters (WithAdapter) whose emits
// return before this instance's sockets have them (the Redis streams
// adapter returns once Redis has the entry and delivers it from the
// stream). Flush waits until every emit made before the call has reached
// this instance's sockets. The Hub flushes before its shutdown notice, so
// that the notice is the last event its clients get from it.
type BroadcastFlusher interface {
	Flush(ctx context.Context) error
}

// Errors the Hub and its ports branch on.
var (
	// ErrInvalidEvent marks an event that can never be handled (dead-letter it).
	ErrInvalidEvent = errors.New("invalid event")
	// ErrInvalidToken marks a token that is malformed, badly signed or not for us.
	ErrInvalidToken = errors.New("invalid token")
	// ErrTokenExpired marks a token past its expiry.
	ErrTokenExpired = errors.New("token expired")
	// ErrAuthUnavailable marks a verifier that cannot verify now (JWKS down).
	ErrAuthUnavailable = errors.New("authentication unavailable")
	// ErrForbidden marks an action the caller's identity does not allow.
	ErrForbidden = errors.New("forbidden")
	// ErrAdapterUnavailable marks an emit that did not reach the other
	// instances (Redis down): a transient error, the event is requeued.
	ErrAdapterUnavailable = errors.New("socket.io adapter unavailable")
	// ErrClosed is returned by a Hub that is shutting down or shut down.
	ErrClosed = errors.New("realtime: hub closed or shutting down")
)
