package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/auth"
)

// syncBuffer collects the program's output for the test to read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newHub serves an in-process Hub with a dev verifier, as the binary's dev mode does.
func newHub(t *testing.T) (*realtime.Hub, *auth.DevVerifier, string) {
	t.Helper()
	dv := auth.NewDevVerifier(nil)
	hub, err := realtime.New(realtime.WithTokenVerifier(dv), realtime.WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hub.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hub.Shutdown(ctx)
		srv.Close()
	})
	return hub, dv, srv.URL
}

func TestPrintsEventsAsAnAgent(t *testing.T) {
	// Not "polling": the Go client's polling transport queues each write
	// behind the pending long-poll, so acknowledgements wait for the next
	// ping (25 s); browsers and socket.io-client do not (test/e2e covers them).
	for _, transport := range []string{"websocket", "auto"} {
		t.Run(transport, func(t *testing.T) {
			hub, dv, url := newHub(t)
			token, err := dv.Mint("alice", "", []string{"acme"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			out := &syncBuffer{}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, config{URL: url, Token: token, User: "alice", Accounts: []string{"acme"}, Conversation: "c-1", Transport: transport, Count: 7}, out)
			}()
			waitFor(t, out, "ack conversation:join")

			publish := func(key string, body map[string]any) {
				t.Helper()
				if body["account_id"] == nil {
					body["account_id"] = "acme"
				}
				if err := hub.Publish(ctx, key, body); err != nil {
					t.Fatal(err)
				}
			}
			publish("conversation.created", map[string]any{"conversation_id": "c-1", "status": "open", "channel_id": "web"})
			publish("conversation.message.created", map[string]any{"conversation_id": "c-1", "message_id": "m1", "message_body": "hello", "is_private": false, "created_at": "2026-01-02T03:04:05Z"})
			publish("conversation.assigned", map[string]any{"conversation_id": "c-1", "assignee_id": "alice", "assigned_by": "router"})
			publish("agent.presence.changed", map[string]any{"user_id": "bob", "status": "away"})
			publish("queue.updated", map[string]any{"unassigned_count": 2, "oldest_waiting_seconds": 30})
			publish("conversation.created", map[string]any{"conversation_id": "other", "account_id": "globex"}) // not alice's account

			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run: %v\n%s", err, out)
				}
			case <-ctx.Done():
				t.Fatalf("timed out; output:\n%s", out)
			}
			want := []string{
				"connected as alice (",
				`ack account:subscribe {"ok":true,"account_id":"acme"}`,
				`ack conversation:join {"ok":true,"account_id":"acme","conversation_id":"c-1"}`,
				`event conversation:new {"channel_id":"web","conversation_id":"c-1","status":"open"}`,
				`event conversation:message {"conversation_id":"c-1","created_at":"2026-01-02T03:04:05Z","is_private":false,"message_body":"hello","message_id":"m1"}`,
				`event conversation:updated {"conversation_id":"c-1","last_message_at":"2026-01-02T03:04:05Z"}`,
				`event notification:assignment {"assigned_by":"router","conversation_id":"c-1"}`,
				`event conversation:updated {"assignee_id":"alice","conversation_id":"c-1"}`,
				`event agent:presence {"status":"away","user_id":"bob"}`,
				`event queue:update {"oldest_waiting_seconds":30,"unassigned_count":2}`,
			}
			if transport != "auto" {
				want[0] = "connected as alice (" + transport + ")"
			}
			got := out.String()
			pos := 0
			for _, w := range want {
				i := strings.Index(got[pos:], w)
				if i < 0 {
					t.Fatalf("output lacks %q after position %d:\n%s", w, pos, got)
				}
				pos += i + len(w)
			}
			if strings.Contains(got, `"other"`) {
				t.Errorf("another account's event was printed:\n%s", got)
			}
			checkContract(t, got)
		})
	}
}

// checkContract holds every printed event to the generated contract.
func checkContract(t *testing.T, out string) {
	t.Helper()
	c := realtime.DefaultContract()
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, "event ")
		if !ok {
			continue
		}
		name, raw, _ := strings.Cut(rest, " ")
		var payload map[string]any
		if err := json.Unmarshal([]byte(raw), &payload); err != nil {
			t.Errorf("%s: payload is not a JSON object: %v", line, err)
			continue
		}
		if err := c.CheckServerEvent(name, payload); err != nil {
			t.Errorf("contract: %v", err)
		}
	}
}

func TestRefusedTokenIsAnError(t *testing.T) {
	_, dv, url := newHub(t)
	expired, _ := dv.Mint("alice", "", []string{"acme"}, -time.Minute)
	for token, want := range map[string]string{"not-a-token": "invalid_token", expired: "token_expired"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := run(ctx, config{URL: url, Token: token, Accounts: []string{"acme"}, Transport: "websocket"}, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run with a bad token: err = %v, want one naming %s", err, want)
		}
	}
}

func TestForbiddenAccountIsPrintedNotFatal(t *testing.T) {
	_, dv, url := newHub(t)
	token, _ := dv.Mint("mallory", "", []string{"acme"}, time.Hour)
	out := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		_ = run(ctx, config{URL: url, Token: token, User: "mallory", Accounts: []string{"globex"}, Transport: "websocket"}, out)
	}()
	waitFor(t, out, `ack account:subscribe {"ok":false,"error":"forbidden"`)
}

func waitFor(t *testing.T, out *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within 10s; output:\n%s", s, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
