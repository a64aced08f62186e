package main

// Helpers of the tests that run the real binary as a subprocess: the build,
// the process, the services (RabbitMQ, Redis), a JWKS issuer, a TCP proxy
// that can cut the broker off, and a minimal Socket.IO client.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime/internal/testenv"
)

// binDir holds the binary built for this test run; TestMain removes it.
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "turumba-realtime-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// binary builds the service once per test run and returns its path.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binPath = filepath.Join(binDir, "turumba-realtime")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// baseEnv is the environment every run starts from: nothing of the test's
// own environment leaks in but PATH and HOME.
func baseEnv(env map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// runResult is how a short run of the binary ended.
type runResult struct {
	code   int
	output string
}

// runBinary runs the binary to completion (at most 10 s).
func runBinary(t *testing.T, env map[string]string, args ...string) runResult {
	t.Helper()
	bin := binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = baseEnv(env)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return runResult{0, string(out)}
	case errors.As(err, &ee) && ctx.Err() == nil:
		return runResult{ee.ExitCode(), string(out)}
	default:
		t.Fatalf("run %v: %v\n%s", args, err, out)
		return runResult{}
	}
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is the binary running in the background.
type server struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan struct{}
	exit int
	// exitedAt is when the process ended; read it after done is closed.
	exitedAt time.Time
}

// startServer runs the binary on a free loopback port with env and waits
// until /health answers.
func startServer(t *testing.T, name string, env map[string]string, args ...string) *server {
	t.Helper()
	port := freePort(t)
	full := map[string]string{"HOST": "127.0.0.1", "PORT": strconv.Itoa(port), "LOG_LEVEL": "info"}
	for k, v := range env {
		full[k] = v
	}
	s := &server{t: t, name: name, url: "http://127.0.0.1:" + strconv.Itoa(port), logs: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(binary(t), args...)
	s.cmd.Env = baseEnv(full)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = s.cmd.Wait()
		s.exit, s.exitedAt = s.cmd.ProcessState.ExitCode(), time.Now()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, tail(s.logs.String(), 60))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("%s exited with %d before serving:\n%s", name, s.exit, s.logs.String())
		default:
		}
		if code, _ := s.get("/health"); code == http.StatusOK {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not serve /health within 20s:\n%s", name, s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// get fetches path; code 0 means no answer.
func (s *server) get(path string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(s.url + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %s: %v", s.name, err)
	}
}

// waitExit waits at most d for the process to end and returns its exit code.
func (s *server) waitExit(d time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
		return s.exit
	case <-time.After(d):
		s.t.Fatalf("%s still running %v later:\n%s", s.name, d, tail(s.logs.String(), 40))
		return -1
	}
}

// waitFor polls cond every 50 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func rabbitURL() string {
	if u := os.Getenv("RABBITMQ_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func redisURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379"
}

// broker is the test's own connection to the real RabbitMQ.
type broker struct {
	t    *testing.T
	conn *amqp.Connection
}

func needRabbit(t *testing.T) *broker {
	t.Helper()
	var conn *amqp.Connection
	err := retryUnlessRefused(func() (err error) {
		conn, err = amqp.DialConfig(rabbitURL(), amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
		return err
	})
	if err != nil {
		testenv.Missing(t, "RabbitMQ is not reachable at %s (%v): start it with `rabbitmq-server -detached` or set RABBITMQ_URL", redactURL(rabbitURL()), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &broker{t: t, conn: conn}
}

// topology returns an exchange and a queue no other test uses, deleted (with
// the dead-letter queue and exchange the binary declares) when the test ends.
func (b *broker) topology() (exchange, queue string) {
	name := "rt-ops." + strings.ReplaceAll(b.t.Name(), "/", ".") + "." + randomID()
	exchange, queue = name+".x", name
	b.t.Cleanup(func() {
		ch, err := b.conn.Channel()
		if err != nil {
			b.t.Logf("cleanup: %v", err)
			return
		}
		defer ch.Close()
		for _, q := range []string{queue, queue + ".dead"} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				b.t.Logf("cleanup: delete queue %s: %v", q, err)
			}
		}
		for _, x := range []string{exchange, queue + ".dlx"} {
			if err := ch.ExchangeDelete(x, false, false); err != nil {
				b.t.Logf("cleanup: delete exchange %s: %v", x, err)
			}
		}
	})
	return exchange, queue
}

// publisher publishes with confirms, so a published event is in the broker.
type publisher struct {
	t        *testing.T
	ch       *amqp.Channel
	exchange string
	returns  chan amqp.Return
}

func (b *broker) publisher(exchange string) *publisher {
	b.t.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		b.t.Fatalf("channel: %v", err)
	}
	b.t.Cleanup(func() { _ = ch.Close() })
	if err := ch.Confirm(false); err != nil {
		b.t.Fatalf("confirm mode: %v", err)
	}
	// Declared as the binary declares it, so publishing never fails for a
	// missing exchange; events published before the queue is bound come
	// back as returns (mandatory) and fail publish.
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		b.t.Fatalf("declare exchange: %v", err)
	}
	return &publisher{t: b.t, ch: ch, exchange: exchange, returns: ch.NotifyReturn(make(chan amqp.Return, 16))}
}

// publish sends one event and waits for the broker's confirm.
func (p *publisher) publish(key string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conf, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, key, true, false,
		amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body})
	if err != nil {
		return fmt.Errorf("publish %s: %w", key, err)
	}
	ok, err := conf.WaitContext(ctx)
	if err != nil || !ok {
		return fmt.Errorf("publish %s: not confirmed (%v)", key, err)
	}
	select {
	case r := <-p.returns:
		return fmt.Errorf("publish %s: returned by the broker: %s", r.RoutingKey, r.ReplyText)
	default:
		return nil
	}
}

// publishAll sends the events without waiting for each confirm, then waits
// for them all: a burst that fills the queue faster than it drains.
func (p *publisher) publishAll(key string, bodies [][]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	confs := make([]*amqp.DeferredConfirmation, 0, len(bodies))
	for _, body := range bodies {
		conf, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, key, true, false,
			amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			return fmt.Errorf("publish %s: %w", key, err)
		}
		confs = append(confs, conf)
	}
	for i, conf := range confs {
		if ok, err := conf.WaitContext(ctx); err != nil || !ok {
			return fmt.Errorf("publish %s #%d: not confirmed (%v)", key, i, err)
		}
	}
	select {
	case r := <-p.returns:
		return fmt.Errorf("publish %s: returned by the broker: %s", r.RoutingKey, r.ReplyText)
	default:
		return nil
	}
}

// retryUnlessRefused calls probe until it succeeds, for at most 10 s: a
// busy machine can time a probe out, but a refused connection means the
// service is not running.
func retryUnlessRefused(probe func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := probe()
		if err == nil || errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func needRedis(t *testing.T) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(redisURL())
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	opt.DialTimeout, opt.MaxRetries = time.Second, -1
	rdb := redis.NewClient(opt)
	err = retryUnlessRefused(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err()
	})
	if err != nil {
		_ = rdb.Close()
		testenv.Missing(t, "Redis is not reachable at %s (%v): start it with `redis-server --daemonize yes` or set REDIS_URL", redactURL(redisURL()), err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// issuer is a stand-in for a Cognito user pool: a JWKS server and the key
// that signs its RS256 tokens.
type issuer struct {
	key *rsa.PrivateKey
	kid string
	srv *httptest.Server
	iss string
}

var (
	keyOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	is := &issuer{key: rsaKey, kid: "test-" + randomID()}
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": is.kid,
		"n": base64.RawURLEncoding.EncodeToString(is.key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(is.key.E)).Bytes()),
	}}})
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(is.srv.Close)
	is.iss = is.srv.URL + "/us-east-1_test"
	return is
}

// env is the configuration that makes the binary trust this issuer.
func (is *issuer) env() map[string]string {
	return map[string]string{"JWKS_URI": is.srv.URL + "/jwks.json", "COGNITO_ISSUER": is.iss}
}

// token mints an id token for sub listing accounts, valid for an hour.
func (is *issuer) token(t testing.TB, sub string, accounts ...string) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": is.iss, "sub": sub, "token_use": "id", "aud": "test-client",
		"custom:account_ids": strings.Join(accounts, ","),
		"iat":                now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = is.kid
	s, err := tok.SignedString(is.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// proxy forwards TCP connections to an upstream address; cut closes them
// and stops listening, restore listens again on the same port, freeze
// stops forwarding bytes while keeping the connections open.
type proxy struct {
	t        *testing.T
	upstream string
	addr     string

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	frozen bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	p := &proxy{t: t, upstream: upstream, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(up, c)
			go p.pipe(c, up)
		}
	}()
}

// pipe copies src to dst until either closes; while frozen it holds the bytes.
func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for n > 0 && p.isFrozen() {
			if p.isClosed(src) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

func (p *proxy) isClosed(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.conns[c]
}

func (p *proxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// cut stops listening and closes every forwarded connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// restore listens on the proxy's address again.
func (p *proxy) restore() {
	p.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// sioClient is a minimal Socket.IO client (Engine.IO v4 over a websocket)
// connected to the /agents namespace: enough to connect many sockets, call
// events with acknowledgements and see events and disconnects.
type sioClient struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	onEvent func(name string, data json.RawMessage)

	amu  sync.Mutex
	next int
	acks map[int]chan json.RawMessage

	goneOnce sync.Once
	gone     chan struct{} // closed on the namespace's disconnect or the transport's close
}

const nsPrefix = "/agents,"

// dialSocket connects to the server at base (http://host:port) with token.
// onEvent, if not nil, is called from the read loop for every event.
func dialSocket(base, token string, onEvent func(string, json.RawMessage)) (*sioClient, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + "/socket.io/?EIO=4&transport=websocket"
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(u, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	c := &sioClient{ws: ws, onEvent: onEvent, acks: map[int]chan json.RawMessage{}, gone: make(chan struct{})}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || !bytes.HasPrefix(msg, []byte("0")) {
		_ = ws.Close()
		return nil, fmt.Errorf("engine.io open: %q %v", msg, err)
	}
	auth, _ := json.Marshal(map[string]string{"token": token})
	if err := c.write("40" + nsPrefix + string(auth)); err != nil {
		_ = ws.Close()
		return nil, err
	}
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("namespace connect: %w", err)
		}
		s := string(msg)
		switch {
		case s == "2":
			_ = c.write("3")
			continue
		case strings.HasPrefix(s, "40"+nsPrefix):
		case strings.HasPrefix(s, "44"+nsPrefix):
			_ = ws.Close()
			return nil, fmt.Errorf("connect_error: %s", strings.TrimPrefix(s, "44"+nsPrefix))
		default:
			_ = ws.Close()
			return nil, fmt.Errorf("unexpected packet %q", s)
		}
		break
	}
	_ = ws.SetReadDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

func (c *sioClient) write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, []byte(s))
}

func (c *sioClient) markGone() { c.goneOnce.Do(func() { close(c.gone) }) }

func (c *sioClient) readLoop() {
	defer c.markGone()
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		s := string(msg)
		switch {
		case s == "2":
			_ = c.write("3")
		case strings.HasPrefix(s, "41"+nsPrefix), s == "1":
			c.markGone()
		case strings.HasPrefix(s, "42"+nsPrefix):
			_, body := splitAckID(strings.TrimPrefix(s, "42"+nsPrefix))
			var arr []json.RawMessage
			var name string
			if json.Unmarshal([]byte(body), &arr) != nil || len(arr) == 0 || json.Unmarshal(arr[0], &name) != nil {
				continue
			}
			var data json.RawMessage
			if len(arr) > 1 {
				data = arr[1]
			}
			if c.onEvent != nil {
				c.onEvent(name, data)
			}
		case strings.HasPrefix(s, "43"+nsPrefix):
			id, body := splitAckID(strings.TrimPrefix(s, "43"+nsPrefix))
			var arr []json.RawMessage
			_ = json.Unmarshal([]byte(body), &arr)
			c.amu.Lock()
			ch := c.acks[id]
			delete(c.acks, id)
			c.amu.Unlock()
			if ch != nil && len(arr) > 0 {
				ch <- arr[0]
			}
		}
	}
}

func splitAckID(s string) (int, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	id, _ := strconv.Atoi(s[:i])
	return id, s[i:]
}

// call emits event with payload and returns the acknowledgement.
func (c *sioClient) call(event string, payload any) (map[string]any, error) {
	body, err := json.Marshal([]any{event, payload})
	if err != nil {
		return nil, err
	}
	ch := make(chan json.RawMessage, 1)
	c.amu.Lock()
	c.next++
	id := c.next
	c.acks[id] = ch
	c.amu.Unlock()
	if err := c.write("42" + nsPrefix + strconv.Itoa(id) + string(body)); err != nil {
		return nil, err
	}
	select {
	case raw := <-ch:
		var reply map[string]any
		err := json.Unmarshal(raw, &reply)
		return reply, err
	case <-c.gone:
		return nil, errors.New("disconnected before the acknowledgement")
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("no acknowledgement of %s", event)
	}
}

// subscribe joins account's room and fails on a refusal.
func (c *sioClient) subscribe(account string) error {
	reply, err := c.call("account:subscribe", map[string]string{"account_id": account})
	if err != nil {
		return err
	}
	if reply["ok"] != true {
		return fmt.Errorf("account:subscribe %s: %v", account, reply)
	}
	return nil
}

func (c *sioClient) close() { _ = c.ws.Close() }

// metrics parses a Prometheus text exposition into series -> value, the
// series written as name{label="value",...} with labels in exposition order.
func parseMetrics(body string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// metricNames returns the metric families named in the exposition's TYPE lines.
func metricNames(body string) []string {
	var names []string
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	return names
}

// amqpAddr is host:port of a broker URL.
func amqpAddr(t *testing.T, raw string) string {
	t.Helper()
	u, err := amqp.ParseURI(raw)
	if err != nil {
		t.Fatalf("RABBITMQ_URL: %v", err)
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// viaProxy is raw with its host and port replaced by addr.
func viaProxy(t *testing.T, raw, addr string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}
