package realtime

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// The TypeScript declarations and docs/events.md are generated from this
// file's data by internal/tsgen; a test there fails when they are stale.
//go:generate go run ./internal/tsgen -ts clients/typescript/realtime-events.ts -md docs/events.md

// This file states the client<->server contract of the /agents namespace as
// data, so that a generator can turn it into TypeScript and documentation
// and tests can hold the code to it.

// FieldSpec is one field of an event payload.
type FieldSpec struct {
	// Name is the field's JSON name.
	Name string
	// Type is the field's TypeScript type: "string", "number", "boolean",
	// "string[]" or a type the contract declares (EnumSpec, payload structs).
	Type string
	// Optional fields may be absent; present fields are never null.
	Optional bool
	// Doc says what the field holds, in one sentence.
	Doc string
}

// FieldType is the declared type of a payload field the routing table copies.
type FieldType struct {
	// TS is the TypeScript type.
	TS string
	// Doc says what the field holds.
	Doc string
}

// RouteFieldTypes declares the type of every payload field a route may copy
// from an event. The router copies values verbatim, so these types are also
// what publishers must send. A route field missing here makes NewContract
// fail: add the type when adding a field to a route.
var RouteFieldTypes = map[string]FieldType{
	"conversation_id":        {"string", "Conversation id."},
	"channel_id":             {"string", "Channel the conversation came in on."},
	"contact_identifier":     {"string", "The customer's handle on that channel (email, phone number, ...)."},
	"status":                 {"string", "Conversation status, such as \"open\", \"pending\" or \"resolved\"."},
	"created_at":             {"string", "When the conversation or message was created (RFC 3339)."},
	"message_id":             {"string", "Message id."},
	"sender_type":            {"string", "Who wrote the message, such as \"contact\" or \"agent\"."},
	"message_body":           {"string", "Message text."},
	"is_private":             {"boolean", "A private note, visible to agents only."},
	"last_message_at":        {"string", "When the latest message was created (RFC 3339)."},
	"assigned_by":            {"string", "User id (or rule engine) that made the assignment."},
	"rule_name":              {"string", "Routing rule that made the assignment."},
	"assignee_id":            {"string", "User id of the assigned agent."},
	"labels":                 {"string[]", "Labels of the conversation."},
	"priority":               {"string", "Priority, such as \"low\", \"normal\" or \"high\"."},
	"user_id":                {"string", "User id of the agent."},
	"unassigned_count":       {"number", "Conversations waiting for an agent."},
	"oldest_waiting_seconds": {"number", "How long the oldest unassigned conversation has waited, in seconds."},
}

// EventSpec is one server->client event.
type EventSpec struct {
	// Name is the Socket.IO event name.
	Name string
	// Doc says when the event is sent.
	Doc string
	// Triggers say what causes the event and which rooms it reaches.
	Triggers []Trigger
	// Fields are the payload fields: for routed events the union of the
	// fields of every route that sends it.
	Fields []FieldSpec
}

// TypeName is the name of the event's payload type: "conversation:new"
// becomes "ConversationNew".
func (e EventSpec) TypeName() string { return pascal(e.Name) }

// Trigger is one cause of a server->client event.
type Trigger struct {
	// Keys are the routing-key patterns of a route; empty for events the Hub
	// sends on its own.
	Keys []string
	// Cause describes a Hub-originated trigger ("a client typing event").
	Cause string
	// Rooms are the room templates the event goes to, or a description.
	Rooms []string
	// Fields are the route's payload fields; empty for Hub events.
	Fields []Field
}

// HubEvents are the server->client events the Hub sends on its own, not from
// the routing table. agent:presence is also a route; for its fields the
// declaration here wins, so publishers of agent.presence.* must follow it.
var HubEvents = []EventSpec{
	{
		Name:     EventTyping,
		Doc:      "Another agent started or stopped typing in a conversation you joined; a start with no stop ends with typing:false after the typing TTL.",
		Triggers: []Trigger{{Cause: "conversation:typing:start / :stop from another agent, or the typing TTL", Rooms: []string{ConversationRoom + " (not the typing user)"}}},
		Fields: []FieldSpec{
			{Name: "conversation_id", Type: "string", Doc: "Conversation id."},
			{Name: "user_id", Type: "string", Doc: "User id of the typing agent."},
			{Name: "typing", Type: "boolean", Doc: "true while typing; false when stopped or expired."},
		},
	},
	{
		Name:     EventPresence,
		Doc:      "An agent's presence changed.",
		Triggers: []Trigger{{Cause: "an agent connects, sets agent:status, or loses their last connection", Rooms: []string{"every account room of that user"}}},
		Fields: []FieldSpec{
			{Name: "user_id", Type: "string", Doc: "User id of the agent."},
			{Name: "status", Type: "AgentStatus", Doc: "The agent's presence."},
		},
	},
	{
		Name:     EventShutdown,
		Doc:      "This instance is shutting down; the transport closes right after and the client reconnects (to another instance behind the load balancer).",
		Triggers: []Trigger{{Cause: "SIGTERM or Hub.Shutdown", Rooms: []string{"every socket of the instance"}}},
		Fields: []FieldSpec{
			{Name: "code", Type: "ErrorCode", Doc: "Always \"shutting_down\"."},
			{Name: "message", Type: "string", Doc: "Human-readable reason."},
		},
	},
	{
		Name:     EventAuthExpired,
		Doc:      "The connection's token expired; the server disconnects right after. Reconnect with a fresh token, or send auth:refresh before expiry.",
		Triggers: []Trigger{{Cause: "the token's expiry passed without auth:refresh", Rooms: []string{"that socket"}}},
		Fields: []FieldSpec{
			{Name: "code", Type: "ErrorCode", Doc: "Always \"token_expired\"."},
			{Name: "message", Type: "string", Doc: "Human-readable reason."},
		},
	},
}

// AckField is a field a successful acknowledgement carries besides ok.
type AckField struct {
	// Name is the JSON name of a field of Ack.
	Name string
	// Optional fields may be absent from a successful acknowledgement.
	Optional bool
}

// ClientEventSpec is one client->server event.
type ClientEventSpec struct {
	// Name is the Socket.IO event name.
	Name string
	// Doc says what the event does.
	Doc string
	// Payload is the payload's Go type; its JSON fields are the payload's.
	Payload reflect.Type
	// Ack lists the fields of Ack a successful acknowledgement carries.
	Ack []AckField
}

func ackFields(names ...string) []AckField {
	fs := make([]AckField, len(names))
	for i, n := range names {
		fs[i] = AckField{Name: n}
	}
	return fs
}

// ClientEvents is the client->server contract; a test holds it equal to the
// handlers the Hub registers.
var ClientEvents = []ClientEventSpec{
	{Name: "account:subscribe", Payload: reflect.TypeFor[AccountPayload](), Ack: ackFields("account_id"),
		Doc: "Join the account's room to receive its inbox events; forbidden unless the token lists the account."},
	{Name: "account:unsubscribe", Payload: reflect.TypeFor[AccountPayload](), Ack: ackFields("account_id"),
		Doc: "Leave the account's room."},
	{Name: "conversation:join", Payload: reflect.TypeFor[ConversationPayload](), Ack: ackFields("account_id", "conversation_id"),
		Doc: "Join a conversation's room to receive its messages and typing; account_id may be left out when the token lists one account."},
	{Name: "conversation:leave", Payload: reflect.TypeFor[ConversationPayload](), Ack: ackFields("account_id", "conversation_id"),
		Doc: "Leave a conversation's room; also ends your typing there."},
	{Name: "conversation:typing:start", Payload: reflect.TypeFor[ConversationPayload](), Ack: ackFields("account_id", "conversation_id"),
		Doc: "Tell the conversation's other agents you are typing; only after conversation:join; rate-limited; expires after the typing TTL without a stop."},
	{Name: "conversation:typing:stop", Payload: reflect.TypeFor[ConversationPayload](), Ack: ackFields("account_id", "conversation_id"),
		Doc: "Tell the conversation's other agents you stopped typing."},
	{Name: "agent:status", Payload: reflect.TypeFor[StatusPayload](), Ack: ackFields("status"),
		Doc: "Set your presence; it is broadcast to your accounts' rooms."},
	{Name: "agent:presence:list", Payload: reflect.TypeFor[AccountPayload](), Ack: []AckField{{Name: "account_id"}, {Name: "presence"}},
		Doc: "The presence of the account's agents who are not offline, for the initial load (an empty list when nobody is)."},
	{Name: "auth:refresh", Payload: reflect.TypeFor[RefreshPayload](), Ack: []AckField{{Name: "expires_at", Optional: true}},
		Doc: "Replace the connection's token with a newer one for the same user before it expires."},
}

// EnumSpec is a string type whose values are a closed set.
type EnumSpec struct {
	// Name is the TypeScript type name.
	Name string
	// Go is the Go type it stands for; nil for a set with no Go type.
	Go reflect.Type
	// Values are the allowed values.
	Values []EnumValue
	// Doc says what the type is.
	Doc string
}

// EnumValue is one value of an EnumSpec.
type EnumValue struct {
	Value string
	Doc   string
}

// Enums are the closed sets of values of the contract.
var Enums = []EnumSpec{
	{Name: "AgentStatus", Go: reflect.TypeFor[Status](), Doc: "An agent's presence.", Values: []EnumValue{
		{string(StatusOnline), "connected and available"},
		{string(StatusAway), "connected, chose to be away (agent:status)"},
		{string(StatusOffline), "no live connection, or chose to appear offline"},
	}},
	{Name: "ErrorCode", Doc: "Machine-readable code of a failed acknowledgement (error), a connect error (data.code) or auth:expired (code).", Values: []EnumValue{
		{codeInvalidPayload, "acknowledgement: the payload is not an object, a field has the wrong type, or an id is empty, too long or contains ':'"},
		{codeForbidden, "acknowledgement: the token does not allow that account, or typing before conversation:join"},
		{codeRateLimited, "acknowledgement: too many events from this connection; slow down"},
		{codePresenceUnavail, "acknowledgement: the presence store did not answer; try again"},
		{codeInternal, "acknowledgement: the server failed; try again"},
		{codeAuthRequired, "connect error: no token in auth.token or the Authorization header"},
		{codeInvalidToken, "connect error or auth:refresh: the token is malformed, badly signed or not for this service"},
		{codeTokenExpired, "connect error, auth:refresh or auth:expired: the token is past its expiry"},
		{codeAuthUnavail, "connect error or auth:refresh: the identity provider's keys cannot be fetched now; retry"},
		{codeShuttingDown, "connect error: this instance is shutting down; reconnect (another instance answers)"},
	}},
}

// codePresenceUnavail is the code of a presence store that cannot answer.
const codePresenceUnavail = "presence_unavailable"

// Contract is the whole client<->server contract of the /agents namespace.
type Contract struct {
	// Namespace is the Socket.IO namespace.
	Namespace string
	// Server are the server->client events, routed ones first in table order.
	Server []EventSpec
	// Client are the client->server events.
	Client []ClientEventSpec
	// Enums are the closed value sets the events use.
	Enums []EnumSpec
}

// DefaultContract is the contract of a Hub with DefaultRoutes.
func DefaultContract() Contract {
	c, err := NewContract(DefaultRoutes)
	if err != nil {
		panic(err) // DefaultRoutes and RouteFieldTypes are data of this package; a test keeps them in step
	}
	return c
}

// NewContract builds the contract of a Hub with the given routes: each
// route's fields, typed from RouteFieldTypes, merged per client event with
// HubEvents. A field is optional unless every route sending the event
// requires it (Route.Require).
func NewContract(routes []Route) (Contract, error) {
	c := Contract{Namespace: Namespace, Client: ClientEvents, Enums: Enums}
	index := map[string]int{}
	hub := map[string]EventSpec{}
	for _, e := range HubEvents {
		hub[e.Name] = e
	}
	for i, rt := range routes {
		pos, seen := index[rt.Event]
		if !seen {
			pos = len(c.Server)
			index[rt.Event] = pos
			c.Server = append(c.Server, EventSpec{Name: rt.Event, Doc: hub[rt.Event].Doc})
		}
		ev := &c.Server[pos]
		ev.Triggers = append(ev.Triggers, Trigger{Keys: rt.Keys, Rooms: rt.Rooms, Fields: rt.Fields})
		required := map[string]bool{}
		for _, r := range rt.Require {
			required[r] = true
		}
		var fields []FieldSpec
		for _, f := range rt.Fields {
			from := f.From
			if from == "" {
				from = f.Name
			}
			ft, ok := RouteFieldTypes[f.Name]
			if !ok {
				return Contract{}, fmt.Errorf("route %d (%s): field %q has no type in RouteFieldTypes", i, rt.Event, f.Name)
			}
			fields = append(fields, FieldSpec{Name: f.Name, Type: ft.TS, Doc: ft.Doc, Optional: !required[from]})
		}
		ev.Fields = mergeFields(ev.Fields, fields, !seen)
	}
	for _, e := range HubEvents {
		pos, seen := index[e.Name]
		if !seen {
			c.Server = append(c.Server, e)
			continue
		}
		ev := &c.Server[pos]
		ev.Triggers = append(ev.Triggers, e.Triggers...)
		declared := map[string]FieldSpec{}
		for _, f := range e.Fields {
			declared[f.Name] = f
		}
		for j, f := range ev.Fields {
			if d, ok := declared[f.Name]; ok {
				ev.Fields[j].Type, ev.Fields[j].Doc = d.Type, d.Doc
			}
		}
		ev.Fields = mergeFields(ev.Fields, e.Fields, false)
	}
	return c, nil
}

// mergeFields unions the fields of two sources of one event: a field is
// required only when every source sends it.
func mergeFields(have, add []FieldSpec, first bool) []FieldSpec {
	if first {
		return append([]FieldSpec(nil), add...)
	}
	inAdd := map[string]FieldSpec{}
	for _, f := range add {
		inAdd[f.Name] = f
	}
	out := make([]FieldSpec, 0, len(have)+len(add))
	inHave := map[string]bool{}
	for _, f := range have {
		inHave[f.Name] = true
		a, ok := inAdd[f.Name]
		f.Optional = f.Optional || !ok || a.Optional
		out = append(out, f)
	}
	for _, f := range add {
		if !inHave[f.Name] {
			f.Optional = true
			out = append(out, f)
		}
	}
	return out
}

// pascal turns an event name such as "notification:assignment" into
// "NotificationAssignment".
func pascal(name string) string {
	var b strings.Builder
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == ':' || r == '_' || r == '-' || r == '.' }) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}

// CheckServerEvent reports whether payload, as a client decodes it from
// JSON, is a valid payload of server event name: no field outside the
// contract, every required field present, each value of its declared type.
// Tests of clients and embedding services use it.
func (c Contract) CheckServerEvent(name string, payload map[string]any) error {
	i := slices.IndexFunc(c.Server, func(e EventSpec) bool { return e.Name == name })
	if i < 0 {
		return fmt.Errorf("%s: not a server event of the contract", name)
	}
	ev := c.Server[i]
	declared := map[string]FieldSpec{}
	for _, f := range ev.Fields {
		declared[f.Name] = f
		if _, ok := payload[f.Name]; !ok && !f.Optional {
			return fmt.Errorf("%s: required field %s is missing", name, f.Name)
		}
	}
	for k, v := range payload {
		f, ok := declared[k]
		if !ok {
			return fmt.Errorf("%s: field %s is not in the contract", name, k)
		}
		if !c.valueHasType(v, f.Type) {
			return fmt.Errorf("%s: field %s = %#v is not a %s", name, k, v, f.Type)
		}
	}
	return nil
}

// valueHasType checks a JSON-decoded value against a contract type.
func (c Contract) valueHasType(v any, ts string) bool {
	if elem, ok := strings.CutSuffix(ts, "[]"); ok {
		list, ok := v.([]any)
		if !ok {
			return false
		}
		for _, x := range list {
			if !c.valueHasType(x, elem) {
				return false
			}
		}
		return true
	}
	switch ts {
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	}
	for _, e := range c.Enums {
		if e.Name == ts {
			s, ok := v.(string)
			return ok && slices.ContainsFunc(e.Values, func(ev EnumValue) bool { return ev.Value == s })
		}
	}
	return false
}
