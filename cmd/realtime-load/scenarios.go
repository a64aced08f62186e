package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// RunResult is the outcome of run: open-loop load at one rate.
type RunResult struct {
	Clients        int         `json:"clients"`
	RecipientsPer  float64     `json:"recipients_per_event"`
	Measured       PhaseResult `json:"measured"`
	FinalMissing   uint64      `json:"final_missing"`
	FinalExtra     uint64      `json:"final_unexpected"`
	BadEvents      uint64      `json:"bad_events"`
	OtherEvents    uint64      `json:"other_events"`
	Disconnects    uint64      `json:"disconnects"`
	ConnectsPerSec float64     `json:"connects_per_s"`
}

// loaded connects the clients with their rooms and prepares the injector.
func loaded(ctx context.Context, c *loadConfig, t *target, w io.Writer) (*session, error) {
	s, err := newSession(c, t, w)
	if err != nil {
		return nil, err
	}
	tokens, err := s.tokens(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.connect(ctx, tokens, true)
	if err != nil {
		s.close()
		return nil, err
	}
	if err := s.prepareLoad(); err != nil {
		s.close()
		return nil, err
	}
	fmt.Fprintf(w, "  %d clients ready in %s (%.0f/s); %s events, %.1f recipients each, injected by %d %s posters\n",
		len(s.clients), res.Elapsed.Round(time.Millisecond), res.PerSec, s.driver.Kind, s.driver.RecipientsPerEvent(),
		len(s.posters), c.inject)
	return s, nil
}

func doRun(ctx context.Context, c *loadConfig, t *target, w io.Writer) (RunResult, error) {
	s, err := loaded(ctx, c, t, w)
	if err != nil {
		return RunResult{}, err
	}
	defer s.close()
	if c.warmup > 0 {
		s.phase(ctx, "warmup", c.rate, c.warmup, 5*time.Second).print(w)
	}
	var profErr chan error
	if c.profileURL != "" {
		profErr = make(chan error, 1)
		go func() { profErr <- fetchProfile(ctx, c.profileURL, c.duration, c.profileOut) }()
	}
	r := RunResult{Clients: len(s.clients), RecipientsPer: s.driver.RecipientsPerEvent()}
	r.Measured = s.phase(ctx, "measured", c.rate, c.duration, 10*time.Second)
	r.Measured.print(w)
	r.FinalMissing, r.FinalExtra = s.exactMissing()
	r.BadEvents, r.OtherEvents, r.Disconnects = s.rec.BadEvents.Load(), s.rec.Other.Load(), s.rec.Disconnects.Load()
	fmt.Fprintf(w, "  whole run: %d deliveries missing, %d unexpected (per-client sequence sets); %d unreadable events; %d clients disconnected by the server %s\n",
		r.FinalMissing, r.FinalExtra, r.BadEvents, r.Disconnects, s.rec.FirstDisconnect())
	if profErr != nil {
		if err := <-profErr; err != nil {
			fmt.Fprintf(w, "  profile: %v\n", err)
		} else {
			fmt.Fprintf(w, "  CPU profile written to %s\n", c.profileOut)
		}
	}
	return r, ctx.Err()
}

// exactMissing compares every client's received sequence numbers with what
// was published on its streams. Only for account events and conversation
// messages: the account-wide conversation:updated carries no number.
func (s *session) exactMissing() (missing, extra uint64) {
	for _, cl := range s.clients {
		a, cv := s.driver.Sent(cl)
		m, e := cl.Missing(a, cv)
		missing += m
		extra += e
	}
	return missing, extra
}

func fetchProfile(ctx context.Context, url string, d time.Duration, out string) error {
	secs := max(int(d.Seconds())-2, 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s?seconds=%d", url, secs), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SaturationResult is the outcome of saturate.
type SaturationResult struct {
	Steps []PhaseResult `json:"steps"`
	// Best is the passing step with the highest delivered rate: the maximum
	// sustained throughput.
	Best *PhaseResult `json:"best,omitempty"`
}

// passes reports whether a step was sustained: everything delivered, at
// the asked rate, without latency or the injector falling behind.
func passes(r PhaseResult, limit time.Duration) bool {
	return r.Missing == 0 && r.FailedEvents == 0 && r.Disconnects == 0 && r.Rate >= 0.95*r.TargetRate &&
		r.P99 <= limit && r.LagP99 <= limit
}

// MinP99Limit is the least latency limit of the automatic saturation rule:
// on a shared machine, other processes alone can push p99 to tens of ms.
const MinP99Limit = 100 * time.Millisecond

// autoLimit is the latency at which a step counts as exploded when none was
// given: twenty times the first (lightest) step's median, and at least
// MinP99Limit. The median, not the p99, because one burst of other work on
// the machine moves the p99 of a light step but hardly its median.
func autoLimit(first PhaseResult) time.Duration { return max(MinP99Limit, 20*first.P50) }

func doSaturate(ctx context.Context, c *loadConfig, t *target, w io.Writer) (SaturationResult, error) {
	s, err := loaded(ctx, c, t, w)
	if err != nil {
		return SaturationResult{}, err
	}
	defer s.close()
	return s.saturate(ctx, w)
}

func (s *session) saturate(ctx context.Context, w io.Writer) (SaturationResult, error) {
	c := s.cfg
	var res SaturationResult
	if c.warmup > 0 {
		s.phase(ctx, "warmup", c.startRate, c.warmup, 5*time.Second).print(w)
	}
	limit := c.p99Limit
	step := func(rate float64) PhaseResult {
		r := s.phase(ctx, fmt.Sprintf("step %.0f", rate), rate, c.step, 5*time.Second)
		if limit <= 0 {
			limit = autoLimit(r)
			fmt.Fprintf(w, "  latency limit: p99 and injector lag up to %s\n", ms(limit))
		}
		r.Passed = passes(r, limit)
		r.print(w)
		res.Steps = append(res.Steps, r)
		if r.Passed && (res.Best == nil || r.Rate > res.Best.Rate) {
			best := r
			res.Best = &best
		}
		s.settle(ctx)
		return r
	}
	// A step that fails is run once more before it counts: a burst of other
	// work on a shared machine can fail a step the server would sustain.
	sustained := func(rate float64) bool {
		return step(rate).Passed || (ctx.Err() == nil && step(rate).Passed)
	}
	lo, hi := 0.0, 0.0
	for rate := c.startRate; rate <= c.maxRate && ctx.Err() == nil; rate *= c.factor {
		if !sustained(rate) {
			hi = rate
			break
		}
		lo = rate
	}
	for i := 0; i < c.refine && lo > 0 && hi > 0 && ctx.Err() == nil; i++ {
		mid := (lo + hi) / 2
		if sustained(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	if res.Best != nil {
		fmt.Fprintf(w, "  saturation: %.0f deliveries/s sustained (p99 %s, %s server CPU per 1,000 deliveries)\n",
			res.Best.Rate, ms(res.Best.P99), ms(res.Best.CPUPer1k))
	} else {
		fmt.Fprintln(w, "  saturation: no step passed; lower -start-rate")
	}
	return res, ctx.Err()
}

// settle waits until the clients have received nothing for a second (at
// most 30 s), so that an overloaded step's backlog is not charged to the
// next one.
func (s *session) settle(ctx context.Context) {
	deadline := time.Now().Add(30 * time.Second)
	last, quietSince := s.rec.Received.Load(), time.Now()
	for ctx.Err() == nil && time.Now().Before(deadline) && time.Since(quietSince) < time.Second {
		time.Sleep(50 * time.Millisecond)
		if n := s.rec.Received.Load(); n != last {
			last, quietSince = n, time.Now()
		}
	}
}

// IdleResult is the outcome of idle.
type IdleResult struct {
	Clients        int     `json:"clients"`
	RSSBefore      int64   `json:"server_rss_before_bytes"`
	RSSAfter       int64   `json:"server_rss_after_bytes"`
	RSSPerConn     float64 `json:"server_rss_per_connection_bytes"`
	ThreadsAfter   int     `json:"server_threads_after"`
	ConnectsPerSec float64 `json:"ready_per_s"`
	ConnectP50     float64 `json:"ready_p50_ms"`
	ConnectP99     float64 `json:"ready_p99_ms"`
	// From the server's /metrics, when it has them.
	GoroutinesPerConn float64 `json:"goroutines_per_connection,omitempty"`
	HeapPerConn       float64 `json:"heap_inuse_per_connection_bytes,omitempty"`
	// Events the clients received while connecting (the service's presence
	// broadcasts as agents come online).
	SetupEvents uint64 `json:"events_during_setup"`
	Failed      int    `json:"failed"`
	Held        string `json:"held,omitempty"`
	Dropped     uint64 `json:"dropped"`
}

func doIdle(ctx context.Context, c *loadConfig, t *target, w io.Writer) (IdleResult, error) {
	if t.pid == 0 {
		return IdleResult{}, fmt.Errorf("idle needs the server's process: give -pid or -server")
	}
	s, err := newSession(c, t, w)
	if err != nil {
		return IdleResult{}, err
	}
	defer s.close()
	tokens, err := s.tokens(ctx)
	if err != nil {
		return IdleResult{}, err
	}
	time.Sleep(time.Second) // let the token requests' garbage settle
	m0 := t.runtimeMetrics(ctx)
	before, _ := t.proc()
	res, err := s.connect(ctx, tokens, true)
	if err != nil {
		return IdleResult{}, err
	}
	time.Sleep(c.settle)
	after, _ := t.proc()
	lat := res.Latency.Snapshot()
	n := float64(len(s.clients))
	r := IdleResult{Clients: len(s.clients), RSSBefore: before.RSS, RSSAfter: after.RSS,
		RSSPerConn: float64(after.RSS-before.RSS) / n, ThreadsAfter: after.Threads,
		ConnectsPerSec: res.PerSec, ConnectP50: float64(lat.Quantile(0.5)) / 1e6, ConnectP99: float64(lat.Quantile(0.99)) / 1e6,
		SetupEvents: s.rec.Other.Load(), Failed: res.Failed}
	fmt.Fprintf(w, "  %d idle clients: server RSS %.1f MiB -> %.1f MiB = %.1f KB per connection (%d threads); ready %.0f/s (p50 %.1fms, p99 %.1fms); %d events during setup\n",
		r.Clients, mib(r.RSSBefore), mib(r.RSSAfter), r.RSSPerConn/1000, r.ThreadsAfter, r.ConnectsPerSec, r.ConnectP50, r.ConnectP99, r.SetupEvents)
	m1 := t.runtimeMetrics(ctx)
	g, okG := m1.delta(m0, "go_goroutines")
	h, okH := m1.delta(m0, "go_memstats_heap_inuse_bytes")
	if okG && okH {
		r.GoroutinesPerConn, r.HeapPerConn = g/n, h/n
		fmt.Fprintf(w, "  per connection: %.2f goroutines, %.1f KB of heap in use (from /metrics)\n", r.GoroutinesPerConn, r.HeapPerConn/1000)
	}
	if c.hold > 0 {
		d0 := s.rec.Disconnects.Load()
		select {
		case <-ctx.Done():
		case <-time.After(c.hold):
		}
		r.Held, r.Dropped = c.hold.String(), s.rec.Disconnects.Load()-d0
		fmt.Fprintf(w, "  held %s: %d connections dropped\n", c.hold, r.Dropped)
	}
	return r, ctx.Err()
}

// ConnectsResult is the outcome of connects.
type ConnectsResult struct {
	Clients  int     `json:"clients"`
	Tokens   string  `json:"tokens"`
	PerSec   float64 `json:"connects_per_s"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Failed   int     `json:"failed"`
	ServerMS float64 `json:"server_cpu_ms_per_connect"`
}

func doConnects(ctx context.Context, c *loadConfig, t *target, w io.Writer) (ConnectsResult, error) {
	s, err := newSession(c, t, w)
	if err != nil {
		return ConnectsResult{}, err
	}
	defer s.close()
	tokens, err := s.tokens(ctx)
	if err != nil {
		return ConnectsResult{}, err
	}
	kind := "dev HS256"
	if c.iss != nil {
		kind = "RS256 (JWKS)"
	}
	before, ok := t.proc()
	res, err := s.connect(ctx, tokens, false)
	after, _ := t.proc()
	lat := res.Latency.Snapshot()
	r := ConnectsResult{Clients: len(res.Clients), Tokens: kind, PerSec: res.PerSec, Failed: res.Failed,
		P50: float64(lat.Quantile(0.5)) / 1e6, P99: float64(lat.Quantile(0.99)) / 1e6}
	if ok && r.Clients > 0 {
		r.ServerMS = float64(after.CPU-before.CPU) / 1e6 / float64(r.Clients)
	}
	fmt.Fprintf(w, "  %d connects with %s tokens, %d at a time: %.0f/s (p50 %.1fms, p99 %.1fms), %.3f ms server CPU each, %d failed\n",
		r.Clients, kind, c.concurrency, r.PerSec, r.P50, r.P99, r.ServerMS, r.Failed)
	return r, err
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
