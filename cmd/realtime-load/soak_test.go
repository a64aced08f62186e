package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// A short soak against the in-process baseline: clients are replaced at
// 10% a second while events flow, the population is back to N for the
// reference and the final sample, nothing fails, and every delivery owed to
// a connection over an event's whole lifetime arrives, once.
func TestSoakAgainstBaseline(t *testing.T) {
	ctx, tg := testBaseline(t)
	c := soakConfig{load: loadConfig{clients: 200, accounts: 4, convSize: 5, kind: "account", inject: "http", posters: 4,
		concurrency: 16, readBuffer: 4096, timeout: time.Minute, duration: 8 * time.Second, rate: 2000, settle: time.Second},
		churn: "10%", rateFraction: 0.5, sample: time.Second, grace: 2 * time.Second,
		goroutineTol: 0.01, goroutineSlack: 10, rssTol: 0.10}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.churnPerSec != 20 || c.warm != 800*time.Millisecond {
		t.Fatalf("churn %v/s, warm-up %v", c.churnPerSec, c.warm)
	}
	var out strings.Builder
	res, err := doSoak(ctx, &c, tg, c.load.rate, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + res.markdown() + "\n" + res.samplesMarkdown())
	if n := len(res.Samples); n < 8 {
		t.Errorf("%d samples, want at least 8", n)
	}
	ref, fin := res.Reference, res.Final
	if ref.Kind != "reference" || fin.Kind != "final" || ref.At >= fin.At {
		t.Errorf("reference %s at %v, final %s at %v", ref.Kind, ref.At, fin.Kind, fin.At)
	}
	if !res.Verdict.PopulationRestored || ref.Clients != 200 || fin.Clients != 200 {
		t.Errorf("population not restored: %d and %d clients", ref.Clients, fin.Clients)
	}
	if fin.Goroutines <= 0 || fin.RSS <= 0 || ref.HeapInuse <= 0 {
		t.Errorf("final sample lacks server figures: %+v", fin)
	}
	if res.Failures != 0 || res.Unexpected != 0 || res.FailedEvents != 0 {
		t.Errorf("%d connect failures (%s), %d unexpected disconnects (%s), %d failed events",
			res.Failures, res.FirstFailure, res.Unexpected, res.FirstUnexpected, res.FailedEvents)
	}
	if res.Replaced < 80 {
		t.Errorf("%d connections replaced, want about 160", res.Replaced)
	}
	if res.Owed == 0 || res.Deliveries < res.Owed || res.Missing != 0 || res.Duplicates != 0 {
		t.Errorf("owed %d, delivered %d, missing %d, duplicates %d", res.Owed, res.Deliveries, res.Missing, res.Duplicates)
	}
	want := judge(ref, fin, 200, 0.01, 10, 0.10)
	if res.Verdict != want {
		t.Errorf("verdict %+v, want %+v", res.Verdict, want)
	}
	md := res.markdown()
	for _, s := range []string{"| server goroutines |", "| server RSS (MiB) |", "Verdict: **", "| connections replaced"} {
		if !strings.Contains(md, s) {
			t.Errorf("summary lacks %q:\n%s", s, md)
		}
	}
}

func TestSoakVerdict(t *testing.T) {
	ref := SoakSample{Clients: 1000, Goroutines: 2000, RSS: 100 << 20, HeapInuse: 50 << 20}
	cases := []struct {
		name       string
		goroutines float64
		rss        int64
		flat       bool
	}{
		{"same", 2000, 100 << 20, true},
		{"within both", 2030, 110 << 20, true},
		{"shrunk", 1900, 90 << 20, true},
		{"goroutines grew", 2031, 100 << 20, false},
		{"RSS grew", 2000, 111 << 20, false},
	}
	for _, tc := range cases {
		fin := ref
		fin.Goroutines, fin.RSS = tc.goroutines, tc.rss
		v := judge(ref, fin, 1000, 0.01, 10, 0.10)
		if v.Flat != tc.flat || !v.PopulationRestored || v.GoroutineLimit != 30 {
			t.Errorf("%s: %+v", tc.name, v)
		}
	}
	v := judge(ref, SoakSample{Clients: 1000, Goroutines: 2100, RSS: 120 << 20}, 1000, 0.01, 10, 0.10)
	if v.GoroutinesPerConn != 0.1 || v.RSSDeltaPct != 20 || v.GoroutinesFlat || v.RSSFlat {
		t.Errorf("deltas: %+v", v)
	}
	if judge(ref, SoakSample{Clients: 999, Goroutines: 2000, RSS: 100 << 20}, 1000, 0.01, 10, 0.1).PopulationRestored {
		t.Error("999 of 1000 clients counts as restored")
	}
}

func TestParseChurn(t *testing.T) {
	for in, want := range map[string]float64{"5%": 50, "0.05": 50, "50": 50, "0": 0, "100%": 1000, "2.5": 2.5} {
		if got, err := parseChurn(in, 1000); err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "-1", "101%", "1001", ""} {
		if _, err := parseChurn(bad, 1000); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSoakRefusesAndBounds(t *testing.T) {
	for _, args := range [][]string{
		{"soak", "-target", "http://10.1.2.3:3299"},
		{"soak", "-clients", "1000000"},
		{"soak", "-duration", "2h"},
		{"soak", "-duration", "10m", "-timeout", "5m"},
		{"soak", "-churn", "x"},
		{"soak", "-duration", "1m", "-warm", "2m"},
		{"soak", "-rate-fraction", "1.5"},
		{"soak", "-rs256"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
