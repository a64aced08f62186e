package main

import (
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/auth"
)

// console is the dev agent console, with the official Socket.IO client
// (socket.io-client's dist/socket.io.min.js) served locally.
//
//go:embed console
var console embed.FS

// devServer serves dev mode's endpoints: a token issuer, an event injector
// and the console. It is mounted only with -dev, on loopback.
type devServer struct {
	hub      *realtime.Hub
	verifier *auth.DevVerifier
	log      *slog.Logger
}

func (d *devServer) mount(mux *http.ServeMux) {
	static, _ := fs.Sub(console, "console")
	mux.Handle("GET /dev/", http.StripPrefix("/dev/", http.FileServerFS(static)))
	mux.HandleFunc("GET /dev/token", d.token)
	mux.HandleFunc("POST /dev/events", d.events)
}

// token mints a dev token: /dev/token?sub=alice&accounts=acme,globex&email=...&ttl=1h
// (a negative ttl mints an already expired token, for testing clients).
func (d *devServer) token(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sub := q.Get("sub")
	if sub == "" {
		httpError(w, http.StatusBadRequest, "sub is required: /dev/token?sub=alice&accounts=acme")
		return
	}
	ttl := time.Hour
	if v := q.Get("ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d == 0 {
			httpError(w, http.StatusBadRequest, "ttl must be a duration like 30s or 1h")
			return
		}
		ttl = d
	}
	var accounts []string
	for _, a := range strings.Split(q.Get("accounts"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			accounts = append(accounts, a)
		}
	}
	tok, err := d.verifier.Mint(sub, q.Get("email"), accounts, ttl)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "sub": sub, "accounts": accounts,
		"expires_at": time.Now().Add(ttl).UTC().Format(time.RFC3339)})
}

// events injects an event: {"routing_key": "...", "event": {...}}.
func (d *devServer) events(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RoutingKey string          `json:"routing_key"`
		Event      json.RawMessage `json:"event"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(body, &req) != nil || req.RoutingKey == "" {
		httpError(w, http.StatusBadRequest, `body must be {"routing_key": "conversation.created", "event": {...}}`)
		return
	}
	if err := d.hub.Publish(r.Context(), req.RoutingKey, []byte(req.Event)); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, realtime.ErrInvalidEvent) {
			status = http.StatusUnprocessableEntity
		}
		httpError(w, status, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"ok": true, "routing_key": req.RoutingKey})
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"ok": false, "error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
