package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/auth"
	"github.com/turumba/realtime/examples/internal/agenttest"
)

func newTestHelpdesk(t *testing.T) (*helpdesk, *auth.DevVerifier, *httptest.Server) {
	t.Helper()
	dv := auth.NewDevVerifier(nil)
	svc, err := newHelpdesk(dv, map[string][]string{"acme": {"carol", "erin"}, "globex": {"frank"}},
		realtime.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.hub.Shutdown(ctx)
		srv.Close()
	})
	return svc, dv, srv
}

func token(t *testing.T, dv *auth.DevVerifier, user string, accounts ...string) string {
	t.Helper()
	tok, err := dv.Mint(user, "", accounts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func post(t *testing.T, url, body string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestServiceRoutesAndHubRoutesSideBySide(t *testing.T) {
	_, _, srv := newTestHelpdesk(t)
	for path, want := range map[string]string{"/": "helpdesk:", "/health": `"healthy"`, "/ready": `"ready"`} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(want)) {
			t.Errorf("GET %s = %d %q, want 200 with %s", path, resp.StatusCode, b, want)
		}
	}
}

func TestAuthorizerIsTheServicesMembership(t *testing.T) {
	_, dv, srv := newTestHelpdesk(t)
	// carol's token lists no account, but the service says she is in acme.
	carol := agenttest.Dial(t, srv.URL, token(t, dv, "carol"))
	if ack := carol.Emit("account:subscribe", realtime.AccountPayload{AccountID: "acme"}); !ack.OK {
		t.Fatalf("carol subscribe acme: %+v", ack)
	}
	// mallory's token lists acme, but the service does not know her.
	mallory := agenttest.Dial(t, srv.URL, token(t, dv, "mallory", "acme"))
	if ack := mallory.Emit("account:subscribe", realtime.AccountPayload{AccountID: "acme"}); ack.OK || ack.Error != "forbidden" {
		t.Fatalf("mallory subscribe acme: %+v, want forbidden", ack)
	}
	if ack := mallory.Emit("conversation:join", realtime.ConversationPayload{ConversationID: "c-1", AccountID: "acme"}); ack.Error != "forbidden" {
		t.Fatalf("mallory join: %+v, want forbidden", ack)
	}
	// frank is in globex only.
	frank := agenttest.Dial(t, srv.URL, token(t, dv, "frank"))
	if ack := frank.Emit("account:subscribe", realtime.AccountPayload{AccountID: "acme"}); ack.Error != "forbidden" {
		t.Fatalf("frank subscribe acme: %+v, want forbidden", ack)
	}
}

func TestServiceHandlersPublishToAgents(t *testing.T) {
	_, dv, srv := newTestHelpdesk(t)
	carol := agenttest.Dial(t, srv.URL, token(t, dv, "carol"))
	frank := agenttest.Dial(t, srv.URL, token(t, dv, "frank"))
	carol.Emit("account:subscribe", realtime.AccountPayload{AccountID: "acme"})
	frank.Emit("account:subscribe", realtime.AccountPayload{AccountID: "globex"})

	status, body := post(t, srv.URL+"/api/conversations", `{"account_id":"acme","contact":"dana@example.com"}`)
	if status != http.StatusCreated || body["conversation_id"] != "c-1" {
		t.Fatalf("create: %d %v", status, body)
	}
	ev := carol.Wait("conversation:new", nil, 5*time.Second)
	if ev.Payload["conversation_id"] != "c-1" || ev.Payload["contact_identifier"] != "dana@example.com" {
		t.Errorf("conversation:new = %v", ev.Payload)
	}
	if err := realtime.DefaultContract().CheckServerEvent(ev.Name, ev.Payload); err != nil {
		t.Error(err)
	}

	carol.Emit("conversation:join", realtime.ConversationPayload{ConversationID: "c-1", AccountID: "acme"})
	if status, body := post(t, srv.URL+"/api/conversations/c-1/messages", `{"account_id":"acme","body":"hello","sender_type":"contact"}`); status != http.StatusAccepted {
		t.Fatalf("message: %d %v", status, body)
	}
	msg := carol.Wait("conversation:message", nil, 5*time.Second)
	if msg.Payload["message_body"] != "hello" {
		t.Errorf("conversation:message = %v", msg.Payload)
	}
	// An id the routing table refuses comes back as 422 from the service.
	if status, _ := post(t, srv.URL+"/api/conversations/a:b/messages", `{"account_id":"acme","body":"x"}`); status != http.StatusUnprocessableEntity {
		t.Errorf("invalid conversation id: status %d, want 422", status)
	}
	if status, _ := post(t, srv.URL+"/api/conversations", `{"account_id":"nope"}`); status != http.StatusBadRequest {
		t.Errorf("unknown account: status %d, want 400", status)
	}

	time.Sleep(100 * time.Millisecond)
	for _, e := range frank.Events() {
		t.Errorf("frank (globex) received %s %v", e.Name, e.Payload)
	}
}

func TestRunPrintsAddressAndTokens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	out := &bytes.Buffer{}
	done := make(chan error, 1)
	pr, pw := io.Pipe()
	go func() { done <- run(ctx, addr, pw); pw.Close() }()
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(out, pr); close(copied) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("embed did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	<-copied
	for _, want := range []string{"helpdesk listening on http://" + addr, "token for carol (acme): ey", "token for frank (globex): ey"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
