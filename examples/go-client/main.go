// Command go-client connects to turumba-realtime's /agents namespace as an
// agent, with the Go Socket.IO client github.com/zishang520/socket.io/clients/socket/v3,
// subscribes to accounts, joins a conversation and prints every event it
// receives as one line: the event name and its JSON payload.
//
// Against the binary in dev mode (go run ./cmd/turumba-realtime -dev), which
// mints the token:
//
//	go run ./examples/go-client -url http://127.0.0.1:3200 -user alice -accounts acme -conversation c-1
//
// and, in another shell, an event:
//
//	curl -s localhost:3200/dev/events -d '{"routing_key":"conversation.created","event":{"account_id":"acme","conversation_id":"c-1","status":"open"}}'
//
// prints
//
//	connected as alice (websocket)
//	ack account:subscribe {"ok":true,"account_id":"acme"}
//	ack conversation:join {"ok":true,"account_id":"acme","conversation_id":"c-1"}
//	event conversation:new {"conversation_id":"c-1","status":"open"}
//
// With a real token (Cognito), pass -token instead of -user.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	client "github.com/zishang520/socket.io/clients/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/turumba/realtime"
)

// config is what the flags say.
type config struct {
	URL          string
	Token        string // a bearer token; empty: mint one from the dev server
	User         string
	Accounts     []string
	Conversation string
	Transport    string // websocket, polling or auto
	Count        int    // exit after this many events; 0: run until interrupted
}

func main() {
	var cfg config
	var accounts string
	flag.StringVar(&cfg.URL, "url", "http://127.0.0.1:3200", "service URL")
	flag.StringVar(&cfg.Token, "token", "", "bearer token (default: mint one from the dev server's /dev/token)")
	flag.StringVar(&cfg.User, "user", "alice", "user to mint a dev token for")
	flag.StringVar(&accounts, "accounts", "acme", "comma-separated accounts to subscribe to (and to put in a dev token)")
	flag.StringVar(&cfg.Conversation, "conversation", "", "conversation to join (in the first account)")
	flag.StringVar(&cfg.Transport, "transport", "websocket", "websocket, polling or auto (polling, then upgrade)")
	flag.IntVar(&cfg.Count, "n", 0, "exit after n events (0: until interrupted)")
	flag.Parse()
	cfg.Accounts = splitList(accounts)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "go-client:", err)
		os.Exit(1)
	}
}

// run connects, subscribes and prints events until ctx ends or cfg.Count
// events have arrived.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Token == "" {
		tok, err := devToken(ctx, cfg)
		if err != nil {
			return err
		}
		cfg.Token = tok
	}
	var mu sync.Mutex // serializes output lines from the client's goroutines
	printf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}

	opts := client.DefaultOptions()
	opts.SetAuth(map[string]any{"token": cfg.Token})
	opts.SetForceNew(true)
	// Connect once the handlers below are registered, so no answer is missed.
	opts.SetAutoConnect(false)
	// Reconnect after a dropped connection, and retry a handshake that does
	// not finish: the client's Manager.Open subscribes to the engine's "open"
	// after starting it, so now and then a fast server's open is missed and
	// only the timeout moves things on.
	opts.SetReconnection(true)
	opts.SetReconnectionAttempts(5)
	opts.SetReconnectionDelay(200)
	opts.SetReconnectionDelayMax(2000)
	opts.SetTimeout(3 * time.Second)
	switch cfg.Transport {
	case "websocket":
		opts.SetTransports(types.NewSet(client.WebSocket))
	case "polling":
		opts.SetTransports(types.NewSet(client.Polling))
	case "auto":
		opts.SetTransports(types.NewSet(client.Polling, client.WebSocket))
	default:
		return fmt.Errorf("-transport must be websocket, polling or auto, not %q", cfg.Transport)
	}
	sock, err := client.Connect(strings.TrimRight(cfg.URL, "/")+realtime.Namespace, opts)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer sock.Disconnect()

	fatal := make(chan error, 4)
	fail := func(err error) {
		select {
		case fatal <- err:
		default:
		}
	}
	var count atomic.Int64
	counted := make(chan struct{}, 1)

	// onConnect subscribes after every connection, recovered or not: joining
	// a room twice is harmless, and an event sent right after the handshake
	// can be lost when the server drops that connection (then the client
	// reconnects, and the server reports the session as recovered although
	// the subscription never reached it).
	onConnect := func() {
		printf("connected as %s (%s)%s", cfg.User, transportName(sock), map[bool]string{true: ", recovered"}[sock.Recovered()])
		for _, a := range cfg.Accounts {
			if _, err := emit(ctx, sock, printf, "account:subscribe", realtime.AccountPayload{AccountID: a}); err != nil {
				printf("%v; subscribing again after the reconnection", err)
				return
			}
		}
		if cfg.Conversation != "" && len(cfg.Accounts) > 0 {
			p := realtime.ConversationPayload{ConversationID: cfg.Conversation, AccountID: cfg.Accounts[0]}
			if _, err := emit(ctx, sock, printf, "conversation:join", p); err != nil {
				printf("%v; joining again after the reconnection", err)
			}
		}
	}
	// Handlers run on the client's read loop; anything that waits for the
	// server (an acknowledgement) runs on its own goroutine.
	_ = sock.On("connect", func(...any) { go onConnect() })
	_ = sock.On("connect_error", func(args ...any) {
		err := connectError(args)
		var refused *refusedError
		if errors.As(err, &refused) {
			fail(err) // the server said no: retrying with the same token is pointless
			return
		}
		printf("connect attempt failed: %v; retrying", err)
	})
	_ = sock.Io().On("reconnect_failed", func(...any) { fail(errors.New("could not connect; gave up after 5 attempts")) })
	_ = sock.On("disconnect", func(args ...any) { printf("disconnected: %v", first(args)) })
	sock.OnAny(func(args ...any) {
		if len(args) == 0 {
			return
		}
		name, _ := args[0].(string)
		printf("event %s %s", name, compactJSON(first(args[1:])))
		count.Add(1)
		select {
		case counted <- struct{}{}:
		default:
		}
	})

	sock.Connect()
	for cfg.Count == 0 || count.Load() < int64(cfg.Count) {
		select {
		case <-counted:
		case err := <-fatal:
			return err
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// emit sends a client event, waits for its acknowledgement and prints it.
// A refused event (ok:false) is printed, not returned as an error.
func emit(ctx context.Context, sock *client.Socket, printf func(string, ...any), event string, payload any) (realtime.Ack, error) {
	type result struct {
		ack realtime.Ack
		err error
	}
	done := make(chan result, 1)
	sock.Timeout(5*time.Second).EmitWithAck(event, payload)(func(args []any, err error) {
		var r result
		if err != nil {
			r.err = fmt.Errorf("%s: %w", event, err)
		} else {
			raw, _ := json.Marshal(first(args))
			r.err = json.Unmarshal(raw, &r.ack)
		}
		done <- r
	})
	select {
	case r := <-done:
		if r.err == nil {
			printf("ack %s %s", event, compactJSON(r.ack))
		}
		return r.ack, r.err
	case <-ctx.Done():
		return realtime.Ack{}, ctx.Err()
	}
}

// devToken mints a token from the dev server's /dev/token.
func devToken(ctx context.Context, cfg config) (string, error) {
	q := url.Values{"sub": {cfg.User}, "accounts": {strings.Join(cfg.Accounts, ",")}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(cfg.URL, "/")+"/dev/token?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("dev token: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Token == "" {
		return "", fmt.Errorf("dev token: %s %s (is the service running with -dev? otherwise pass -token)", resp.Status, body.Error)
	}
	return body.Token, nil
}

// refusedError is a connect error the server sent: the token was refused.
type refusedError struct {
	Message string
	Code    string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("connect refused: %s (%s)", e.Message, e.Code)
}

// connectError turns a connect_error's arguments into an error: a
// refusedError with the server's code, such as "Token expired
// (token_expired)", or the client's own (a timeout).
func connectError(args []any) error {
	err, ok := first(args).(error)
	if !ok {
		return fmt.Errorf("connect error: %v", first(args))
	}
	var ext *types.ExtendedError
	if errors.As(err, &ext) {
		code := "unknown"
		if data, ok := ext.Data.(map[string]any); ok && data["code"] != nil {
			code = fmt.Sprint(data["code"])
		}
		return &refusedError{Message: ext.Message, Code: code}
	}
	return err
}

func transportName(sock *client.Socket) string {
	if e := sock.Io().Engine(); e != nil && e.Transport() != nil {
		return e.Transport().Name()
	}
	return "?"
}

// compactJSON renders v on one line; maps come out with sorted keys.
func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

func first(args []any) any {
	if len(args) == 0 {
		return nil
	}
	return args[0]
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
