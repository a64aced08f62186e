// Command embed shows the realtime Hub inside an existing net/http service.
//
// The service (a toy helpdesk API) keeps its own routes under /api/, mounts
// the Hub's handler next to them (Socket.IO at /socket.io/, plus /health and
// /ready), pushes events with Hub.Publish from its own request handlers
// instead of a message broker, and decides who may see which account with its
// own Authorizer: its membership table, not the token's account list.
//
//	go run ./examples/embed
//
// prints the address and a token for each member, for example
//
//	helpdesk listening on http://127.0.0.1:3300
//	token for carol (acme): eyJhbGciOiJIUzI1NiIs...
//
// Connect an agent with that token (go run ./examples/go-client -url
// http://127.0.0.1:3300 -token ... -accounts acme), then create a conversation
// through the service's own API; the agent prints conversation:new:
//
//	curl -s localhost:3300/api/conversations -d '{"account_id":"acme","contact":"dana@example.com"}'
//	{"account_id":"acme","contact":"dana@example.com","conversation_id":"c-1"}
//
// Tokens here come from auth.DevVerifier so the example runs alone; a real
// service passes auth.NewCognitoVerifier (or its own realtime.TokenVerifier).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/auth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	addr := "127.0.0.1:3300"
	if v := os.Getenv("ADDR"); v != "" {
		addr = v
	}
	if err := run(ctx, addr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

// run serves the helpdesk on addr until ctx ends.
func run(ctx context.Context, addr string, out io.Writer) error {
	verifier := auth.NewDevVerifier(nil)
	svc, err := newHelpdesk(verifier, map[string][]string{"acme": {"carol", "erin"}, "globex": {"frank"}},
		realtime.WithLogger(slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { _ = svc.hub.Run(ctx) }()

	fmt.Fprintf(out, "helpdesk listening on http://%s\n", ln.Addr())
	for _, account := range svc.accounts() {
		for _, user := range svc.members[account] {
			// The token lists no accounts: membership comes from the service.
			tok, err := verifier.Mint(user, user+"@example.com", nil, 12*time.Hour)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "token for %s (%s): %s\n", user, account, tok)
		}
	}

	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Stop taking requests first, then let the Hub say goodbye to its clients.
	herr := srv.Shutdown(shutdownCtx)
	return errors.Join(herr, svc.hub.Shutdown(shutdownCtx))
}

// helpdesk is the existing service: its own data, its own routes, and the Hub.
type helpdesk struct {
	hub     *realtime.Hub
	members map[string][]string // account -> user ids: the service's own authority

	mu            sync.Mutex
	conversations int
}

// newHelpdesk builds the service and its Hub. The Hub's Authorizer asks the
// service's membership table, so tokens need not carry account ids.
func newHelpdesk(verifier realtime.TokenVerifier, members map[string][]string, opts ...realtime.Option) (*helpdesk, error) {
	s := &helpdesk{members: members}
	hub, err := realtime.New(append([]realtime.Option{
		realtime.WithTokenVerifier(verifier),
		realtime.WithAuthorizer(realtime.AuthorizerFunc(s.authorize)),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("realtime hub: %w", err)
	}
	s.hub = hub
	return s, nil
}

// authorize is the service's account check; the Hub calls it for account and
// conversation rooms, typing and presence lists. Returning
// realtime.ErrForbidden answers the client with "forbidden"; any other error
// is reported as an internal error.
func (s *helpdesk) authorize(_ context.Context, id realtime.Identity, accountID string) error {
	for _, u := range s.members[accountID] {
		if u == id.Subject {
			return nil
		}
	}
	return realtime.ErrForbidden
}

func (s *helpdesk) accounts() []string {
	out := make([]string, 0, len(s.members))
	for a := range s.members {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Handler is the service's mux: its own routes and the Hub's.
func (s *helpdesk) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "helpdesk: POST /api/conversations, POST /api/conversations/{id}/messages; Socket.IO at /socket.io/ (namespace /agents)")
	})
	mux.HandleFunc("POST /api/conversations", s.createConversation)
	mux.HandleFunc("POST /api/conversations/{id}/messages", s.postMessage)
	// The Hub's own paths, mounted next to the service's.
	hub := s.hub.Handler()
	mux.Handle("/socket.io/", hub)
	mux.Handle("GET /health", hub)
	mux.Handle("GET /ready", hub)
	return mux
}

// createConversation stores nothing but a counter (it is a toy) and tells
// the account's agents through the Hub.
func (s *helpdesk) createConversation(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AccountID string `json:"account_id"`
		Contact   string `json:"contact"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || s.members[req.AccountID] == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"account_id\": an existing account, \"contact\": ...}"})
		return
	}
	s.mu.Lock()
	s.conversations++
	id := fmt.Sprintf("c-%d", s.conversations)
	s.mu.Unlock()
	event := map[string]any{
		"account_id": req.AccountID, "conversation_id": id, "channel_id": "api",
		"contact_identifier": req.Contact, "status": "open", "created_at": time.Now().UTC().Format(time.RFC3339),
	}
	// Publish routes the event through the same table as RabbitMQ events and
	// returns once it is handed to the Socket.IO adapter.
	if err := s.hub.Publish(r.Context(), "conversation.created", event); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"conversation_id": id, "account_id": req.AccountID, "contact": req.Contact})
}

func (s *helpdesk) postMessage(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AccountID string `json:"account_id"`
		Body      string `json:"body"`
		Sender    string `json:"sender_type"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || s.members[req.AccountID] == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"account_id\", \"body\", \"sender_type\"}"})
		return
	}
	event := map[string]any{
		"account_id": req.AccountID, "conversation_id": r.PathValue("id"), "message_id": fmt.Sprintf("m-%d", time.Now().UnixNano()),
		"sender_type": req.Sender, "message_body": req.Body, "is_private": false, "created_at": time.Now().UTC().Format(time.RFC3339),
	}
	err := s.hub.Publish(r.Context(), "conversation.message.created", event)
	switch {
	case errors.Is(err, realtime.ErrInvalidEvent):
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusAccepted, map[string]string{"message_id": event["message_id"].(string)})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
