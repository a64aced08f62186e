package realtime

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSocket is a socketConn that records what the Hub does to it.
type fakeSocket struct {
	mu      sync.Mutex
	sid     string
	joined  map[string]bool
	emitted []string
	closed  bool
}

func newFakeSocket(sid string) *fakeSocket { return &fakeSocket{sid: sid, joined: map[string]bool{}} }

func (f *fakeSocket) id() string            { return f.sid }
func (f *fakeSocket) address() string       { return "127.0.0.1" }
func (f *fakeSocket) transport() string     { return "websocket" }
func (f *fakeSocket) transportClosed() bool { return true }
func (f *fakeSocket) join(room string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joined[room] = true
}
func (f *fakeSocket) leave(room string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.joined, room)
}
func (f *fakeSocket) inRoom(room string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.joined[room]
}
func (f *fakeSocket) rooms() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for r := range f.joined {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}
func (f *fakeSocket) emit(event string, _ any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.emitted = append(f.emitted, event)
}
func (f *fakeSocket) setIdentity(*Identity) {}
func (f *fakeSocket) connected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.closed
}
func (f *fakeSocket) disconnect()     { f.close() }
func (f *fakeSocket) closeTransport() { f.close() }
func (f *fakeSocket) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

// staticVerifier accepts tokens of the form "sub|acct1,acct2".
type staticVerifier struct{}

func (staticVerifier) Verify(_ context.Context, token string) (Identity, error) {
	sub, accounts, ok := strings.Cut(token, "|")
	if !ok || sub == "" {
		return Identity{}, ErrInvalidToken
	}
	return Identity{Subject: sub, AccountIDs: strings.Split(accounts, ","), ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func newTestConn(t testing.TB, accounts ...string) (*conn, *fakeSocket) {
	t.Helper()
	h, err := New(WithTokenVerifier(staticVerifier{}), WithClientRateLimit(RateLimit{PerSecond: 1e6, Burst: 1 << 20}),
		WithTypingRateLimit(RateLimit{PerSecond: 1e6, Burst: 1 << 20}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	fs := newFakeSocket("sid-1")
	return newConn(h, fs, Identity{Subject: "alice", AccountIDs: accounts}), fs
}

func event(name string) clientEvent {
	for _, ev := range clientEvents {
		if ev.name == name {
			return ev
		}
	}
	panic("no client event " + name)
}

func TestClientEventsAuthorizeByTokenAccounts(t *testing.T) {
	c, fs := newTestConn(t, "acme")
	cases := []struct {
		event, payload string
		wantErr        string
		wantRoom       string
	}{
		{"account:subscribe", `{"account_id":"acme"}`, "", "account:acme"},
		{"account:subscribe", `{"account_id":"globex"}`, "forbidden", ""},
		{"conversation:join", `{"conversation_id":"c1"}`, "", "conv:acme:c1"},
		{"conversation:join", `{"conversation_id":"c1","account_id":"globex"}`, "forbidden", ""},
		{"conversation:join", `{"conversation_id":"c1","account_id":"acme:x"}`, "invalid_payload", ""},
		{"conversation:typing:start", `{"conversation_id":"c2"}`, "forbidden", ""},
		{"agent:presence:list", `{"account_id":"globex"}`, "forbidden", ""},
		{"agent:status", `{"status":"away"}`, "", ""},
		{"auth:refresh", `{"token":"bob|acme"}`, "forbidden", ""},
		{"auth:refresh", `{"token":"x"}`, "invalid_token", ""},
	}
	for _, tc := range cases {
		ack := c.dispatch(event(tc.event), json.RawMessage(tc.payload))
		if ack.Error != tc.wantErr {
			t.Errorf("%s %s: error %q (%s), want %q", tc.event, tc.payload, ack.Error, ack.Message, tc.wantErr)
		}
		if tc.wantRoom != "" && !fs.inRoom(tc.wantRoom) {
			t.Errorf("%s %s: not in room %s (rooms %v)", tc.event, tc.payload, tc.wantRoom, fs.rooms())
		}
	}
	if got := fs.rooms(); !slices.Equal(got, []string{"account:acme", "conv:acme:c1"}) {
		t.Errorf("rooms = %v", got)
	}
}

func TestRefreshLeavesRoomsNoLongerAllowed(t *testing.T) {
	c, fs := newTestConn(t, "acme", "globex")
	for _, p := range []string{`{"account_id":"acme"}`, `{"account_id":"globex"}`} {
		if ack := c.dispatch(event("account:subscribe"), json.RawMessage(p)); !ack.OK {
			t.Fatal(ack)
		}
	}
	if ack := c.dispatch(event("conversation:join"), json.RawMessage(`{"conversation_id":"c","account_id":"globex"}`)); !ack.OK {
		t.Fatal(ack)
	}
	if ack := c.dispatch(event("auth:refresh"), json.RawMessage(`{"token":"alice|acme"}`)); !ack.OK {
		t.Fatalf("refresh: %+v", ack)
	}
	if got := fs.rooms(); !slices.Equal(got, []string{"account:acme"}) {
		t.Errorf("after refresh rooms = %v, want only account:acme", got)
	}
}

func TestRateLimitAndPayloadBound(t *testing.T) {
	h, err := New(WithClientRateLimit(RateLimit{PerSecond: 0.001, Burst: 2}), WithMaxPayloadBytes(256))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	c := newConn(h, newFakeSocket("s"), Identity{Subject: "a", AccountIDs: []string{"acme"}})
	big := json.RawMessage(`{"account_id":"` + strings.Repeat("x", 300) + `"}`)
	if ack := c.dispatch(event("account:subscribe"), big); ack.Error != codeInvalidPayload || !strings.Contains(ack.Message, "256") {
		t.Errorf("oversized payload: %+v", ack)
	}
	c.dispatch(event("account:subscribe"), json.RawMessage(`{"account_id":"acme"}`))
	if ack := c.dispatch(event("account:subscribe"), json.RawMessage(`{"account_id":"acme"}`)); ack.Error != codeRateLimited {
		t.Errorf("third event in a burst of 2: %+v", ack)
	}
}

// FuzzClientPayload feeds arbitrary payloads to every client event: each
// must be answered (ok or a known error code) and never panic.
func FuzzClientPayload(f *testing.F) {
	for _, seed := range []string{`{"account_id":"acme"}`, `{"conversation_id":"c1","account_id":"acme"}`, `{"status":"away"}`,
		`{"token":"alice|acme"}`, `"acme"`, `42`, `null`, `[]`, `{}`, `{"account_id":{"$gt":""}}`, `{"conversation_id":"` + strings.Repeat("x", 200) + `"}`,
		`{"account_id":"acme","account_id":"globex"}`, "{\"account_id\":\"a\x00b\"}", `{"status":"online","extra":[1,2,3]}`} {
		for i := range clientEvents {
			f.Add(uint8(i), []byte(seed))
		}
	}
	known := map[string]bool{"": true, codeInvalidPayload: true, codeForbidden: true, codeRateLimited: true,
		codeInvalidToken: true, codeTokenExpired: true, codeAuthUnavail: true, "presence_unavailable": true}
	base, _ := newTestConn(f, "acme")
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		// A fresh connection per input, so a failure reproduces from its input alone.
		fs := newFakeSocket("sid-fuzz")
		c := newConn(base.h, fs, Identity{Subject: "alice", AccountIDs: []string{"acme"}})
		ev := clientEvents[int(which)%len(clientEvents)]
		ack := c.dispatch(ev, json.RawMessage(payload))
		if ack.OK == (ack.Error != "") || !known[ack.Error] {
			t.Fatalf("%s %q: ack %+v", ev.name, payload, ack)
		}
		// Whatever the input, every account room joined is one the connection's
		// identity allows (auth:refresh may legitimately replace it).
		id := c.identity()
		for _, room := range fs.rooms() {
			if account, ok := roomAccount(room); ok && !id.HasAccount(account) {
				t.Fatalf("%s %q joined %s with accounts %v", ev.name, payload, room, id.AccountIDs)
			}
		}
	})
}
