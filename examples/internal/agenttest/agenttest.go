// Package agenttest connects test agents to a Hub with the Go Socket.IO
// client, for the examples' tests.
package agenttest

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	client "github.com/zishang520/socket.io/clients/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/turumba/realtime"
)

// Event is one server->client event an Agent received.
type Event struct {
	Name    string
	Payload map[string]any
}

// Agent is a connected /agents socket that records what it receives.
type Agent struct {
	t    testing.TB
	sock *client.Socket

	mu     sync.Mutex
	events []Event
}

// Dial connects to baseURL's /agents namespace over websocket with token and
// waits for the connection; the socket is closed when the test ends.
func Dial(t testing.TB, baseURL, token string) *Agent {
	t.Helper()
	opts := client.DefaultOptions()
	opts.SetAuth(map[string]any{"token": token})
	opts.SetForceNew(true)
	opts.SetTransports(types.NewSet(client.WebSocket))
	// Handlers first, then connect; retry a handshake whose open was missed
	// (the client library subscribes to it after starting the engine).
	opts.SetAutoConnect(false)
	opts.SetReconnectionDelay(100)
	opts.SetReconnectionAttempts(5)
	opts.SetTimeout(2 * time.Second)
	sock, err := client.Connect(strings.TrimRight(baseURL, "/")+realtime.Namespace, opts)
	if err != nil {
		t.Fatalf("agenttest: connect: %v", err)
	}
	a := &Agent{t: t, sock: sock}
	connected := make(chan struct{}, 1)
	refused := make(chan error, 1)
	_ = sock.On("connect", func(...any) {
		select {
		case connected <- struct{}{}:
		default:
		}
	})
	_ = sock.On("connect_error", func(args ...any) {
		if err, ok := first(args).(*types.ExtendedError); ok {
			refused <- err
		}
	})
	sock.OnAny(func(args ...any) {
		name, _ := first(args).(string)
		var payload map[string]any
		if len(args) > 1 {
			raw, _ := json.Marshal(args[1])
			_ = json.Unmarshal(raw, &payload)
		}
		a.mu.Lock()
		a.events = append(a.events, Event{Name: name, Payload: payload})
		a.mu.Unlock()
	})
	t.Cleanup(func() { sock.Disconnect() })
	sock.Connect()
	select {
	case <-connected:
	case err := <-refused:
		t.Fatalf("agenttest: connection refused: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agenttest: not connected within 10s")
	}
	return a
}

// Emit sends a client event and returns its acknowledgement. A dropped
// connection (the client reconnects) is retried.
func (a *Agent) Emit(event string, payload any) realtime.Ack {
	a.t.Helper()
	for attempt := 0; ; attempt++ {
		done := make(chan realtime.Ack, 1)
		errc := make(chan error, 1)
		a.sock.Timeout(3*time.Second).EmitWithAck(event, payload)(func(args []any, err error) {
			if err != nil {
				errc <- err
				return
			}
			var ack realtime.Ack
			raw, _ := json.Marshal(first(args))
			_ = json.Unmarshal(raw, &ack)
			done <- ack
		})
		select {
		case ack := <-done:
			return ack
		case err := <-errc:
			if attempt == 3 {
				a.t.Fatalf("agenttest: %s: %v", event, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// Wait returns the first received event named name whose payload satisfies
// match (nil matches any), failing the test after timeout.
func (a *Agent) Wait(name string, match func(map[string]any) bool, timeout time.Duration) Event {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a.mu.Lock()
		for _, e := range a.events {
			if e.Name == name && (match == nil || match(e.Payload)) {
				a.mu.Unlock()
				return e
			}
		}
		a.mu.Unlock()
		if time.Now().After(deadline) {
			a.t.Fatalf("agenttest: no %s within %v; received %v", name, timeout, a.Events())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Events returns what the agent received so far.
func (a *Agent) Events() []Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Event(nil), a.events...)
}

func first(args []any) any {
	if len(args) == 0 {
		return nil
	}
	return args[0]
}
