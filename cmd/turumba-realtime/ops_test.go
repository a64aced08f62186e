package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turumba/realtime/internal/testredis"
)

// opsEnv is the production-mode configuration of one test: the real
// RabbitMQ (or rabbit, a URL through a proxy) and Redis, a test issuer, the
// test's own exchange and queue, and its own Redis key prefix (named after
// the queue), whose keys are deleted once the test's servers are stopped.
func opsEnv(t *testing.T, is *issuer, rabbit, exchange, queue string) map[string]string {
	rdb := needRedis(t)
	prefix := queue + ":"
	t.Cleanup(func() { testredis.DeletePrefix(t, rdb, prefix) }) // after the servers stop (cleanups run last first)
	env := is.env()
	env["RABBITMQ_URL"] = rabbit
	env["RABBITMQ_EXCHANGE"] = exchange
	env["RABBITMQ_QUEUE"] = queue
	env["REDIS_URL"] = redisURL()
	env["REDIS_KEY_PREFIX"] = prefix
	return env
}

func readyState(s *server) (int, map[string]any) {
	code, body := s.get("/ready")
	var v map[string]any
	_ = json.Unmarshal([]byte(body), &v)
	return code, v
}

func waitReady(t *testing.T, s *server, d time.Duration) {
	t.Helper()
	waitFor(t, d, s.name+" /ready 200", func() bool { code, _ := readyState(s); return code == http.StatusOK })
}

// TestReadyFollowsRabbitMQ cuts the broker off through a proxy: /ready turns
// 503 naming the event source, and 200 again once the broker is back.
func TestReadyFollowsRabbitMQ(t *testing.T) {
	t.Parallel()
	b := needRabbit(t)
	needRedis(t)
	exchange, queue := b.topology()
	px := newProxy(t, amqpAddr(t, rabbitURL()))
	is := newIssuer(t)
	srv := startServer(t, "realtime", opsEnv(t, is, viaProxy(t, rabbitURL(), px.addr), exchange, queue))
	waitReady(t, srv, 20*time.Second)

	px.cut()
	var down map[string]any
	waitFor(t, 10*time.Second, "/ready 503 after the broker went away", func() bool {
		code, v := readyState(srv)
		if code != http.StatusServiceUnavailable {
			return false
		}
		down, _ = v["down"].(map[string]any)
		return true
	})
	if _, ok := down["event_source"]; !ok {
		t.Errorf("/ready does not name the event source: %v", down)
	}
	if _, ok := down["presence"]; ok {
		t.Errorf("/ready says Redis is down too: %v", down)
	}
	if code, _ := srv.get("/health"); code != http.StatusOK {
		t.Errorf("/health is %d while the broker is away; liveness must not depend on it", code)
	}

	px.restore()
	waitReady(t, srv, 45*time.Second)
	_, body := srv.get("/metrics")
	if v := parseMetrics(body)["realtime_amqp_reconnects_total"]; v < 1 {
		t.Errorf("realtime_amqp_reconnects_total = %v after a reconnect", v)
	}
}

// TestMetricsCountEvents publishes through RabbitMQ to a connected client and
// reads the counters, the refused handshake, the rejected client event and
// the dead-lettered event off /metrics.
func TestMetricsCountEvents(t *testing.T) {
	t.Parallel()
	b := needRabbit(t)
	exchange, queue := b.topology()
	is := newIssuer(t)
	run := randomID()
	user, account := "u-metrics-"+run, "acct-metrics-"+run

	srv := startServer(t, "realtime", opsEnv(t, is, rabbitURL(), exchange, queue))
	waitReady(t, srv, 20*time.Second)
	pub := b.publisher(exchange)

	got := make(chan json.RawMessage, 10)
	token := is.token(t, user, account)
	c, err := dialSocket(srv.url, token, func(name string, data json.RawMessage) {
		if name == "conversation:new" {
			got <- data
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if err := c.subscribe(account); err != nil {
		t.Fatal(err)
	}
	if _, err := dialSocket(srv.url, "not-a-token", nil); err == nil {
		t.Fatal("a bad token connected")
	}
	if reply, err := c.call("account:subscribe", map[string]string{"account_id": "someone-else"}); err != nil || reply["error"] != "forbidden" {
		t.Fatalf("subscribe to a foreign account: %v %v", reply, err)
	}

	event, _ := json.Marshal(map[string]any{"account_id": account, "conversation_id": "c-1", "status": "open",
		"created_at": time.Now().UTC().Format(time.RFC3339Nano)})
	if err := pub.publish("conversation.created", event); err != nil {
		t.Fatal(err)
	}
	select {
	case data := <-got:
		if !strings.Contains(string(data), `"c-1"`) {
			t.Errorf("delivered %s", data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event did not reach the client")
	}
	if err := pub.publish("conversation.created", []byte("not json")); err != nil {
		t.Fatal(err)
	}

	want := map[string]float64{
		`realtime_events_emitted_total{event="conversation:new"}`:                           1,
		`realtime_events_consumed_total{route="conversation.created"}`:                      2,
		`realtime_amqp_consumed_total{route="conversation.created"}`:                        2,
		`realtime_amqp_acked_total{route="conversation.created"}`:                           1,
		`realtime_amqp_dead_lettered_total{route="conversation.created"}`:                   1,
		`realtime_connected_sockets`:                                                        1,
		`realtime_connections_total`:                                                        1,
		`realtime_auth_failures_total{code="invalid_token"}`:                                1,
		`realtime_client_events_rejected_total{code="forbidden",event="account:subscribe"}`: 1,
		`realtime_emit_latency_seconds_count{event="conversation:new"}`:                     1,
		`realtime_presence_changes_total{status="online"}`:                                  1,
	}
	var series map[string]float64
	var body string
	waitFor(t, 10*time.Second, "the counters", func() bool {
		_, body = srv.get("/metrics")
		series = parseMetrics(body)
		for k, v := range want {
			if series[k] != v {
				return false
			}
		}
		return true
	})
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	names := metricNames(body)
	for _, prefix := range []string{"go_", "process_", "realtime_"} {
		if !hasPrefix(names, prefix) {
			t.Errorf("/metrics has no %s* metrics", prefix)
		}
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") && !strings.HasPrefix(n, "promhttp_") && !strings.HasPrefix(n, "realtime_") {
			t.Errorf("metric %s is not prefixed realtime_", n)
		}
		if strings.HasPrefix(n, "realtime_") && !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/operations.md does not document %s", n)
		}
	}

	logs := srv.logs.String()
	if strings.Count(logs, "invalid event dead-lettered") != 1 {
		t.Errorf("want one log line for the dead-lettered event:\n%s", logs)
	}
	if !strings.Contains(logs, `"msg":"connection opened"`) {
		t.Errorf("no JSON log line for the connection:\n%s", logs)
	}
	if strings.Contains(logs, token) || strings.Contains(logs, "not-a-token") {
		t.Error("a token is in the logs")
	}
}

func hasPrefix(names []string, prefix string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// TestGracefulShutdown stops an instance with SIGTERM while 100 clients are
// connected and events are in flight. It must exit 0 within
// SHUTDOWN_TIMEOUT, every client must see the disconnect, the presence of
// its users must be gone from Redis, and no event may be lost: those it had
// not acknowledged are consumed by a second instance on the same queue, so
// every published event reaches a client of one instance or the other.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const (
		clients   = 100
		before    = 1500 // published before the signal
		during    = 300  // published while it shuts down
		total     = before + during
		shutdownT = 15 * time.Second
	)
	b := needRabbit(t)
	rdb := needRedis(t)
	exchange, queue := b.topology()
	is := newIssuer(t)
	run := randomID()
	account := "acct-shutdown-" + run
	var usersA, usersB []string
	for i := range clients {
		usersA = append(usersA, fmt.Sprintf("u-shutdown-%s-a%03d", run, i))
	}
	for i := range 3 {
		usersB = append(usersB, fmt.Sprintf("u-shutdown-%s-b%d", run, i))
	}

	env := opsEnv(t, is, rabbitURL(), exchange, queue)
	prefix := env["REDIS_KEY_PREFIX"]
	env["SHUTDOWN_TIMEOUT"] = shutdownT.String()
	env["RABBITMQ_PREFETCH"] = "256"
	a := startServer(t, "instance A", env)
	waitReady(t, a, 20*time.Second) // A registers first: it is the active consumer
	bsrv := startServer(t, "instance B", env)
	waitReady(t, bsrv, 20*time.Second)

	// seen[i] counts the clients that received event i.
	var seen, seenA [total]atomic.Int32
	var receivedA, toldA atomic.Int64
	record := func(onA bool) func(string, json.RawMessage) {
		return func(name string, data json.RawMessage) {
			if name == "server:shutdown" && onA {
				toldA.Add(1)
			}
			if name != "conversation:new" {
				return
			}
			var p struct {
				ConversationID string `json:"conversation_id"`
			}
			var i int
			if json.Unmarshal(data, &p) != nil {
				return
			}
			if _, err := fmt.Sscanf(p.ConversationID, "c-%d", &i); err != nil || i < 0 || i >= total {
				return
			}
			seen[i].Add(1)
			if onA {
				receivedA.Add(1)
				seenA[i].Add(1)
			}
		}
	}
	connect := func(s *server, users []string, onA bool) []*sioClient {
		out := make([]*sioClient, len(users))
		var wg sync.WaitGroup
		errs := make(chan error, len(users))
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialSocket(s.url, is.token(t, u, account), record(onA))
				if err == nil {
					err = c.subscribe(account)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", u, err)
					return
				}
				out[i] = c
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, c := range out {
				c.close()
			}
		})
		return out
	}
	onA := connect(a, usersA, true)
	connect(bsrv, usersB, false)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, u := range usersA {
		if n, err := rdb.HExists(ctx, prefix+"agent:presence", u).Result(); err != nil || !n {
			t.Fatalf("%s is not present in agent:presence before the shutdown (%v)", u, err)
		}
	}

	pub := b.publisher(exchange)
	body := func(i int) []byte {
		v, _ := json.Marshal(map[string]any{"account_id": account, "conversation_id": fmt.Sprintf("c-%d", i), "status": "open",
			"created_at": time.Now().UTC().Format(time.RFC3339Nano)})
		return v
	}
	batch := func(from, to int) [][]byte {
		var out [][]byte
		for i := from; i < to; i++ {
			out = append(out, body(i))
		}
		return out
	}
	if err := pub.publishAll("conversation.created", batch(0, before)); err != nil {
		t.Fatal(err)
	}
	// A is busy fanning out to 100 clients: most events are still queued or
	// prefetched (unacknowledged) when the signal comes.
	waitFor(t, 30*time.Second, "A to deliver some events", func() bool { return receivedA.Load() >= 5*clients })

	start := time.Now()
	a.signal(syscall.SIGTERM)
	if err := pub.publishAll("conversation.created", batch(before, total)); err != nil {
		t.Fatal(err)
	}
	code := a.waitExit(shutdownT + 5*time.Second)
	took := a.exitedAt.Sub(start)
	if code != 0 {
		t.Errorf("instance A exited with %d, want 0", code)
	}
	if took > shutdownT {
		t.Errorf("instance A took %v to shut down, more than SHUTDOWN_TIMEOUT %v", took, shutdownT)
	}
	t.Logf("instance A shut down in %v after delivering %d events to its clients", took.Round(time.Millisecond), receivedA.Load()/clients)
	for i, c := range onA {
		select {
		case <-c.gone:
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d of A saw no disconnect", i)
		}
	}
	// A emits each event to all its clients at once: one that reached only
	// some of them was cut off by the close.
	for i := range total {
		if n := seenA[i].Load(); n > 0 && n < clients {
			t.Errorf("event %d reached only %d of the %d clients of A", i, n, clients)
		}
	}
	if n := toldA.Load(); n != clients {
		t.Errorf("%d of %d clients of A were told server:shutdown before the disconnect", n, clients)
	}
	for _, u := range usersA {
		if ok, err := rdb.HExists(ctx, prefix+"agent:presence", u).Result(); err != nil || ok {
			t.Errorf("%s is still in agent:presence after A shut down (%v)", u, err)
		}
		if n, err := rdb.Exists(ctx, prefix+"agent:heartbeat:"+u).Result(); err != nil || n != 0 {
			t.Errorf("agent:heartbeat:%s still exists after A shut down (%v)", u, err)
		}
	}
	logs := a.logs.String()
	var steps []string
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"msg":"connection `) && strings.Contains(line, `"time"`) {
			steps = append(steps, line)
		}
	}
	t.Logf("instance A's log but for connections:\n%s", strings.Join(steps, "\n"))
	for _, step := range []string{"shutting down", "hub shut down", "amqpsource: stopped consuming", "shut down cleanly"} {
		if !strings.Contains(logs, step) {
			t.Errorf("instance A did not log %q", step)
		}
	}

	missing := func() []int {
		var out []int
		for i := range total {
			if seen[i].Load() == 0 {
				out = append(out, i)
			}
		}
		return out
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if m := missing(); len(m) > 0 {
		t.Fatalf("%d of %d events reached no client, first %v", len(m), total, m[:min(len(m), 10)])
	}

	bsrv.signal(syscall.SIGTERM)
	if code := bsrv.waitExit(shutdownT + 5*time.Second); code != 0 {
		t.Errorf("instance B exited with %d, want 0", code)
	}
}

// TestShutdownWithHungBroker freezes the broker connection: the shutdown
// cannot finish, so the process exits non-zero at SHUTDOWN_TIMEOUT; and a
// second signal ends the wait at once.
func TestShutdownWithHungBroker(t *testing.T) {
	t.Parallel()
	b := needRabbit(t)
	needRedis(t)
	is := newIssuer(t)
	for _, tc := range []struct {
		name         string
		secondSignal bool
	}{{"deadline", false}, {"second signal", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			exchange, queue := b.topology()
			px := newProxy(t, amqpAddr(t, rabbitURL()))
			env := opsEnv(t, is, viaProxy(t, rabbitURL(), px.addr), exchange, queue)
			timeout := 3 * time.Second
			if tc.secondSignal {
				timeout = time.Minute
			}
			env["SHUTDOWN_TIMEOUT"] = timeout.String()
			srv := startServer(t, "realtime", env)
			waitReady(t, srv, 20*time.Second)
			px.freeze()

			start := time.Now()
			srv.signal(syscall.SIGTERM)
			limit := timeout + 3*time.Second
			if tc.secondSignal {
				time.Sleep(500 * time.Millisecond)
				srv.signal(syscall.SIGTERM)
				limit = 3 * time.Second
			}
			code := srv.waitExit(limit)
			took := time.Since(start)
			if code == 0 {
				t.Errorf("exit 0 although the shutdown could not finish")
			}
			// The Hub waits for the hung consumer for half the deadline, then
			// still tells clients and removes presence, and reports the failure.
			if !tc.secondSignal && took < timeout/2 {
				t.Errorf("exited after %v, before half of SHUTDOWN_TIMEOUT %v: the broker was not the hang", took, timeout)
			}
			logs := srv.logs.String()
			want := "event source did not stop"
			if tc.secondSignal {
				want = "second signal"
			}
			if !strings.Contains(logs, want) {
				t.Errorf("no %q in the logs:\n%s", want, tail(logs, 20))
			}
		})
	}
}
