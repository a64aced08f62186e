package realtime

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Route maps events whose routing key matches one of Keys to one client event.
// Several routes may match one key; each produces its own emit, in table order.
type Route struct {
	// Keys are AMQP topic patterns: "*" matches one word, "#" zero or more.
	Keys []string
	// Event is the Socket.IO event name sent to clients.
	Event string
	// Rooms are room templates such as "conv:{account_id}:{conversation_id}".
	// A template whose fields are absent from the event is skipped, so
	// "user:{assignee_id}" reaches nobody when the event has no assignee.
	Rooms []string
	// Require lists fields that must be non-empty ids; without them the event
	// is invalid (ErrInvalidEvent) and goes to the dead-letter queue.
	Require []string
	// Fields are copied from the event into the client payload; absent fields
	// are omitted, never sent as null.
	Fields []Field
}

// Field is one payload field of a client event.
type Field struct {
	// Name is the field's name in the client payload.
	Name string
	// From is the field of the event it is copied from; empty means Name.
	From string
}

// F is a payload field copied under its own name.
func F(names ...string) []Field {
	fs := make([]Field, len(names))
	for i, n := range names {
		fs[i] = Field{Name: n}
	}
	return fs
}

// Room templates of the contract.
const (
	AccountRoom      = "account:{account_id}"
	ConversationRoom = "conv:{account_id}:{conversation_id}"
)

var (
	conversationIDs = []string{"account_id", "conversation_id"}
	accountIDs      = []string{"account_id"}
	messageKeys     = []string{"conversation.message.created", "conversation.message.sent"}
	assignedKeys    = []string{"conversation.assigned"}
)

// DefaultRoutes is the server->client contract of DESIGN.md as data.
var DefaultRoutes = []Route{
	{Keys: []string{"conversation.created"}, Event: "conversation:new", Rooms: []string{AccountRoom}, Require: conversationIDs,
		Fields: F("conversation_id", "channel_id", "contact_identifier", "status", "created_at")},
	{Keys: messageKeys, Event: "conversation:message", Rooms: []string{ConversationRoom}, Require: conversationIDs,
		Fields: F("conversation_id", "message_id", "sender_type", "message_body", "is_private", "created_at")},
	{Keys: messageKeys, Event: "conversation:updated", Rooms: []string{AccountRoom}, Require: conversationIDs,
		Fields: append(F("conversation_id"), Field{Name: "last_message_at", From: "created_at"})},
	{Keys: assignedKeys, Event: "notification:assignment", Rooms: []string{"user:{assignee_id}"}, Require: conversationIDs,
		Fields: F("conversation_id", "assigned_by", "rule_name")},
	{Keys: assignedKeys, Event: "conversation:updated", Rooms: []string{AccountRoom, ConversationRoom}, Require: conversationIDs,
		Fields: F("conversation_id", "assignee_id", "status")},
	{Keys: []string{"conversation.status_changed", "conversation.resolved", "conversation.routed"}, Event: "conversation:updated",
		Rooms: []string{AccountRoom, ConversationRoom}, Require: conversationIDs,
		Fields: F("conversation_id", "status", "assignee_id", "labels", "priority")},
	{Keys: []string{"agent.presence.*"}, Event: "agent:presence", Rooms: []string{AccountRoom}, Require: append(accountIDs, "user_id"),
		Fields: F("user_id", "status")},
	{Keys: []string{"queue.updated"}, Event: "queue:update", Rooms: []string{AccountRoom}, Require: accountIDs,
		Fields: F("unassigned_count", "oldest_waiting_seconds")},
}

// Emit is one server->client event: a name, a payload and the rooms it goes
// to. A socket in several of the rooms receives it once.
type Emit struct {
	Rooms   []string
	Event   string
	Payload map[string]any
	// Except is a socket id that must not receive it (the sender of typing).
	Except string
}

// Router matches routing keys against a routing table and builds the emits.
type Router struct {
	routes   []compiledRoute
	patterns []string
}

type compiledRoute struct {
	Route
	keys  [][]string
	rooms []roomTemplate
}

// roomTemplate is a room name split into literal parts and field references.
type roomTemplate struct {
	literal []string // literal[i] precedes fields[i]; one more literal than fields
	fields  []string
}

// MaxIDLength bounds every id taken from an event or a client payload.
const MaxIDLength = 128

// NewRouter validates routes and prepares them for matching.
func NewRouter(routes []Route) (*Router, error) {
	r := &Router{}
	seen := map[string]bool{}
	for i, rt := range routes {
		if rt.Event == "" || len(rt.Keys) == 0 || len(rt.Rooms) == 0 {
			return nil, fmt.Errorf("route %d: event, keys and rooms are required", i)
		}
		c := compiledRoute{Route: rt}
		for _, k := range rt.Keys {
			words, err := parsePattern(k)
			if err != nil {
				return nil, fmt.Errorf("route %d (%s): %w", i, rt.Event, err)
			}
			c.keys = append(c.keys, words)
			if !seen[k] {
				seen[k] = true
				r.patterns = append(r.patterns, k)
			}
		}
		for _, room := range rt.Rooms {
			t, err := parseRoom(room)
			if err != nil {
				return nil, fmt.Errorf("route %d (%s): %w", i, rt.Event, err)
			}
			c.rooms = append(c.rooms, t)
		}
		r.routes = append(r.routes, c)
	}
	return r, nil
}

// Patterns returns the distinct routing-key patterns of the table, in table
// order: the bindings an event source needs.
func (r *Router) Patterns() []string { return append([]string(nil), r.patterns...) }

// Pattern returns the first pattern of the table that routingKey matches, or
// "" when none does; metrics label events by it to keep cardinality bounded.
func (r *Router) Pattern(routingKey string) string {
	return r.pattern(strings.Split(routingKey, "."))
}

func (r *Router) pattern(words []string) string {
	for i := range r.routes {
		for j, k := range r.routes[i].keys {
			if matchTopic(k, words) {
				return r.routes[i].Keys[j]
			}
		}
	}
	return ""
}

// Route decodes an event and returns the emits it produces. An error wraps
// ErrInvalidEvent: the body is not a JSON object, a required id is missing,
// or no route matches the key.
func (r *Router) Route(e Event) ([]Emit, error) {
	return r.route(e, strings.Split(e.RoutingKey, "."))
}

// route is Route with the routing key already split into words.
func (r *Router) route(e Event, words []string) ([]Emit, error) {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(e.Body, &body); err != nil || body == nil {
		return nil, fmt.Errorf("%w: %s: body is not a JSON object", ErrInvalidEvent, e.RoutingKey)
	}
	var emits []Emit
	matched := false
	for i := range r.routes {
		rt := &r.routes[i]
		if !rt.matches(words) {
			continue
		}
		matched = true
		ids := make(map[string]string, 4)
		for _, f := range rt.Require {
			id, ok := idField(body, f)
			if !ok {
				return nil, fmt.Errorf("%w: %s: %q must be a non-empty id of at most %d characters", ErrInvalidEvent, e.RoutingKey, f, MaxIDLength)
			}
			ids[f] = id
		}
		em := Emit{Event: rt.Event, Payload: make(map[string]any, len(rt.Fields))}
		for _, t := range rt.rooms {
			if room, ok := t.expand(body, ids); ok {
				em.Rooms = append(em.Rooms, room)
			}
		}
		if len(em.Rooms) == 0 {
			continue
		}
		for _, f := range rt.Fields {
			from := f.From
			if from == "" {
				from = f.Name
			}
			raw, ok := body[from]
			if !ok {
				continue
			}
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("%w: %s: field %q: %v", ErrInvalidEvent, e.RoutingKey, from, err)
			}
			em.Payload[f.Name] = v
		}
		emits = append(emits, em)
	}
	if !matched {
		return nil, fmt.Errorf("%w: no route for routing key %q", ErrInvalidEvent, e.RoutingKey)
	}
	return emits, nil
}

func (rt *compiledRoute) matches(words []string) bool {
	for _, k := range rt.keys {
		if matchTopic(k, words) {
			return true
		}
	}
	return false
}

// parsePattern splits an AMQP topic pattern into words.
func parsePattern(p string) ([]string, error) {
	if p == "" {
		return nil, fmt.Errorf("empty routing-key pattern")
	}
	words := strings.Split(p, ".")
	for _, w := range words {
		if w == "" {
			return nil, fmt.Errorf("routing-key pattern %q has an empty word", p)
		}
		if strings.ContainsAny(w, "*#") && len(w) != 1 {
			return nil, fmt.Errorf("routing-key pattern %q: wildcards must be whole words", p)
		}
	}
	return words, nil
}

// matchTopic reports whether key words match pattern words by AMQP topic
// rules: "*" is exactly one word, "#" zero or more.
func matchTopic(pattern, key []string) bool {
	if len(pattern) == 0 {
		return len(key) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if matchTopic(pattern[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && matchTopic(pattern[1:], key[1:])
	default:
		return len(key) > 0 && key[0] == pattern[0] && matchTopic(pattern[1:], key[1:])
	}
}

// MatchTopic reports whether routingKey matches the AMQP topic pattern.
func MatchTopic(pattern, routingKey string) bool {
	return matchTopic(strings.Split(pattern, "."), strings.Split(routingKey, "."))
}

func parseRoom(s string) (roomTemplate, error) {
	var t roomTemplate
	rest := s
	for {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			t.literal = append(t.literal, rest)
			break
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return t, fmt.Errorf("room template %q: unclosed {", s)
		}
		t.literal = append(t.literal, rest[:open])
		name := rest[open+1 : open+end]
		if name == "" {
			return t, fmt.Errorf("room template %q: empty field name", s)
		}
		t.fields = append(t.fields, name)
		rest = rest[open+end+1:]
	}
	if len(t.fields) == 0 {
		return t, fmt.Errorf("room template %q names no field", s)
	}
	return t, nil
}

// expand fills the template from ids (validated) or the body; a missing or
// invalid field skips the room.
func (t roomTemplate) expand(body map[string]json.RawMessage, ids map[string]string) (string, bool) {
	var b strings.Builder
	for i, f := range t.fields {
		b.WriteString(t.literal[i])
		id, ok := ids[f]
		if !ok {
			if id, ok = idField(body, f); !ok {
				return "", false
			}
		}
		b.WriteString(id)
	}
	b.WriteString(t.literal[len(t.fields)])
	return b.String(), true
}

// idField reads an id: a non-empty string, or an integer, of at most
// MaxIDLength characters.
func idField(body map[string]json.RawMessage, name string) (string, bool) {
	raw, ok := body[name]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n json.Number
		d := json.NewDecoder(strings.NewReader(string(raw)))
		d.UseNumber()
		if d.Decode(&n) != nil {
			return "", false
		}
		if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
			return "", false
		}
		s = n.String()
	}
	return s, validID(s)
}

// validID reports whether s may be used as an id in a room name.
func validID(s string) bool {
	return s != "" && len(s) <= MaxIDLength && !strings.ContainsAny(s, ":\x00")
}
