package realtime

import (
	"errors"
	"reflect"
	"slices"
	"sort"
	"testing"
)

func TestMatchTopic(t *testing.T) {
	cases := []struct {
		pattern, key string
		want         bool
	}{
		{"conversation.created", "conversation.created", true},
		{"conversation.created", "conversation.created.x", false},
		{"agent.presence.*", "agent.presence.online", true},
		{"agent.presence.*", "agent.presence", false},
		{"agent.presence.*", "agent.presence.a.b", false},
		{"conversation.#", "conversation", true},
		{"conversation.#", "conversation.message.created", true},
		{"#", "anything.at.all", true},
		{"#.created", "conversation.created", true},
		{"#.created", "created", true},
		{"*.created", "created", false},
		{"a.#.z", "a.z", true},
		{"a.#.z", "a.b.c.z", true},
		{"a.#.z", "a.b.c", false},
		{"a.*.#", "a", false},
		{"a.*.#", "a.b", true},
	}
	for _, c := range cases {
		if got := MatchTopic(c.pattern, c.key); got != c.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", c.pattern, c.key, got, c.want)
		}
	}
}

// TestDefaultRoutes walks DESIGN.md's server->client table row by row.
func TestDefaultRoutes(t *testing.T) {
	r, err := NewRouter(DefaultRoutes)
	if err != nil {
		t.Fatal(err)
	}
	full := `{"account_id":"acc1","conversation_id":"c1","channel_id":"ch","contact_identifier":"+1555","status":"open",
		"created_at":"2026-01-01T00:00:00Z","message_id":"m1","sender_type":"contact","message_body":"hi","is_private":false,
		"assignee_id":"u9","assigned_by":"u1","rule_name":"rr","labels":["vip"],"priority":"high","user_id":"u2",
		"unassigned_count":3,"oldest_waiting_seconds":40,"secret":"never copied"}`
	type emit struct {
		event  string
		rooms  []string
		fields []string
	}
	conv := "conv:acc1:c1"
	acct := "account:acc1"
	cases := []struct {
		key  string
		want []emit
	}{
		{"conversation.created", []emit{{"conversation:new", []string{acct}, []string{"channel_id", "contact_identifier", "conversation_id", "created_at", "status"}}}},
		{"conversation.message.created", []emit{
			{"conversation:message", []string{conv}, []string{"conversation_id", "created_at", "is_private", "message_body", "message_id", "sender_type"}},
			{"conversation:updated", []string{acct}, []string{"conversation_id", "last_message_at"}}}},
		{"conversation.message.sent", []emit{
			{"conversation:message", []string{conv}, []string{"conversation_id", "created_at", "is_private", "message_body", "message_id", "sender_type"}},
			{"conversation:updated", []string{acct}, []string{"conversation_id", "last_message_at"}}}},
		{"conversation.assigned", []emit{
			{"notification:assignment", []string{"user:u9"}, []string{"assigned_by", "conversation_id", "rule_name"}},
			{"conversation:updated", []string{acct, conv}, []string{"assignee_id", "conversation_id", "status"}}}},
		{"conversation.status_changed", []emit{{"conversation:updated", []string{acct, conv}, []string{"assignee_id", "conversation_id", "labels", "priority", "status"}}}},
		{"conversation.resolved", []emit{{"conversation:updated", []string{acct, conv}, []string{"assignee_id", "conversation_id", "labels", "priority", "status"}}}},
		{"conversation.routed", []emit{{"conversation:updated", []string{acct, conv}, []string{"assignee_id", "conversation_id", "labels", "priority", "status"}}}},
		{"agent.presence.online", []emit{{"agent:presence", []string{acct}, []string{"status", "user_id"}}}},
		{"agent.presence.away", []emit{{"agent:presence", []string{acct}, []string{"status", "user_id"}}}},
		{"queue.updated", []emit{{"queue:update", []string{acct}, []string{"oldest_waiting_seconds", "unassigned_count"}}}},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			got, err := r.Route(Event{RoutingKey: c.key, Body: []byte(full)})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d emits, want %d: %+v", len(got), len(c.want), got)
			}
			for i, w := range c.want {
				g := got[i]
				var fields []string
				for f := range g.Payload {
					fields = append(fields, f)
				}
				sort.Strings(fields)
				if g.Event != w.event || !slices.Equal(g.Rooms, w.rooms) || !slices.Equal(fields, w.fields) {
					t.Errorf("emit %d = %s %v %v, want %s %v %v", i, g.Event, g.Rooms, fields, w.event, w.rooms, w.fields)
				}
			}
		})
	}
}

func TestRouteProjection(t *testing.T) {
	r, _ := NewRouter(DefaultRoutes)
	// Absent fields are omitted, not null; values keep their JSON types; the
	// renamed field takes its source's value.
	got, err := r.Route(Event{RoutingKey: "conversation.message.created",
		Body: []byte(`{"account_id":"a","conversation_id":"c","created_at":"2026-01-01T00:00:00Z","is_private":true,"extra":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"conversation_id": "c", "created_at": "2026-01-01T00:00:00Z", "is_private": true}
	if !reflect.DeepEqual(got[0].Payload, want) {
		t.Errorf("message payload = %v, want %v", got[0].Payload, want)
	}
	if got[1].Payload["last_message_at"] != "2026-01-01T00:00:00Z" {
		t.Errorf("last_message_at = %v", got[1].Payload["last_message_at"])
	}
	// Numeric ids are accepted and rendered as in the event.
	got, err = r.Route(Event{RoutingKey: "queue.updated", Body: []byte(`{"account_id":42,"unassigned_count":0}`)})
	if err != nil || got[0].Rooms[0] != "account:42" || got[0].Payload["unassigned_count"] != float64(0) {
		t.Errorf("numeric account id: %v %v", got, err)
	}
}

func TestRouteAssignmentWithoutAssignee(t *testing.T) {
	r, _ := NewRouter(DefaultRoutes)
	got, err := r.Route(Event{RoutingKey: "conversation.assigned", Body: []byte(`{"account_id":"a","conversation_id":"c","status":"open"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Event != "conversation:updated" {
		t.Fatalf("without assignee_id only conversation:updated is sent, got %+v", got)
	}
	if _, ok := got[0].Payload["assignee_id"]; ok {
		t.Error("absent assignee_id must be omitted")
	}
}

func TestRouteInvalid(t *testing.T) {
	r, _ := NewRouter(DefaultRoutes)
	long := make([]byte, MaxIDLength+1)
	for i := range long {
		long[i] = 'x'
	}
	cases := []struct{ name, key, body string }{
		{"not json", "conversation.created", `{not json`},
		{"array", "conversation.created", `[1,2]`},
		{"string", "conversation.created", `"x"`},
		{"null", "conversation.created", `null`},
		{"no account", "conversation.created", `{"conversation_id":"c"}`},
		{"no conversation", "conversation.created", `{"account_id":"a"}`},
		{"empty account", "queue.updated", `{"account_id":""}`},
		{"account object", "queue.updated", `{"account_id":{"x":1}}`},
		{"account with colon", "queue.updated", `{"account_id":"a:b"}`},
		{"account too long", "queue.updated", `{"account_id":"` + string(long) + `"}`},
		{"fractional id", "queue.updated", `{"account_id":1.5}`},
		{"presence without user", "agent.presence.online", `{"account_id":"a"}`},
		{"unknown key", "billing.invoice.paid", `{"account_id":"a"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.Route(Event{RoutingKey: c.key, Body: []byte(c.body)})
			if !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("err = %v, want ErrInvalidEvent", err)
			}
		})
	}
}

func TestRouterPatterns(t *testing.T) {
	r, _ := NewRouter(DefaultRoutes)
	want := []string{"conversation.created", "conversation.message.created", "conversation.message.sent",
		"conversation.assigned", "conversation.status_changed", "conversation.resolved", "conversation.routed",
		"agent.presence.*", "queue.updated"}
	if got := r.Patterns(); !slices.Equal(got, want) {
		t.Errorf("Patterns() = %v, want %v", got, want)
	}
	if p := r.Pattern("agent.presence.away"); p != "agent.presence.*" {
		t.Errorf("Pattern = %q", p)
	}
	if p := r.Pattern("nope"); p != "" {
		t.Errorf("Pattern(nope) = %q", p)
	}
}

func TestNewRouterRejectsBadTables(t *testing.T) {
	cases := []struct {
		name  string
		route Route
	}{
		{"no event", Route{Keys: []string{"a"}, Rooms: []string{AccountRoom}}},
		{"no keys", Route{Event: "e", Rooms: []string{AccountRoom}}},
		{"no rooms", Route{Event: "e", Keys: []string{"a"}}},
		{"partial wildcard", Route{Event: "e", Keys: []string{"a.b*"}, Rooms: []string{AccountRoom}}},
		{"empty word", Route{Event: "e", Keys: []string{"a..b"}, Rooms: []string{AccountRoom}}},
		{"unclosed room", Route{Event: "e", Keys: []string{"a"}, Rooms: []string{"account:{account_id"}}},
		{"literal room", Route{Event: "e", Keys: []string{"a"}, Rooms: []string{"everyone"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewRouter([]Route{c.route}); err == nil {
				t.Error("NewRouter accepted a bad route")
			}
		})
	}
}

func BenchmarkRoute(b *testing.B) {
	r, _ := NewRouter(DefaultRoutes)
	e := Event{RoutingKey: "conversation.message.created", Body: []byte(`{"account_id":"acc1","conversation_id":"c1",
		"message_id":"m1","sender_type":"contact","message_body":"hello there","is_private":false,"created_at":"2026-01-01T00:00:00Z"}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Route(e); err != nil {
			b.Fatal(err)
		}
	}
}
