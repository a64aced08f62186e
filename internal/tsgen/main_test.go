package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/turumba/realtime"
)

// TestGeneratedFilesAreFresh regenerates in memory and compares with the
// committed files.
func TestGeneratedFilesAreFresh(t *testing.T) {
	ts, md, err := render(realtime.DefaultContract())
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..")
	for path, want := range map[string][]byte{
		"clients/typescript/realtime-events.ts": ts,
		"docs/events.md":                        md,
	} {
		got, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatalf("%s: %v (run go generate in the module root)", path, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate in the module root and commit the result", path)
		}
	}
}

func TestTypeScriptShape(t *testing.T) {
	ts, _, err := render(realtime.DefaultContract())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"export interface ServerToClientEvents {",
		`"conversation:new": (payload: ConversationNew) => void;`,
		`"conversation:typing": (payload: ConversationTyping) => void;`,
		`"auth:expired": (payload: AuthExpired) => void;`,
		"export interface ClientToServerEvents {",
		`"account:subscribe": (payload: AccountPayload, ack: (res: Ack<ClientAcks["account:subscribe"]>) => void) => void;`,
		`"agent:presence:list": { account_id: string; presence: Presence[] };`,
		"  conversation_id: string;\n  account_id?: string;\n", // omitempty -> optional
		"  status: AgentStatus;\n",                             // realtime.Status -> the enum
		"  last_seen: string;\n",                               // time.Time -> RFC 3339 string
		"  labels?: string[];\n",
		"  is_private?: boolean;\n",
		"  unassigned_count?: number;\n",
	} {
		if !strings.Contains(string(ts), want) {
			t.Errorf("generated TypeScript lacks %q", want)
		}
	}
	if strings.Contains(string(ts), "AccountIDs") || strings.Contains(string(ts), "account_ids") {
		t.Error(`a json:"-" field leaked into the TypeScript`)
	}
}

func TestUnsupportedTypesFail(t *testing.T) {
	type withChan struct {
		C chan int `json:"c"`
	}
	type withAnon struct {
		A struct{ X int } `json:"a"`
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[withChan](), reflect.TypeFor[withAnon]()} {
		c := realtime.DefaultContract()
		c.Client = []realtime.ClientEventSpec{{Name: "x", Payload: typ}}
		if _, _, err := render(c); err == nil {
			t.Errorf("%v: render succeeded, want an error", typ)
		}
	}
	c := realtime.DefaultContract()
	c.Client = []realtime.ClientEventSpec{{Name: "x", Payload: reflect.TypeFor[realtime.AccountPayload](), Ack: []realtime.AckField{{Name: "nope"}}}}
	if _, _, err := render(c); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown ack field: err = %v", err)
	}
}

func TestRunWritesFiles(t *testing.T) {
	dir := t.TempDir()
	ts, md := filepath.Join(dir, "a", "x.ts"), filepath.Join(dir, "b", "x.md")
	if err := run(ts, md); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ts, md} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s not written: %v", p, err)
		}
	}
}
