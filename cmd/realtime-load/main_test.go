package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// testBaseline serves the baseline relay in-process on a free loopback port
// for at most 20 s; the target's process is this one.
func testBaseline(t *testing.T) (context.Context, *target) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	ln, srv, err := startBaseline(ctx, baselineConfig{host: "127.0.0.1", port: "0", verify: "hs256"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	tg, err := newTarget(ctx, "http://"+ln.Addr().String(), os.Getpid(), nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	return ctx, tg
}

// The smoke test: the tool loads the in-process baseline for about two
// seconds; every delivery arrives, once.
func TestSmokeRunAgainstBaseline(t *testing.T) {
	ctx, tg := testBaseline(t)
	for _, kind := range []string{"account", "conversation"} {
		t.Run(kind, func(t *testing.T) {
			c := loadConfig{clients: 100, accounts: 4, convSize: 5, kind: kind, inject: "http", posters: 4,
				concurrency: 16, readBuffer: 4096, rate: 5000, duration: time.Second, timeout: time.Minute}
			if err := c.validate(); err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			res, err := doRun(ctx, &c, tg, &out)
			t.Log("\n" + out.String())
			if err != nil {
				t.Fatal(err)
			}
			m := res.Measured
			if m.Delivered == 0 || m.Events == 0 {
				t.Fatalf("nothing delivered: %+v", m)
			}
			if m.Missing != 0 || m.Duplicates != 0 || res.FinalMissing != 0 || res.FinalExtra != 0 || m.FailedEvents != 0 {
				t.Fatalf("missing %d (whole run %d), duplicates %d, unexpected %d, failed events %d",
					m.Missing, res.FinalMissing, m.Duplicates, res.FinalExtra, m.FailedEvents)
			}
			if m.Expected != m.Delivered || res.BadEvents != 0 {
				t.Fatalf("expected %d deliveries, got %d; %d unreadable", m.Expected, m.Delivered, res.BadEvents)
			}
			if m.P99 <= 0 || m.P50 > m.P99 || m.P99 > m.Max {
				t.Fatalf("latency p50 %v p99 %v max %v", m.P50, m.P99, m.Max)
			}
		})
	}
}

func TestIdleAndConnectsAgainstBaseline(t *testing.T) {
	ctx, tg := testBaseline(t)
	c := loadConfig{clients: 50, accounts: 2, convSize: 5, concurrency: 8, readBuffer: 1024, timeout: time.Minute}
	idle, err := doIdle(ctx, &c, tg, io.Discard)
	if err != nil || idle.Clients != 50 || idle.RSSAfter <= 0 || idle.ConnectsPerSec <= 0 {
		t.Fatalf("idle: %+v %v", idle, err)
	}
	conn, err := doConnects(ctx, &c, tg, io.Discard)
	if err != nil || conn.Clients != 50 || conn.Failed != 0 || conn.PerSec <= 0 {
		t.Fatalf("connects: %+v %v", conn, err)
	}
}

// With -rs256 every scenario's clients carry minted RS256 tokens, not only
// connects': idle and run against a server that verifies them (the
// baseline, which then has no /dev/token to fall back on).
func TestRS256TokensInEveryScenario(t *testing.T) {
	iss, stopJWKS, err := serveJWKS()
	if err != nil {
		t.Fatal(err)
	}
	defer stopJWKS()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, srv, err := startBaseline(ctx, baselineConfig{host: "127.0.0.1", port: "0", verify: "rs256",
		jwksURL: jwksURL(iss), issuer: iss.Issuer}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tg, err := newTarget(ctx, "http://"+ln.Addr().String(), os.Getpid(), nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	c := loadConfig{clients: 40, accounts: 4, convSize: 5, kind: "account", inject: "http", posters: 2,
		concurrency: 8, readBuffer: 4096, rate: 2000, duration: 500 * time.Millisecond, timeout: time.Minute, iss: iss}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	idle, err := doIdle(ctx, &c, tg, io.Discard)
	if err != nil || idle.Clients != 40 || idle.Failed != 0 {
		t.Fatalf("idle: %+v %v", idle, err)
	}
	run, err := doRun(ctx, &c, tg, io.Discard)
	if err != nil || run.Measured.Delivered == 0 || run.Measured.Missing != 0 {
		t.Fatalf("run: %+v %v", run.Measured, err)
	}
	conn, err := doConnects(ctx, &c, tg, io.Discard)
	if err != nil || conn.Clients != 40 || conn.Failed != 0 {
		t.Fatalf("connects: %+v %v", conn, err)
	}
}

func TestRefusesNonLoopbackTargets(t *testing.T) {
	for _, args := range [][]string{
		{"run", "-target", "http://10.1.2.3:3299"},
		{"saturate", "-target", "http://example.com:3299"},
		{"run", "-inject", "amqp", "-amqp-url", "amqp://guest:guest@192.168.1.1:5672"},
		{"baseline", "-host", "0.0.0.0"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("%v: got %v, want a refusal", args, err)
		}
	}
}

func TestBoundsAreEnforced(t *testing.T) {
	for _, args := range [][]string{
		{"run", "-clients", "1000000"},
		{"run", "-duration", "2h"},
		{"idle", "-timeout", "0s"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

func TestSummaryTakesTheBestOfRepeats(t *testing.T) {
	run := func(rate float64, cpu, p99 time.Duration) LoadRun {
		best := PhaseResult{Rate: rate, CPUPer1k: cpu, P99: p99}
		return LoadRun{Open: PhaseResult{CPUPer1k: cpu, P99: p99}, Saturation: SaturationResult{Best: &best}}
	}
	r := &CompareResult{Servers: map[string]*ServerScenarios{
		"baseline": {Load: []LoadRun{run(150000, 5*time.Millisecond, 3*time.Millisecond), run(200000, 4*time.Millisecond, 2*time.Millisecond)},
			Idle: []IdleResult{{RSSPerConn: 20000}, {RSSPerConn: 25000}}},
		"ours": {Load: []LoadRun{run(50000, 20*time.Millisecond, 8*time.Millisecond)},
			Idle: []IdleResult{{RSSPerConn: 50000}}},
	}}
	got := summary(r, 20000)
	for _, want := range []string{"| deliveries/s at saturation | 200000 | 50000 | 0.25x |",
		"| server CPU per delivery at saturation (us) | 4.00 | 20.00 | 5.00x |",
		"| p99 at 20000 deliveries/s (ms) | 2.00 | 8.00 | 4.00x |",
		"| RSS per idle connection (KB) | 20.0 | 50.0 | 2.50x |"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}

func TestSaturationRule(t *testing.T) {
	ok := PhaseResult{TargetRate: 10000, Rate: 9900, P50: time.Millisecond, P99: 5 * time.Millisecond, LagP99: time.Millisecond}
	if limit := autoLimit(ok); limit != MinP99Limit {
		t.Fatalf("auto limit %v", limit)
	}
	if limit := autoLimit(PhaseResult{P50: 30 * time.Millisecond, P99: time.Second}); limit != 600*time.Millisecond {
		t.Fatalf("auto limit %v", limit)
	}
	cases := map[string]func(*PhaseResult){
		"slow":         func(r *PhaseResult) { r.Rate = 9000 },
		"missing":      func(r *PhaseResult) { r.Missing = 1 },
		"failed":       func(r *PhaseResult) { r.FailedEvents = 1 },
		"disconnect":   func(r *PhaseResult) { r.Disconnects = 1 },
		"latency":      func(r *PhaseResult) { r.P99 = 101 * time.Millisecond },
		"injector lag": func(r *PhaseResult) { r.LagP99 = 101 * time.Millisecond },
	}
	if !passes(ok, MinP99Limit) {
		t.Fatal("a healthy step fails")
	}
	for name, spoil := range cases {
		r := ok
		spoil(&r)
		if passes(r, MinP99Limit) {
			t.Errorf("%s: passes", name)
		}
	}
}
