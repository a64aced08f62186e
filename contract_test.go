package realtime

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestContractClientEventsMatchHandlers(t *testing.T) {
	var handlers, contract []string
	for _, ev := range clientEvents {
		handlers = append(handlers, ev.name)
	}
	for _, ev := range ClientEvents {
		contract = append(contract, ev.Name)
	}
	if !slices.Equal(contract, handlers) {
		t.Fatalf("ClientEvents (contract.go) = %v\nclientEvents (handlers.go) = %v\nkeep them in step, then run go generate", contract, handlers)
	}
}

func TestContractDeclaresEveryRouteField(t *testing.T) {
	for _, rt := range DefaultRoutes {
		for _, f := range rt.Fields {
			if _, ok := RouteFieldTypes[f.Name]; !ok {
				t.Errorf("route %s (%v): field %q has no type in RouteFieldTypes", rt.Event, rt.Keys, f.Name)
			}
		}
	}
	if _, err := NewContract(DefaultRoutes); err != nil {
		t.Fatal(err)
	}
	bad := []Route{{Keys: []string{"x.y"}, Event: "x:y", Rooms: []string{AccountRoom}, Fields: F("undeclared_field")}}
	if _, err := NewContract(bad); err == nil || !strings.Contains(err.Error(), "undeclared_field") {
		t.Fatalf("NewContract with an undeclared field: err = %v, want one naming the field", err)
	}
}

func TestContractAckFieldsExist(t *testing.T) {
	tags := jsonNames(reflect.TypeFor[Ack]())
	for _, ev := range ClientEvents {
		if ev.Payload == nil || ev.Payload.Kind() != reflect.Struct {
			t.Errorf("%s: payload %v is not a struct type", ev.Name, ev.Payload)
		}
		for _, a := range ev.Ack {
			if !tags[a.Name] || a.Name == "ok" || a.Name == "error" || a.Name == "message" {
				t.Errorf("%s: ack field %q is not a success field of Ack", ev.Name, a.Name)
			}
		}
	}
}

func TestContractServerEvents(t *testing.T) {
	c := DefaultContract()
	byName := map[string]EventSpec{}
	for _, ev := range c.Server {
		if _, dup := byName[ev.Name]; dup {
			t.Errorf("server event %s listed twice", ev.Name)
		}
		byName[ev.Name] = ev
	}
	for _, rt := range DefaultRoutes {
		if _, ok := byName[rt.Event]; !ok {
			t.Errorf("route event %s missing from the contract", rt.Event)
		}
	}
	for _, name := range []string{EventTyping, EventPresence, EventAuthExpired, EventShutdown} {
		if _, ok := byName[name]; !ok {
			t.Errorf("hub event %s missing from the contract", name)
		}
	}
	field := func(event, name string) FieldSpec {
		for _, f := range byName[event].Fields {
			if f.Name == name {
				return f
			}
		}
		t.Fatalf("%s has no field %s", event, name)
		return FieldSpec{}
	}
	// conversation_id is required by every conversation route, so always present.
	if f := field("conversation:updated", "conversation_id"); f.Optional || f.Type != "string" {
		t.Errorf("conversation:updated conversation_id = %+v", f)
	}
	// last_message_at comes from one route of three, and from an unrequired field.
	if f := field("conversation:updated", "last_message_at"); !f.Optional {
		t.Errorf("last_message_at must be optional: %+v", f)
	}
	if f := field("conversation:updated", "labels"); f.Type != "string[]" {
		t.Errorf("labels = %+v", f)
	}
	// The Hub's declaration of agent:presence wins over the route's types.
	if f := field("agent:presence", "status"); f.Type != "AgentStatus" {
		t.Errorf("agent:presence status = %+v", f)
	}
	if f := field("agent:presence", "user_id"); f.Optional {
		t.Errorf("agent:presence user_id is required by its route and sent by the Hub: %+v", f)
	}
	if f := field(EventTyping, "typing"); f.Optional || f.Type != "boolean" {
		t.Errorf("typing = %+v", f)
	}
	if got := (EventSpec{Name: "notification:assignment"}).TypeName(); got != "NotificationAssignment" {
		t.Errorf("TypeName = %q", got)
	}
}

// TestContractErrorCodes holds the ErrorCode enum to every code the package
// can send: the code* constants and every Code: "literal".
func TestContractErrorCodes(t *testing.T) {
	declared := map[string]bool{}
	for _, e := range Enums {
		if e.Name == "ErrorCode" {
			for _, v := range e.Values {
				declared[v.Value] = true
			}
		}
	}
	sent := map[string]bool{}
	for _, f := range packageFiles(t) {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if strings.HasPrefix(name.Name, "code") && i < len(n.Values) {
						if s, ok := stringLit(n.Values[i]); ok {
							sent[s] = true
						}
					}
				}
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "Code" {
					if s, ok := stringLit(n.Value); ok {
						sent[s] = true
					}
				}
			}
			return true
		})
	}
	if len(sent) < 5 {
		t.Fatalf("found only %v; the scan is broken", sent)
	}
	for code := range sent {
		if !declared[code] {
			t.Errorf("code %q is sent by the package but missing from the ErrorCode enum in contract.go", code)
		}
	}
}

// TestContractHasEveryHubEvent holds HubEvents to the Event* constants the
// package declares, so a new event the Hub sends cannot miss the contract.
func TestContractHasEveryHubEvent(t *testing.T) {
	inContract := map[string]bool{}
	for _, ev := range DefaultContract().Server {
		inContract[ev.Name] = true
	}
	found := 0
	for _, f := range packageFiles(t) {
		ast.Inspect(f, func(n ast.Node) bool {
			if vs, ok := n.(*ast.ValueSpec); ok {
				for i, name := range vs.Names {
					if strings.HasPrefix(name.Name, "Event") && i < len(vs.Values) {
						if s, ok := stringLit(vs.Values[i]); ok {
							found++
							if !inContract[s] {
								t.Errorf("%s = %q is sent by the Hub but missing from HubEvents in contract.go", name.Name, s)
							}
						}
					}
				}
			}
			return true
		})
	}
	if found < 3 {
		t.Fatalf("found %d Event* constants; the scan is broken", found)
	}
}

// packageFiles parses the package's non-test files.
func packageFiles(t *testing.T) []*ast.File {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func jsonNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names[name] = true
		}
	}
	return names
}

func TestCheckServerEvent(t *testing.T) {
	c := DefaultContract()
	for _, tc := range []struct {
		event   string
		payload map[string]any
		wantErr string
	}{
		{"conversation:new", map[string]any{"conversation_id": "c1", "status": "open"}, ""},
		{"conversation:updated", map[string]any{"conversation_id": "c1", "labels": []any{"a", "b"}}, ""},
		{"queue:update", map[string]any{"unassigned_count": 3.0}, ""},
		{"agent:presence", map[string]any{"user_id": "u", "status": "away"}, ""},
		{"conversation:typing", map[string]any{"conversation_id": "c", "user_id": "u", "typing": true}, ""},
		{"conversation:new", map[string]any{"status": "open"}, "required field conversation_id"},
		{"conversation:new", map[string]any{"conversation_id": "c1", "secret": "x"}, "secret is not in the contract"},
		{"conversation:updated", map[string]any{"conversation_id": "c1", "labels": []any{"a", 1.0}}, "labels"},
		{"conversation:message", map[string]any{"conversation_id": "c1", "is_private": "no"}, "is_private"},
		{"agent:presence", map[string]any{"user_id": "u", "status": "sleeping"}, "AgentStatus"},
		{"conversation:deleted", map[string]any{}, "not a server event"},
	} {
		err := c.CheckServerEvent(tc.event, tc.payload)
		if tc.wantErr == "" && err != nil {
			t.Errorf("%s %v: %v", tc.event, tc.payload, err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s %v: err = %v, want one containing %q", tc.event, tc.payload, err, tc.wantErr)
		}
	}
}
