package baseline

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/turumba/realtime/internal/sio"
)

// route is one emit of an event: the client event, its rooms and the fields
// copied, as in the service's routing table (DESIGN.md).
type route struct {
	event  string
	rooms  []roomKind
	fields []field
}

type roomKind int

const (
	roomAccount roomKind = iota
	roomConversation
	roomAssignee
)

type field struct{ name, from string }

func fields(names ...string) []field {
	fs := make([]field, len(names))
	for i, n := range names {
		fs[i] = field{n, n}
	}
	return fs
}

var (
	messageRoutes = []route{
		{"conversation:message", []roomKind{roomConversation},
			fields("conversation_id", "message_id", "sender_type", "message_body", "is_private", "created_at")},
		{"conversation:updated", []roomKind{roomAccount},
			append(fields("conversation_id"), field{"last_message_at", "created_at"})},
	}
	statusRoutes = []route{{"conversation:updated", []roomKind{roomAccount, roomConversation},
		fields("conversation_id", "status", "assignee_id", "labels", "priority")}}
	presenceRoutes = []route{{"agent:presence", []roomKind{roomAccount}, fields("user_id", "status")}}

	routes = map[string][]route{
		"conversation.created": {{"conversation:new", []roomKind{roomAccount},
			fields("conversation_id", "channel_id", "contact_identifier", "status", "created_at")}},
		"conversation.message.created": messageRoutes,
		"conversation.message.sent":    messageRoutes,
		"conversation.assigned": {
			{"notification:assignment", []roomKind{roomAssignee}, fields("conversation_id", "assigned_by", "rule_name")},
			{"conversation:updated", []roomKind{roomAccount, roomConversation}, fields("conversation_id", "assignee_id", "status")},
		},
		"conversation.status_changed": statusRoutes,
		"conversation.resolved":       statusRoutes,
		"conversation.routed":         statusRoutes,
		"queue.updated": {{"queue:update", []roomKind{roomAccount},
			fields("unassigned_count", "oldest_waiting_seconds")}},
	}
)

// Publish routes one event (a JSON object) and broadcasts its emits. Field
// values are copied as raw JSON, never decoded.
func (s *Server) Publish(routingKey string, event []byte) error {
	rs, ok := routes[routingKey]
	if !ok && strings.HasPrefix(routingKey, "agent.presence.") {
		rs, ok = presenceRoutes, true
	}
	if !ok {
		return fmt.Errorf("%w: no route for %q", ErrInvalidEvent, routingKey)
	}
	event = bytes.TrimSpace(event)
	if len(event) == 0 || event[0] != '{' {
		return fmt.Errorf("%w: %s: not a JSON object", ErrInvalidEvent, routingKey)
	}
	account, ok := idField(event, "account_id")
	if !ok {
		return fmt.Errorf("%w: %s: account_id is required", ErrInvalidEvent, routingKey)
	}
	conversation, hasConv := idField(event, "conversation_id")
	if strings.HasPrefix(routingKey, "conversation.") && !hasConv {
		return fmt.Errorf("%w: %s: conversation_id is required", ErrInvalidEvent, routingKey)
	}
	s.Events.Add(1)
	var rooms [3]string
	for _, r := range rs {
		n := 0
		for _, kind := range r.rooms {
			switch kind {
			case roomAccount:
				rooms[n], n = "account:"+account, n+1
			case roomConversation:
				rooms[n], n = "conv:"+account+":"+conversation, n+1
			case roomAssignee:
				if u, ok := idField(event, "assignee_id"); ok {
					rooms[n], n = "user:"+u, n+1
				}
			}
		}
		if n == 0 {
			continue
		}
		payload := make([]byte, 0, len(event))
		payload = append(payload, '{')
		for _, f := range r.fields {
			v, ok := sio.Field(event, f.from)
			if !ok {
				continue
			}
			if len(payload) > 1 {
				payload = append(payload, ',')
			}
			payload = sio.AppendString(payload, f.name)
			payload = append(payload, ':')
			payload = append(payload, v...)
		}
		payload = append(payload, '}')
		s.Broadcast(rooms[:n], r.event, payload)
	}
	return nil
}

// idField reads an id: a string without escapes, or an integer.
func idField(event []byte, name string) (string, bool) {
	v, ok := sio.Field(event, name)
	if !ok {
		return "", false
	}
	if len(v) >= 2 && v[0] == '"' {
		s := v[1 : len(v)-1]
		if bytes.IndexByte(s, '\\') >= 0 || !validID(string(s)) {
			return "", false
		}
		return string(s), true
	}
	if _, ok := sio.Uint(v); ok {
		return string(v), true
	}
	return "", false
}
