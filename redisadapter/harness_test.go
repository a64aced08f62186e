package redisadapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/turumba/realtime/internal/testenv"
	"github.com/turumba/realtime/internal/testredis"
)

// This file runs small Socket.IO fleets in one process: several servers,
// each with its own Redis client and adapter, sharing one Redis, and a
// minimal client that can drop its connection and reconnect elsewhere.

// testRedis returns the address of the real Redis ($REDIS_URL or
// 127.0.0.1:6379) when it answers, else of a fresh miniredis.
func testRedis(t *testing.T, needReal bool) (addr string, real bool) {
	t.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379"
	}
	if o, err := redis.ParseURL(url); err == nil {
		c := redis.NewClient(o)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.Ping(ctx).Err()
		cancel()
		_ = c.Close()
		if err == nil {
			return o.Addr, true
		}
	}
	if needReal {
		testenv.Missing(t, "no Redis at %s", url)
	}
	m := miniredis.RunT(t)
	return m.Addr(), false
}

func randomPrefix(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test-" + hex.EncodeToString(b) + ":"
}

// node is one server of a test fleet.
type node struct {
	t      *testing.T
	srv    *socket.Server
	nsp    socket.Namespace
	http   *httptest.Server
	ad     *Adapter
	rdb    *redis.Client
	delay  atomic.Int64 // ns the middleware waits (a slow token check)
	refuse atomic.Bool  // the middleware refuses every token

	mu        sync.Mutex
	recovered []bool // sock.Recovered() of each connection, in order
}

type fleetOpts struct {
	n        int
	window   time.Duration
	kind     Kind
	adOpts   []Option
	needReal bool
	// ctor, when set, replaces this package's adapter (to compare with the
	// library's own).
	ctor func(rdb *redis.Client, prefix string) socket.AdapterConstructor
}

type fleet struct {
	nodes  []*node
	prefix string
	rdb    *redis.Client
	real   bool
}

func newFleet(t *testing.T, fo fleetOpts) *fleet {
	t.Helper()
	addr, real := testRedis(t, fo.needReal)
	f := &fleet{prefix: randomPrefix(t), real: real, rdb: redis.NewClient(&redis.Options{Addr: addr})}
	if fo.kind == "" {
		fo.kind = Streams
	}
	for range fo.n {
		f.nodes = append(f.nodes, newNode(t, addr, f.prefix, fo))
	}
	t.Cleanup(func() {
		for _, n := range f.nodes {
			n.close()
		}
		testredis.DeletePrefix(t, f.rdb, f.prefix)
		_ = f.rdb.Close()
	})
	return f
}

func newNode(t *testing.T, addr, prefix string, fo fleetOpts) *node {
	t.Helper()
	n := &node{t: t, rdb: redis.NewClient(&redis.Options{Addr: addr})}
	opts := append([]Option{WithKind(fo.kind), WithKeyPrefix(prefix), WithReadBlock(200 * time.Millisecond),
		WithTrimInterval(100 * time.Millisecond)}, fo.adOpts...)
	ad, err := New(n.rdb, opts...)
	if err != nil {
		t.Fatal(err)
	}
	n.ad = ad
	so := socket.DefaultServerOptions()
	so.SetServeClient(false)
	if fo.window > 0 {
		rec := socket.DefaultConnectionStateRecovery()
		rec.SetMaxDisconnectionDuration(fo.window.Milliseconds())
		rec.SetSkipMiddlewares(false)
		so.SetConnectionStateRecovery(rec)
	}
	so.SetAdapter(ad)
	if fo.ctor != nil {
		so.SetAdapter(fo.ctor(n.rdb, prefix))
	}
	n.srv = socket.NewServer(nil, so)
	n.nsp = n.srv.Of("/agents", nil)
	n.nsp.Use(func(s *socket.Socket, next func(*socket.ExtendedError)) {
		if d := n.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		tok, _ := s.Handshake().Auth["token"].(string)
		if n.refuse.Load() || tok != "ok" {
			next(socket.NewExtendedError("Invalid token", map[string]any{"code": "invalid_token"}))
			return
		}
		// Joined here, before the CONNECT packet goes out: a client that
		// has its CONNECT is in its rooms (the connection handler runs
		// after the CONNECT is written).
		if !s.Recovered() {
			if rooms, ok := s.Handshake().Auth["rooms"].([]any); ok {
				for _, r := range rooms {
					if r, ok := r.(string); ok {
						s.Join(socket.Room(r))
					}
				}
			}
		}
		next(nil)
	})
	_ = n.nsp.On("connection", func(args ...any) {
		s := args[0].(*socket.Socket)
		n.mu.Lock()
		n.recovered = append(n.recovered, s.Recovered())
		n.mu.Unlock()
		_ = s.On("join", func(args ...any) {
			if r, ok := args[0].(string); ok {
				s.Join(socket.Room(r))
			}
		})
	})
	n.http = httptest.NewServer(n.srv.ServeHandler(nil))
	return n
}

func (n *node) emit(room string, payload map[string]any) {
	if err := n.nsp.To(socket.Room(room)).Emit("ev", payload); err != nil {
		n.t.Errorf("emit: %v", err)
	}
}

// publish emits {"seq": 0, 1, ...} to room from the first two instances in
// turn (the consumer instance and, say, typing relayed by another) until
// the returned stop is called; stop returns how many were emitted.
func (f *fleet) publish(room string, pause time.Duration) (stop func() int) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	sent := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			f.nodes[sent%2].emit(room, map[string]any{"seq": sent})
			sent++
			time.Sleep(pause)
		}
	}()
	return func() int {
		close(done)
		wg.Wait()
		return sent
	}
}

func (n *node) lastRecovered() (bool, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.recovered) == 0 {
		return false, false
	}
	return n.recovered[len(n.recovered)-1], true
}

func (n *node) close() {
	n.srv.Close(nil)
	n.http.Close()
	_ = n.ad.Close()
	_ = n.rdb.Close()
}

// client is a minimal Socket.IO client (Engine.IO 4 over websocket) that
// follows the browser client's recovery protocol: it keeps the pid the
// server gave and the offset of the last event it handled, and sends both
// when it reconnects, to whichever server it is told. The official Go
// client is not used: it reconnects on its own goroutine and reads the
// offset before handling the packets still queued from the lost
// connection, which asks for some of them again.
type client struct {
	t    *testing.T
	auth map[string]any

	mu          sync.Mutex
	conn        *websocket.Conn
	readDone    chan struct{} // closed when the current connection's reader ends
	events      []received
	pid         string
	offset      string
	recovered   bool
	connects    int
	errs        []string
	preConnect  int // events written before the server accepted the connection
	attempts    int
	sentOffsets []string // the offset sent with each connection attempt
}

type received struct {
	event   string
	payload map[string]any
	offset  string
	conn    int // which connection of the client it came on (1-based)
}

// dial connects to a server's /agents namespace.
func dial(t *testing.T, url string, auth map[string]any) *client {
	t.Helper()
	c := &client{t: t, auth: auth}
	t.Cleanup(c.drop)
	if err := c.connect(url); err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	return c
}

// connect opens a connection to url, asking for recovery when the client
// had a session; it returns the connect error the server answered with.
func (c *client) connect(url string) error {
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(url, "http://", "ws://", 1)+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		return err
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || len(msg) == 0 || msg[0] != '0' {
		_ = ws.Close()
		return fmt.Errorf("engine.io open: %q %v", msg, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	auth := map[string]any{}
	for k, v := range c.auth {
		auth[k] = v
	}
	c.mu.Lock()
	oldPid := c.pid
	if c.pid != "" {
		auth["pid"] = c.pid
		if c.offset != "" {
			auth["offset"] = c.offset
		}
	}
	c.conn = ws
	done := make(chan struct{})
	c.readDone = done
	c.mu.Unlock()
	body, _ := json.Marshal(auth)
	if err := ws.WriteMessage(websocket.TextMessage, append([]byte("40/agents,"), body...)); err != nil {
		return err
	}
	result := make(chan error, 1)
	c.mu.Lock()
	c.attempts++
	c.sentOffsets = append(c.sentOffsets, fmt.Sprint(auth["offset"]))
	attempt := c.attempts
	c.mu.Unlock()
	go func() {
		defer close(done)
		c.read(ws, oldPid, attempt, result)
	}()
	select {
	case err := <-result:
		return err
	case <-time.After(5 * time.Second):
		_ = ws.Close()
		return errors.New("no answer to CONNECT")
	}
}

func (c *client) read(ws *websocket.Conn, oldPid string, attempt int, result chan<- error) {
	connected := false
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !connected {
				result <- err
			}
			return
		}
		s := string(msg)
		switch {
		case s == "2":
			c.mu.Lock()
			_ = ws.WriteMessage(websocket.TextMessage, []byte("3"))
			c.mu.Unlock()
		case strings.HasPrefix(s, "40/agents,"):
			var hs struct{ Sid, Pid string }
			_ = json.Unmarshal([]byte(s[len("40/agents,"):]), &hs)
			c.mu.Lock()
			c.recovered = hs.Pid != "" && hs.Pid == oldPid
			c.pid = hs.Pid
			c.connects++
			c.mu.Unlock()
			connected = true
			result <- nil
		case strings.HasPrefix(s, "44/agents,"):
			c.mu.Lock()
			c.errs = append(c.errs, s[len("44/agents,"):])
			c.mu.Unlock()
			_ = ws.Close()
			result <- fmt.Errorf("connect error: %s", s[len("44/agents,"):])
			return
		case strings.HasPrefix(s, "42/agents,"):
			var args []any
			if err := json.Unmarshal([]byte(s[len("42/agents,"):]), &args); err != nil || len(args) == 0 {
				continue
			}
			r := received{conn: attempt}
			r.event, _ = args[0].(string)
			if len(args) > 1 {
				r.payload, _ = args[1].(map[string]any)
			}
			if len(args) > 2 {
				r.offset, _ = args[len(args)-1].(string)
			}
			c.mu.Lock()
			if !connected {
				c.preConnect++
			}
			c.events = append(c.events, r)
			if r.offset != "" {
				c.offset = r.offset
			}
			c.mu.Unlock()
		}
	}
}

// drop cuts the connection without a goodbye, as a network failure would,
// and returns once the packets read before the cut are handled.
func (c *client) drop() {
	c.mu.Lock()
	ws, done := c.conn, c.readDone
	c.conn = nil
	c.mu.Unlock()
	if ws != nil {
		_ = ws.UnderlyingConn().Close()
		<-done
	}
}

// reconnect waits until the server the client was on has saved its
// session (as a browser's reconnection delay would), then connects to url.
func (c *client) reconnect(f *fleet, url string) error {
	c.mu.Lock()
	pid := c.pid
	c.mu.Unlock()
	deadline := time.Now().Add(3 * time.Second)
	for f.rdb.Exists(context.Background(), f.prefix+"realtime:session:"+pid).Val() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return c.connect(url)
}

func (c *client) isRecovered() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recovered
}

func (c *client) seqs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, e := range c.events {
		if e.event == "ev" {
			if v, ok := e.payload["seq"].(float64); ok {
				out = append(out, int(v))
			}
		}
	}
	return out
}

func (c *client) received() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.events...)
}

func eventually(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
