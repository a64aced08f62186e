package amqpsource

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/turumba/realtime"

	"github.com/turumba/realtime/internal/testenv"
)

func brokerURL() string {
	if u := os.Getenv("RABBITMQ_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// testBroker is the test's own connection to the real broker, used to
// publish, inspect and clean up.
type testBroker struct {
	tb   testing.TB
	url  string
	conn *amqp.Connection
}

// newBroker connects to RABBITMQ_URL, or skips the test when the broker is
// not running (testenv.Missing).
func newBroker(tb testing.TB) *testBroker {
	tb.Helper()
	url := brokerURL()
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		where := "RABBITMQ_URL"
		if uri, perr := amqp.ParseURI(url); perr == nil {
			where = fmt.Sprintf("%s:%d", uri.Host, uri.Port) // not the password
		}
		testenv.Missing(tb, "RabbitMQ is not reachable at %s (%v): start it with `rabbitmq-server -detached` or point RABBITMQ_URL at one", where, err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return &testBroker{tb: tb, url: url, conn: conn}
}

func (b *testBroker) channel() *amqp.Channel {
	b.tb.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		b.tb.Fatalf("open channel: %v", err)
	}
	b.tb.Cleanup(func() { _ = ch.Close() })
	return ch
}

// topology is one test's exchange and queue names.
type topology struct {
	exchange, queue, deadLetterQueue, deadLetterExchange string
}

func (n topology) options() []Option {
	return []Option{WithExchange(n.exchange), WithQueue(n.queue)}
}

// names returns names no other test uses and deletes what they name when
// the test ends.
func (b *testBroker) names() topology {
	b.tb.Helper()
	var r [4]byte
	_, _ = rand.Read(r[:])
	base := "rt-test." + strings.NewReplacer("/", ".", " ", "_").Replace(b.tb.Name()) + "." + hex.EncodeToString(r[:])
	n := topology{exchange: base + ".x", queue: base, deadLetterQueue: base + ".dead", deadLetterExchange: base + ".dlx"}
	b.tb.Cleanup(func() {
		ch, err := b.conn.Channel()
		if err != nil {
			b.tb.Logf("cleanup: %v", err)
			return
		}
		defer func() { _ = ch.Close() }()
		// Deleting what does not exist is not an error.
		for _, q := range []string{n.queue, n.deadLetterQueue} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				b.tb.Logf("cleanup: delete queue %s: %v", q, err)
			}
		}
		for _, x := range []string{n.exchange, n.deadLetterExchange} {
			if err := ch.ExchangeDelete(x, false, false); err != nil {
				b.tb.Logf("cleanup: delete exchange %s: %v", x, err)
			}
		}
	})
	return n
}

// publisher publishes with publisher confirms on its own channel; one
// goroutine at a time.
type publisher struct {
	ch       *amqp.Channel
	exchange string
}

func (b *testBroker) publisher(exchange string) *publisher {
	b.tb.Helper()
	ch := b.channel()
	if err := ch.Confirm(false); err != nil {
		b.tb.Fatalf("confirm mode: %v", err)
	}
	return &publisher{ch: ch, exchange: exchange}
}

type message struct {
	key  string
	body []byte
}

// publish sends msgs in order and waits until the broker confirmed them all.
func (p *publisher) publish(ctx context.Context, msgs ...message) error {
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, m := range msgs {
		dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, m.key, false, false, amqp.Publishing{
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			Body:         m.body,
		})
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.key, err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("confirm %d: %w", i, err)
		}
		if !ok {
			return fmt.Errorf("message %d (%s) nacked by the broker", i, msgs[i].key)
		}
	}
	return nil
}

// publishSeq publishes events seq from..to-1 of one conversation in batches.
func (p *publisher) publishSeq(ctx context.Context, from, to, batch int) error {
	for from < to {
		n := min(batch, to-from)
		msgs := make([]message, n)
		for i := range msgs {
			msgs[i] = message{key: "conversation.message.created", body: seqEvent(from + i)}
		}
		if err := p.publish(ctx, msgs...); err != nil {
			return err
		}
		from += n
	}
	return nil
}

func seqEvent(seq int) []byte {
	return fmt.Appendf(nil, `{"account_id":"a1","conversation_id":"c1","message_id":"m%d","seq":%d}`, seq, seq)
}

func seqOf(tb testing.TB, e realtime.Event) int {
	var v struct {
		Seq *int `json:"seq"`
	}
	if err := json.Unmarshal(e.Body, &v); err != nil || v.Seq == nil {
		tb.Errorf("event %s %q has no seq: %v", e.RoutingKey, e.Body, err)
		return -1
	}
	return *v.Seq
}

// consumeRun is one Consume call running in the background.
type consumeRun struct {
	src    *Source
	cancel context.CancelFunc
	done   chan error
}

func startConsume(tb testing.TB, src *Source, patterns []string, handle realtime.EventHandler) *consumeRun {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	return startConsumeCtx(tb, ctx, cancel, src, patterns, handle)
}

func startConsumeCtx(tb testing.TB, ctx context.Context, cancel context.CancelFunc, src *Source, patterns []string, handle realtime.EventHandler) *consumeRun {
	tb.Helper()
	r := &consumeRun{src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Consume(ctx, patterns, handle) }()
	tb.Cleanup(func() { r.stop(tb) })
	return r
}

// startPipelined is startConsume for ConsumePipelined.
func startPipelined(tb testing.TB, src *Source, patterns []string, handle realtime.AsyncEventHandler) *consumeRun {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &consumeRun{src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.ConsumePipelined(ctx, patterns, handle) }()
	tb.Cleanup(func() { r.stop(tb) })
	return r
}

// stop cancels the run and checks that Consume returned nil promptly.
func (r *consumeRun) stop(tb testing.TB) {
	tb.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			tb.Errorf("Consume returned %v, want nil", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(15 * time.Second):
		tb.Fatal("Consume did not return within 15s of its context ending")
	}
}

// ready returns the number of messages ready in queue.
func (b *testBroker) ready(queue string) int {
	b.tb.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		b.tb.Fatalf("open channel: %v", err)
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		b.tb.Fatalf("queue %s: %v", queue, err)
	}
	return q.Messages
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitConnected(tb testing.TB, src *Source) {
	tb.Helper()
	waitFor(tb, 10*time.Second, "the source to connect", func() bool { return src.Check(context.Background()) == nil })
}

// logBuffer collects a Source's log lines; they are printed if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(tb testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("source log:\n%s", lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// newSource builds a Source with fast backoff for tests.
func newSource(tb testing.TB, url string, n topology, opts ...Option) (*Source, *logBuffer) {
	tb.Helper()
	log, lb := testLogger(tb)
	all := append(n.options(), WithLogger(log), WithReconnectBackoff(10*time.Millisecond, 200*time.Millisecond))
	src, err := New(url, append(all, opts...)...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return src, lb
}

// checkGoroutines fails the test if more goroutines run than before, with
// a little tolerance for the runtime's own, once they had time to end.
func checkGoroutines(tb testing.TB, before int) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before+1 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			tb.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxy is a TCP proxy to the broker that can refuse to forward and can cut
// every connection it carries.
type proxy struct {
	ln      net.Listener
	target  string
	forward atomic.Bool
	cuts    atomic.Int64
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

func newProxy(tb testing.TB, brokerURL string, forward bool) *proxy {
	tb.Helper()
	uri, err := amqp.ParseURI(brokerURL)
	if err != nil {
		tb.Fatalf("broker url: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	p := &proxy{ln: ln, target: net.JoinHostPort(uri.Host, fmt.Sprint(uri.Port)), conns: map[net.Conn]struct{}{}}
	p.forward.Store(forward)
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// url is brokerURL with the proxy's address.
func (p *proxy) url(tb testing.TB, brokerURL string) string {
	uri, err := amqp.ParseURI(brokerURL)
	if err != nil {
		tb.Fatalf("broker url: %v", err)
	}
	addr := p.ln.Addr().(*net.TCPAddr)
	uri.Host, uri.Port = addr.IP.String(), addr.Port
	return uri.String()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.forward.Load() {
			_ = c.Close() // as good as a broker that is down
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *proxy) serve(c net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_, _ = c.Close(), up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_, _ = dst.Close(), src.Close()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut closes every connection through the proxy and returns how many
// client connections it closed.
func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	n := len(p.conns) / 2
	clear(p.conns)
	if n > 0 {
		p.cuts.Add(1)
	}
	return n
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cut()
	p.wg.Wait()
}

// errAdapter stands for a transient handler failure.
var errAdapter = errors.New("adapter unavailable")
