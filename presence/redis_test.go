package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/internal/testredis"
	"github.com/turumba/realtime/presence/presencetest"
)

// redisEnv is one Redis under test: miniredis, or a key prefix on the real one.
type redisEnv struct {
	name   string
	ttl    time.Duration
	mr     *miniredis.Miniredis // nil on the real Redis
	url    string               // set on the real Redis
	prefix string
	// advance moves Redis's clock (TIME and key TTLs) forward.
	advance func(time.Duration)
	// lose forgets every key of the test, as a restart without persistence.
	lose func()
}

// client returns a new client of the env, closed at the end of the test.
func (e *redisEnv) client(t testing.TB) *redis.Client {
	t.Helper()
	var opt *redis.Options
	if e.mr != nil {
		// gopher-lua under -race is slow: a timeout would make the client
		// retry a script, which the round-trip counts would see.
		opt = &redis.Options{Addr: e.mr.Addr(), ReadTimeout: time.Minute}
	} else {
		var err error
		if opt, err = redis.ParseURL(e.url); err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// store returns a store of its own client, as another instance has.
func (e *redisEnv) store(t testing.TB, opts ...Option) *RedisStore {
	t.Helper()
	s, err := NewRedisStore(e.client(t), append([]Option{WithTTL(e.ttl), WithKeyPrefix(e.prefix)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *redisEnv) backend(t *testing.T) presencetest.Backend {
	return presencetest.Backend{
		TTL:      e.ttl,
		Instance: func() realtime.PresenceStore { return e.store(t) },
		Advance:  e.advance,
		Lose:     e.lose,
	}
}

// newMiniEnv starts a miniredis whose clock the test drives: SetTime moves
// what TIME answers (the scripts' clock), FastForward the key TTLs.
func newMiniEnv(t testing.TB) *redisEnv {
	mr := miniredis.RunT(t)
	now := time.Now()
	mr.SetTime(now)
	return &redisEnv{
		name:   "miniredis",
		ttl:    60 * time.Second,
		mr:     mr,
		prefix: "p:",
		advance: func(d time.Duration) {
			now = now.Add(d)
			mr.SetTime(now)
			mr.FastForward(d)
		},
		lose: mr.FlushAll,
	}
}

// newRealEnv returns the real Redis (testredis) under a key prefix of its
// own, whose keys are deleted after the test.
func newRealEnv(t testing.TB) *redisEnv {
	t.Helper()
	admin, prefix := testredis.Client(t, "realtime-test")
	return &redisEnv{
		name:    "redis",
		ttl:     800 * time.Millisecond, // real time passes: keep the waits short
		url:     testredis.URL(),
		prefix:  prefix,
		advance: time.Sleep,
		lose:    func() { testredis.DeletePrefix(t, admin, prefix) },
	}
}

var envs = []struct {
	name string
	new  func(testing.TB) *redisEnv
}{
	{"Miniredis", newMiniEnv},
	{"Redis", newRealEnv},
}

func TestRedisStoreConformance(t *testing.T) {
	for _, env := range envs {
		t.Run(env.name, func(t *testing.T) {
			presencetest.Run(t, presencetest.Harness{
				Setup: func(t *testing.T) presencetest.Backend { return env.new(t).backend(t) },
			})
		})
	}
}

// cardEntry is the card's agent:presence value.
type cardEntry struct {
	Status   string `json:"status"`
	LastSeen string `json:"last_seen"`
}

func TestRedisStoreCardKeys(t *testing.T) {
	for _, env := range envs {
		t.Run(env.name, func(t *testing.T) {
			e := env.new(t)
			s, rdb := e.store(t), e.client(t)
			ctx := context.Background()
			hash, hb := e.prefix+"agent:presence", e.prefix+"agent:heartbeat:u1"
			c := presencetest.Conn("u1", "c1", "a1")

			// expect checks the card's keys for u1: status "" means absent.
			expect := func(step, status string, p realtime.Presence) {
				t.Helper()
				raw, err := rdb.HGet(ctx, hash, "u1").Result()
				if status == "" {
					if !errors.Is(err, redis.Nil) {
						t.Fatalf("%s: HGET %s u1 = %q, %v; want absent", step, hash, raw, err)
					}
					if n := rdb.Exists(ctx, hb).Val(); n != 0 {
						t.Fatalf("%s: %s exists; want deleted", step, hb)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: HGET %s u1: %v", step, hash, err)
				}
				var fields map[string]any
				var entry cardEntry
				if err := json.Unmarshal([]byte(raw), &fields); err != nil || len(fields) != 2 {
					t.Fatalf("%s: agent:presence u1 = %s; want exactly status and last_seen", step, raw)
				}
				_ = json.Unmarshal([]byte(raw), &entry)
				seen, err := time.Parse(time.RFC3339, entry.LastSeen)
				if entry.Status != status || err != nil {
					t.Fatalf("%s: agent:presence u1 = %s (%v); want status %s and RFC 3339 last_seen", step, raw, err, status)
				}
				if !seen.Equal(p.LastSeen) {
					t.Fatalf("%s: last_seen %v, Presence.LastSeen %v", step, seen, p.LastSeen)
				}
				if v := rdb.Get(ctx, hb).Val(); v != "1" {
					t.Fatalf("%s: GET %s = %q, want 1", step, hb, v)
				}
				if ttl := rdb.PTTL(ctx, hb).Val(); ttl <= 0 || ttl > e.ttl {
					t.Fatalf("%s: PTTL %s = %v, want (0, %v]", step, hb, ttl, e.ttl)
				}
			}

			steps := []struct {
				name   string
				do     func() (realtime.Presence, bool, error)
				status string
			}{
				{"connect", func() (realtime.Presence, bool, error) { return s.Connect(ctx, c) }, "online"},
				{"away", func() (realtime.Presence, bool, error) { return s.SetStatus(ctx, c, realtime.StatusAway) }, "away"},
				{"invisible", func() (realtime.Presence, bool, error) { return s.SetStatus(ctx, c, realtime.StatusOffline) }, ""},
				{"online", func() (realtime.Presence, bool, error) { return s.SetStatus(ctx, c, realtime.StatusOnline) }, "online"},
				{"disconnect", func() (realtime.Presence, bool, error) { return s.Disconnect(ctx, c) }, ""},
				{"reconnect", func() (realtime.Presence, bool, error) { return s.Connect(ctx, c) }, "online"},
			}
			for _, st := range steps {
				p, _, err := st.do()
				if err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				expect(st.name, st.status, p)
			}

			// The heartbeat key lives one TTL from the last heartbeat.
			e.advance(e.ttl / 2)
			if _, err := s.Heartbeat(ctx, []realtime.PresenceConn{c}); err != nil {
				t.Fatal(err)
			}
			if ttl := rdb.PTTL(ctx, hb).Val(); ttl <= e.ttl*3/4 {
				t.Fatalf("PTTL %s after heartbeat = %v, want about %v", hb, ttl, e.ttl)
			}
			e.advance(e.ttl + e.ttl/4)
			if n := rdb.Exists(ctx, hb).Val(); n != 0 {
				t.Fatalf("%s outlived its TTL", hb)
			}
			if _, err := s.Expire(ctx); err != nil {
				t.Fatal(err)
			}
			expect("expired", "", realtime.Presence{})

			if e.mr != nil {
				for _, k := range e.mr.Keys() {
					if !strings.HasPrefix(k, e.prefix) {
						t.Errorf("key %q lacks the prefix %q", k, e.prefix)
					}
				}
			}
		})
	}
}

// TestRedisLastSeenFormat checks the scripts' date arithmetic against Go's.
func TestRedisLastSeenFormat(t *testing.T) {
	e := newMiniEnv(t)
	rdb := e.client(t)
	script := redis.NewScript(luaPrelude + `return iso(tonumber(ARGV[3]))`)
	for _, ms := range []int64{0, 1, 951782400000, 951868799999, 1709164800123, 1735689599999, 4102444800000, 253402300799999} {
		got, err := script.Run(context.Background(), rdb, []string{"x"}, "", 1, ms).Text()
		want := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
		if err != nil || got != want {
			t.Errorf("iso(%d) = %q, %v; want %q", ms, got, err, want)
		}
	}
}

// roundTrips counts the commands and pipelines a client sends, except the
// handshake of each new connection (HELLO, CLIENT ...), which is the pool's.
type roundTrips struct{ n atomic.Int64 }

func handshake(cmd redis.Cmder) bool {
	return cmd.Name() == "hello" || cmd.Name() == "client"
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !handshake(cmds[0]) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// counted returns a store on its own client and the client's round trips.
func (e *redisEnv) counted(t testing.TB) (*RedisStore, *redis.Client, *roundTrips) {
	t.Helper()
	rdb := e.client(t)
	rt := &roundTrips{}
	rdb.AddHook(rt)
	s, err := NewRedisStore(rdb, WithTTL(e.ttl), WithKeyPrefix(e.prefix))
	if err != nil {
		t.Fatal(err)
	}
	return s, rdb, rt
}

func TestRedisStoreRoundTrips(t *testing.T) {
	e := newMiniEnv(t)
	s, rdb, rt := e.counted(t)
	ctx := context.Background()
	many := make([]realtime.PresenceConn, 1500)
	for i := range many {
		many[i] = presencetest.Conn(fmt.Sprintf("u%d", i/2), fmt.Sprintf("c%d", i), "a1", "a2")
	}
	c := presencetest.Conn("u1", "c1", "a1")
	// The first run of each script loads it (EVALSHA, NOSCRIPT, EVAL) and
	// the first command of a connection dials; count the steady state.
	_, _, _ = s.Connect(ctx, c)
	_, _, _ = s.SetStatus(ctx, c, realtime.StatusAway)
	_, _, _ = s.Disconnect(ctx, c)
	_, _ = s.Heartbeat(ctx, many[:1])
	_, _ = s.Expire(ctx)
	_, _ = s.List(ctx, "a1")
	cases := []struct {
		name string
		call func() error
		want int64
	}{
		{"Connect", func() error { _, _, err := s.Connect(ctx, c); return err }, 1},
		{"SetStatus", func() error { _, _, err := s.SetStatus(ctx, c, realtime.StatusAway); return err }, 1},
		{"Disconnect", func() error { _, _, err := s.Disconnect(ctx, c); return err }, 1},
		{"Heartbeat1500Register", func() error { _, err := s.Heartbeat(ctx, many); return err }, 1},
		{"Heartbeat1500Refresh", func() error { _, err := s.Heartbeat(ctx, many); return err }, 1},
		{"Expire", func() error { _, err := s.Expire(ctx); return err }, 1},
		{"List", func() error { _, err := s.List(ctx, "a1"); return err }, 1},
		// After a restart Redis's script cache is empty: EVALSHA, then EVAL.
		{"ConnectNoScript", func() error {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				return err
			}
			rt.n.Add(-1)
			_, _, err := s.Connect(ctx, c)
			return err
		}, 2},
		{"HeartbeatNoScript", func() error {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				return err
			}
			rt.n.Add(-1)
			_, err := s.Heartbeat(ctx, many)
			return err
		}, 2},
	}
	for _, tc := range cases {
		before := rt.n.Load()
		if err := tc.call(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := rt.n.Load() - before; got != tc.want {
			t.Errorf("%s: %d round trips, want %d", tc.name, got, tc.want)
		}
	}
	if ps, err := s.List(ctx, "a2"); err != nil || len(ps) != 750 {
		t.Fatalf("List a2 after heartbeats: %d users, %v; want 750", len(ps), err)
	}
}

// TestRedisStoreBatches runs heartbeats and expiry in many small batches:
// every user is reported once, with all their accounts.
func TestRedisStoreBatches(t *testing.T) {
	e := newMiniEnv(t)
	s, _, rt := e.counted(t)
	s.heartbeatBatch, s.expireBatch = 3, 3
	ctx := context.Background()
	warm := []realtime.PresenceConn{presencetest.Conn("w", "w")}
	_, _ = s.Heartbeat(ctx, warm) // dial and load the scripts
	_, _, _ = s.Disconnect(ctx, warm[0])
	_, _ = s.Expire(ctx)
	var conns []realtime.PresenceConn
	var back, gone []string
	for u := range 10 {
		uid := fmt.Sprintf("u%02d", u)
		conns = append(conns, presencetest.Conn(uid, uid+"a", "a1"), presencetest.Conn(uid, uid+"b", "a2"))
		back = append(back, uid+"=online[a1 a2]")
		gone = append(gone, uid+"=offline[a1 a2]")
	}
	summary := func(ps []realtime.Presence) []string {
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprintf("%s=%s%v", p.UserID, p.Status, p.AccountIDs))
		}
		return out
	}
	steps := []struct {
		name       string
		call       func() ([]realtime.Presence, error)
		want       []string
		roundTrips int64
	}{
		// Batches of 4 (two users each): five scripts in one pipeline.
		{"Heartbeat", func() ([]realtime.Presence, error) { return s.Heartbeat(ctx, conns) }, back, 1},
		// Each run claims 3 connections and purges the rest of those users'
		// lapsed ones (4 in all); the sixth finds none left.
		{"Expire", func() ([]realtime.Presence, error) { e.advance(e.ttl + time.Second); return s.Expire(ctx) }, gone, 6},
	}
	for _, st := range steps {
		before := rt.n.Load()
		ps, err := st.call()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := summary(ps); !slices.Equal(got, st.want) {
			t.Errorf("%s = %q, want %q", st.name, got, st.want)
		}
		if got := rt.n.Load() - before; got != st.roundTrips {
			t.Errorf("%s: %d round trips, want %d", st.name, got, st.roundTrips)
		}
	}
}

// failSecond makes the second command of every pipeline fail, as a batch
// that hit an error in Redis.
type failSecond struct{ roundTrips }

func (h *failSecond) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if len(cmds) > 1 && !handshake(cmds[0]) {
			cmds[1].SetErr(errors.New("injected failure"))
		}
		return err
	}
}

// TestRedisStoreHeartbeatPartialFailure returns the users the healthy
// batches brought back together with the failed batch's error, so that the
// Hub still broadcasts them.
func TestRedisStoreHeartbeatPartialFailure(t *testing.T) {
	e := newMiniEnv(t)
	rdb := e.client(t)
	rdb.AddHook(&failSecond{})
	s, err := NewRedisStore(rdb, WithKeyPrefix(e.prefix))
	if err != nil {
		t.Fatal(err)
	}
	s.heartbeatBatch = 1
	ctx := context.Background()
	if err := heartbeatScript.Load(ctx, rdb).Err(); err != nil { // no NOSCRIPT pipeline
		t.Fatal(err)
	}
	conns := []realtime.PresenceConn{presencetest.Conn("u1", "c1", "a1"), presencetest.Conn("u2", "c2", "a1"), presencetest.Conn("u3", "c3", "a1")}
	ps, err := s.Heartbeat(ctx, conns)
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("error %v, want the injected failure", err)
	}
	if len(ps) != 2 || ps[0].UserID != "u1" || ps[1].UserID != "u3" {
		t.Fatalf("Heartbeat = %+v, want u1 and u3 back", ps)
	}
}

// TestRedisStoreLargeBatch heartbeats more connections in one script than
// one Lua unpack takes, which the script slices.
func TestRedisStoreLargeBatch(t *testing.T) {
	for _, env := range envs {
		t.Run(env.name, func(t *testing.T) {
			e := env.new(t)
			s := e.store(t)
			s.heartbeatBatch = 1 << 20
			ctx := context.Background()
			conns := make([]realtime.PresenceConn, 2100)
			for i := range conns {
				conns[i] = presencetest.Conn(fmt.Sprintf("u%04d", i/2), fmt.Sprint("c", i), "a1")
			}
			for _, want := range []int{1050, 0} {
				ps, err := s.Heartbeat(ctx, conns)
				if err != nil || len(ps) != want {
					t.Fatalf("Heartbeat: %d users back, %v; want %d", len(ps), err, want)
				}
			}
			ps, err := s.List(ctx, "a1")
			if err != nil || len(ps) != 1050 {
				t.Fatalf("List: %d users, %v; want 1050", len(ps), err)
			}
		})
	}
}

func TestHeartbeatBatches(t *testing.T) {
	conns := func(users ...string) []realtime.PresenceConn {
		var out []realtime.PresenceConn
		for i, u := range users {
			out = append(out, presencetest.Conn(u, fmt.Sprint(i)))
		}
		return out
	}
	cases := []struct {
		name  string
		conns []realtime.PresenceConn
		size  int
		want  [][]string // users per batch
	}{
		{"empty", nil, 2, nil},
		{"one batch", conns("b", "a"), 2, [][]string{{"a", "b"}}},
		{"even cut", conns("a", "b", "c", "d"), 2, [][]string{{"a", "b"}, {"c", "d"}}},
		{"user kept whole", conns("a", "b", "b", "b", "c"), 2, [][]string{{"a", "b", "b", "b"}, {"c"}}},
		{"sorted first", conns("b", "a", "b", "a"), 1, [][]string{{"a", "a"}, {"b", "b"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got [][]string
			for _, b := range heartbeatBatches(tc.conns, tc.size) {
				var users []string
				for _, c := range b {
					users = append(users, c.UserID)
				}
				got = append(got, users)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("batches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewRedisStoreOptions(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	cases := []struct {
		name    string
		client  redis.UniversalClient
		opts    []Option
		wantErr string
	}{
		{"defaults", rdb, nil, ""},
		{"all set", rdb, []Option{WithTTL(time.Second), WithKeyPrefix("x:"), WithLogger(nil)}, "WithLogger"},
		{"nil client", nil, nil, "client is nil"},
		{"zero ttl", rdb, []Option{WithTTL(0)}, "WithTTL"},
		{"sub-millisecond ttl", rdb, []Option{WithTTL(time.Microsecond)}, "WithTTL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewRedisStore(tc.client, tc.opts...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr == "" && s.TTL() != DefaultTTL:
				t.Fatalf("TTL %v, want %v", s.TTL(), DefaultTTL)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
			}
		})
	}
}

// TestRedisStoreDown checks that calls fail at once, with context, when
// nothing listens where Redis should be.
func TestRedisStoreDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	// No retries: what is measured is that the store adds none of its own.
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	defer rdb.Close()
	s, err := NewRedisStore(rdb)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := presencetest.Conn("u1", "c1", "a1")
	calls := []struct {
		name string
		call func() error
	}{
		{"presence: connect u1:", func() error { _, _, err := s.Connect(ctx, c); return err }},
		{"presence: disconnect u1:", func() error { _, _, err := s.Disconnect(ctx, c); return err }},
		{"presence: set status u1:", func() error { _, _, err := s.SetStatus(ctx, c, realtime.StatusAway); return err }},
		{"presence: heartbeat 1 connections:", func() error { _, err := s.Heartbeat(ctx, []realtime.PresenceConn{c}); return err }},
		{"presence: expire:", func() error { _, err := s.Expire(ctx); return err }},
		{"presence: list a1:", func() error { _, err := s.List(ctx, "a1"); return err }},
		{"presence: ping redis:", func() error { return s.Check(ctx) }},
	}
	for _, tc := range calls {
		start := time.Now()
		err := tc.call()
		if err == nil || !strings.HasPrefix(err.Error(), tc.name) {
			t.Errorf("error %v, want one starting %q", err, tc.name)
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			t.Errorf("%s: error %v does not wrap the dial error", tc.name, err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("%s took %v; want a fast failure", tc.name, d)
		}
	}
}
