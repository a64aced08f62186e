package baseline

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/turumba/realtime/internal/sio"
)

// testClient is a bare Socket.IO client over sio, reading what the relay sends.
type testClient struct {
	t    *testing.T
	conn net.Conn
	fr   *sio.FrameReader
	mask [4]byte
}

func dial(t *testing.T, srv *httptest.Server) *testClient {
	t.Helper()
	addr := strings.TrimPrefix(srv.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	br, err := sio.ClientHandshake(conn, addr, "/socket.io/?EIO=4&transport=websocket", nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{t: t, conn: conn, fr: &sio.FrameReader{R: br}, mask: [4]byte{1, 2, 3, 4}}
	if msg := c.next(); !strings.HasPrefix(msg, `0{"sid":`) || !strings.Contains(msg, `"upgrades":[]`) {
		t.Fatalf("open packet %q", msg)
	}
	return c
}

func (c *testClient) send(msg string) {
	c.t.Helper()
	if _, err := c.conn.Write(sio.AppendFrame(nil, sio.OpText, []byte(msg), &c.mask)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testClient) next() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := c.fr.Next()
	if err != nil {
		c.t.Fatal(err)
	}
	return string(p)
}

// nothing asserts that no message arrives for a short while.
func (c *testClient) nothing() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, p, err := c.fr.Next(); err == nil {
		c.t.Fatalf("unexpected message %q", p)
	}
}

func newRelay(t *testing.T, opts Options) (*Server, *httptest.Server, *HS256) {
	t.Helper()
	dev := NewHS256([]byte("test-secret"))
	if opts.Verifier == nil {
		opts.Verifier = dev
	}
	s := New(opts)
	srv := httptest.NewServer(s.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	t.Cleanup(func() { cancel(); srv.Close() })
	return s, srv, dev
}

func (c *testClient) connect(dev *HS256, sub string, accounts ...string) {
	c.t.Helper()
	tok, err := dev.Mint(sub, accounts, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(`40/agents,{"token":"` + tok + `"}`)
	if msg := c.next(); !strings.HasPrefix(msg, `40/agents,{"sid":`) {
		c.t.Fatalf("connect: %q", msg)
	}
}

func TestConnectJoinAndBroadcastOnce(t *testing.T) {
	s, srv, dev := newRelay(t, Options{})
	a := dial(t, srv)
	a.connect(dev, "alice", "acme")
	a.send(`42/agents,1["account:subscribe",{"account_id":"acme"}]`)
	if got := a.next(); got != `43/agents,1[{"ok":true,"account_id":"acme"}]` {
		t.Fatalf("subscribe ack %q", got)
	}
	a.send(`42/agents,2["conversation:join",{"conversation_id":"c1"}]`) // the token's only account
	if got := a.next(); got != `43/agents,2[{"ok":true,"conversation_id":"c1"}]` {
		t.Fatalf("join ack %q", got)
	}
	a.send(`42/agents,3["account:subscribe",{"account_id":"globex"}]`)
	if got := a.next(); got != `43/agents,3[{"ok":false,"error":"forbidden"}]` {
		t.Fatalf("foreign subscribe ack %q", got)
	}

	other := dial(t, srv)
	other.connect(dev, "bob", "globex")
	other.send(`42/agents,1["account:subscribe",{"account_id":"globex"}]`)
	other.next()

	// Account and conversation rooms both hold alice: she gets it once.
	if err := s.Publish("conversation.status_changed", []byte(`{"account_id":"acme","conversation_id":"c1","status":"open","ignored":1}`)); err != nil {
		t.Fatal(err)
	}
	if got := a.next(); got != `42/agents,["conversation:updated",{"conversation_id":"c1","status":"open"}]` {
		t.Fatalf("broadcast %q", got)
	}
	a.nothing()
	other.nothing()

	// A message: conversation:message to the conversation, conversation:updated to the account.
	if err := s.Publish("conversation.message.created", []byte(`{"account_id":"acme","conversation_id":"c1","message_id":7,"created_at":"t"}`)); err != nil {
		t.Fatal(err)
	}
	if got := a.next(); got != `42/agents,["conversation:message",{"conversation_id":"c1","message_id":7,"created_at":"t"}]` {
		t.Fatalf("message %q", got)
	}
	if got := a.next(); got != `42/agents,["conversation:updated",{"conversation_id":"c1","last_message_at":"t"}]` {
		t.Fatalf("updated %q", got)
	}
	if s.Connects.Load() != 2 || s.Events.Load() != 2 {
		t.Fatalf("connects %d events %d", s.Connects.Load(), s.Events.Load())
	}
}

func TestPingPongAndRefusedToken(t *testing.T) {
	_, srv, _ := newRelay(t, Options{PingInterval: 50 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	c := dial(t, srv)
	c.send(`40/agents,{"token":"not-a-jwt"}`)
	var reply struct {
		Message string
		Data    struct{ Code string }
	}
	msg := c.next()
	if !strings.HasPrefix(msg, "44/agents,") || json.Unmarshal([]byte(strings.TrimPrefix(msg, "44/agents,")), &reply) != nil ||
		reply.Message != "Invalid token" || reply.Data.Code != "invalid_token" {
		t.Fatalf("connect error %q", msg)
	}
	if got := c.next(); got != "2" {
		t.Fatalf("want a ping, got %q", got)
	}
	c.send("3")
	if got := c.next(); got != "2" {
		t.Fatalf("want a second ping, got %q", got)
	}
	// No pong now: the relay drops the connection.
	_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, _, err := c.fr.Next(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("not disconnected after missing pongs")
			}
			return
		}
	}
}

// A client that stops reading is cut off; the others keep receiving.
func TestSlowClientIsCutOff(t *testing.T) {
	s, srv, dev := newRelay(t, Options{QueueLimit: 1024})
	slow, fast := dial(t, srv), dial(t, srv)
	for _, c := range []*testClient{slow, fast} {
		c.connect(dev, "u", "acme")
		c.send(`42/agents,1["account:subscribe",{"account_id":"acme"}]`)
		c.next()
	}
	done := make(chan int)
	go func() { // fast reads everything, on the side
		n := 0
		for {
			_ = fast.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, _, err := fast.fr.Next(); err != nil {
				done <- n
				return
			}
			n++
		}
	}()
	body := `{"account_id":"acme","conversation_id":"c","status":"` + strings.Repeat("x", 4000) + `"}`
	const events = 4000 // 16 MB: more than the slow client's queue (4 MB) and socket buffers hold
	for i := 0; i < events; i++ {
		if err := s.Publish("conversation.created", []byte(body)); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			time.Sleep(time.Millisecond) // give the fast reader a chance on a busy machine
		}
	}
	if got := <-done; got != events {
		t.Fatalf("the fast client got %d of %d events", got, events)
	}
	if s.CutOff.Load() != 1 {
		t.Fatalf("%d sockets cut off, want 1", s.CutOff.Load())
	}
}

func TestPublishErrors(t *testing.T) {
	s := New(Options{})
	for key, body := range map[string]string{
		"nope.key":             `{"account_id":"a"}`,
		"conversation.created": `{"conversation_id":"c"}`,
		"queue.updated":        `[1]`,
		"conversation.routed":  `{"account_id":"a"}`,
	} {
		if err := s.Publish(key, []byte(body)); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s %s: %v", key, body, err)
		}
	}
	if err := s.Publish("agent.presence.online", []byte(`{"account_id":"a","user_id":"u","status":"online"}`)); err != nil {
		t.Error(err)
	}
}

func TestDevEndpoints(t *testing.T) {
	s := New(Options{})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/dev/token?sub=alice&accounts=acme,globex")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	id, err := s.verify.Verify(tok.Token)
	if err != nil || id.Subject != "alice" || strings.Join(id.Accounts, ",") != "acme,globex" {
		t.Fatalf("token %+v %v", id, err)
	}
	for body, want := range map[string]int{
		`{"routing_key":"queue.updated","event":{"account_id":"acme","unassigned_count":3}}`: http.StatusAccepted,
		`{"routing_key":"queue.updated","event":{}}`:                                         http.StatusUnprocessableEntity,
		`nope`: http.StatusBadRequest,
	} {
		resp, err := http.Post(srv.URL+"/dev/events", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", body, resp.StatusCode, want)
		}
	}
	resp, err = http.Get(srv.URL + "/socket.io/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("polling: %d", resp.StatusCode)
	}
}
