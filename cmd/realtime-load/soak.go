package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/turumba/realtime/internal/loadclient"
	"github.com/turumba/realtime/internal/loadstats"
)

// The soak also reads the service's connected-sockets gauge and the heap
// goal of its garbage collector, from which the heap found live at the last
// GC follows (the baseline relay serves neither; its samples show "-").
const (
	metricSockets = "realtime_connected_sockets"
	metricNextGC  = "go_memstats_next_gc_bytes"
	metricGOGC    = "go_gc_gogc_percent"
)

func init() {
	for _, name := range []string{metricSockets, metricNextGC, metricGOGC} {
		runtimeMetricNames[name] = true
	}
}

// soakConfig is soak's command line: saturate's flags (its ramp measures
// the saturation the soak's rate is a fraction of) and the soak's own.
type soakConfig struct {
	load           loadConfig
	churn          string
	churnPerSec    float64
	rateFraction   float64
	sample         time.Duration
	warm           time.Duration
	grace          time.Duration
	goroutineTol   float64
	goroutineSlack float64
	rssTol         float64
	mdOut          string
}

func (c *soakConfig) register(fs *flag.FlagSet) {
	c.load.register(fs, "saturate")
	tf := fs.Lookup("timeout")
	tf.DefValue, tf.Usage = "0", "the whole run stops after this (0: -duration plus 15 minutes, at most 1h)"
	_ = tf.Value.Set("0")
	fs.DurationVar(&c.load.duration, "duration", 20*time.Minute, "how long the churn and the events run")
	fs.Float64Var(&c.load.rate, "rate", 0, "deliveries per second (0: -rate-fraction of a saturation measured first with saturate's ramp)")
	fs.Float64Var(&c.rateFraction, "rate-fraction", 0.5, "with -rate 0, this fraction of the measured saturation")
	fs.StringVar(&c.churn, "churn", "5%", "clients disconnected and replaced per second: a percentage (5%) or fraction below 1 (0.05) of -clients, or a number of clients (50)")
	fs.DurationVar(&c.sample, "sample", 10*time.Second, "interval between samples")
	fs.DurationVar(&c.warm, "warm", 0, "warm-up: the reference sample is taken after it (0: 10% of -duration, at most 1m)")
	fs.DurationVar(&c.load.settle, "settle", 5*time.Second, "before the reference and the final sample: churn and events stopped, N clients connected, wait this long")
	fs.DurationVar(&c.grace, "grace", 2*time.Second, "a closed connection was owed the events accepted until this long before it closed")
	fs.Float64Var(&c.goroutineTol, "goroutine-tolerance", 0.01, "flat: final goroutines at most the reference's times 1+this, plus -goroutine-slack")
	fs.Float64Var(&c.goroutineSlack, "goroutine-slack", 10, "flat: goroutines allowed above the reference besides -goroutine-tolerance")
	fs.Float64Var(&c.rssTol, "rss-tolerance", 0.10, "flat: final RSS at most the reference's times 1+this")
	fs.StringVar(&c.mdOut, "md", "", "also write the summary and the samples (markdown) to this file")
}

func (c *soakConfig) validate() error {
	if c.load.timeout == 0 {
		c.load.timeout = min(c.load.duration+15*time.Minute, maxDuration)
	}
	if err := c.load.validate(); err != nil {
		return err
	}
	if c.load.rs256 {
		return errors.New("soak fetches dev tokens from the target: -rs256 is not supported")
	}
	if c.load.duration <= 0 || c.load.duration >= c.load.timeout {
		return fmt.Errorf("-duration must be positive and shorter than -timeout (%s)", c.load.timeout)
	}
	if c.warm == 0 {
		c.warm = min(c.load.duration/10, time.Minute)
	}
	if c.warm <= 0 || c.warm >= c.load.duration {
		return errors.New("-warm must be shorter than -duration")
	}
	if c.sample <= 0 || c.load.settle < 0 || c.grace < 0 {
		return errors.New("-sample must be positive, -settle and -grace not negative")
	}
	if c.load.rate < 0 || c.rateFraction <= 0 || c.rateFraction > 1 {
		return errors.New("-rate must not be negative and -rate-fraction must be in (0, 1]")
	}
	if c.goroutineTol < 0 || c.goroutineSlack < 0 || c.rssTol < 0 {
		return errors.New("the flatness tolerances must not be negative")
	}
	var err error
	c.churnPerSec, err = parseChurn(c.churn, c.load.clients)
	return err
}

// parseChurn reads -churn: "5%" or a fraction below 1 of clients per
// second, or a number of clients per second.
func parseChurn(s string, clients int) (float64, error) {
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("-churn %q: want a percentage (5%%), a fraction (0.05) or clients per second (50)", s)
	}
	switch {
	case pct:
		v = v / 100 * float64(clients)
	case v < 1:
		v *= float64(clients)
	}
	if v > float64(clients) {
		return 0, fmt.Errorf("-churn %q: more than every client each second", s)
	}
	return v, nil
}

// SoakSample is one reading of the server and of the load. Rates, p99 and
// counts are over the interval since the previous sample.
type SoakSample struct {
	At          time.Duration `json:"at_ns"` // since the soak's load started
	Kind        string        `json:"kind"`  // start, run, reference or final
	Clients     int           `json:"clients"`
	Sockets     float64       `json:"server_sockets"` // -1: the server does not say
	Goroutines  float64       `json:"server_goroutines"`
	HeapInuse   float64       `json:"server_heap_inuse_bytes"`
	LiveHeap    float64       `json:"server_live_heap_bytes"` // at the last GC: the heap goal / (1 + GOGC/100); -1: unknown
	RSS         int64         `json:"server_rss_bytes"`
	Threads     int           `json:"server_threads"`
	ServerCores float64       `json:"server_cores"`
	ToolCores   float64       `json:"tool_cores"`
	OtherCores  float64       `json:"other_cores"` // the rest of the machine: noise
	Rate        float64       `json:"deliveries_per_s"`
	OtherRate   float64       `json:"other_events_per_s"` // presence and the like
	P99         time.Duration `json:"p99_ns"`
	Replaced    uint64        `json:"replaced"`
	Failures    uint64        `json:"connect_failures"`
	Disconnects uint64        `json:"unexpected_disconnects"`
}

// SoakVerdict compares the final sample with the reference.
type SoakVerdict struct {
	GoroutineDelta     float64 `json:"goroutine_delta"`
	GoroutinesPerConn  float64 `json:"goroutine_delta_per_client"`
	GoroutineLimit     float64 `json:"goroutine_delta_limit"`
	RSSDelta           int64   `json:"rss_delta_bytes"`
	RSSDeltaPct        float64 `json:"rss_delta_pct"`
	RSSLimitPct        float64 `json:"rss_delta_limit_pct"`
	HeapDelta          float64 `json:"heap_inuse_delta_bytes"`
	LiveHeapDelta      float64 `json:"live_heap_delta_bytes"`
	GoroutinesFlat     bool    `json:"goroutines_flat"`
	RSSFlat            bool    `json:"rss_flat"`
	Flat               bool    `json:"flat"`
	PopulationRestored bool    `json:"population_restored"`
}

// judge is the soak's verdict: flat when the goroutines grew by at most
// tol of the reference plus slack, and RSS by at most rssTol.
func judge(ref, final SoakSample, clients int, tol, slack, rssTol float64) SoakVerdict {
	v := SoakVerdict{GoroutineDelta: final.Goroutines - ref.Goroutines, GoroutineLimit: tol*ref.Goroutines + slack,
		RSSDelta: final.RSS - ref.RSS, RSSLimitPct: 100 * rssTol, HeapDelta: final.HeapInuse - ref.HeapInuse, LiveHeapDelta: final.LiveHeap - ref.LiveHeap,
		PopulationRestored: ref.Clients == clients && final.Clients == clients}
	v.GoroutinesPerConn = v.GoroutineDelta / float64(clients)
	if ref.RSS > 0 {
		v.RSSDeltaPct = 100 * float64(v.RSSDelta) / float64(ref.RSS)
	}
	v.GoroutinesFlat = v.GoroutineDelta <= v.GoroutineLimit
	v.RSSFlat = ref.RSS > 0 && v.RSSDeltaPct <= v.RSSLimitPct
	v.Flat = v.GoroutinesFlat && v.RSSFlat
	return v
}

// SoakResult is the outcome of soak.
type SoakResult struct {
	Started         time.Time     `json:"started"`
	Clients         int           `json:"clients"`
	Accounts        int           `json:"accounts"`
	Kind            string        `json:"kind"`
	Duration        time.Duration `json:"duration_ns"`
	Warm            time.Duration `json:"warm_ns"`
	Settle          time.Duration `json:"settle_ns"`
	ChurnPerSec     float64       `json:"churn_per_s"`
	Saturation      float64       `json:"saturation_deliveries_per_s,omitempty"`
	TargetRate      float64       `json:"target_deliveries_per_s"`
	RecipientsPer   float64       `json:"recipients_per_event"`
	Samples         []SoakSample  `json:"samples"`
	Reference       SoakSample    `json:"reference"`
	Final           SoakSample    `json:"final"`
	Verdict         SoakVerdict   `json:"verdict"`
	SocketsMatch    bool          `json:"server_sockets_match"` // the server's gauge says N (or it has none)
	Events          uint64        `json:"events"`
	FailedEvents    uint64        `json:"failed_events"`
	Deliveries      uint64        `json:"deliveries"`
	Duplicates      uint64        `json:"duplicates"`
	Owed            uint64        `json:"owed"` // to connections in their rooms over an event's whole lifetime
	Missing         uint64        `json:"missing"`
	OtherEvents     uint64        `json:"other_events"`
	BadEvents       uint64        `json:"bad_events"`
	P99             time.Duration `json:"p99_ns"`
	Max             time.Duration `json:"max_ns"`
	Replaced        uint64        `json:"replaced"`
	ReconnectP99    time.Duration `json:"reconnect_p99_ns"`
	Failures        uint64        `json:"connect_failures"`
	FirstFailure    string        `json:"first_connect_failure,omitempty"`
	Unexpected      uint64        `json:"unexpected_disconnects"`
	FirstUnexpected string        `json:"first_unexpected_disconnect,omitempty"`
	OtherCoresMean  float64       `json:"other_cores_mean"` // the rest of the machine over the samples
	OtherCoresMax   float64       `json:"other_cores_max"`
}

func runSoak(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("realtime-load soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c soakConfig
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.load.timeout)
	defer cancel()
	limit, err := raiseLimit(c.load.clients)
	if err != nil {
		return err
	}
	start := func() (*target, error) {
		return newTarget(ctx, c.load.target, c.load.pid, strings.Fields(c.load.server), c.load.serverEnv, c.load.serverLog)
	}
	t, err := start()
	if err != nil {
		return err
	}
	defer func() { t.stop() }()
	if t.pid == 0 {
		return errors.New("soak needs the server's process for its RSS: give -pid or -server")
	}
	fmt.Fprintf(stdout, "realtime-load soak: target %s (pid %d), %d clients, %d accounts, conversations of %d, GOMAXPROCS %d, open-file limit %d\n",
		t.base, t.pid, c.load.clients, c.load.accounts, c.load.convSize, runtime.GOMAXPROCS(0), limit)

	rate, saturation := c.load.rate, 0.0
	if rate == 0 {
		fmt.Fprintf(stdout, "\n== saturation, to soak at %.0f%% of it\n", 100*c.rateFraction)
		if saturation, err = measureSaturation(ctx, &c.load, t, stdout); err != nil {
			return err
		}
		rate = c.rateFraction * saturation
		if t.cmd != nil {
			// A fresh server for the soak: the ramp's high-water marks would
			// hide growth below them.
			t.stop()
			if t, err = start(); err != nil {
				return fmt.Errorf("restart the server after the ramp: %w", err)
			}
			fmt.Fprintf(stdout, "  server restarted for the soak (pid %d)\n", t.pid)
		} else {
			fmt.Fprintln(stdout, "  (the ramp ran on the same server process: its RSS may stay at the ramp's high-water mark)")
		}
	}
	res, err := doSoak(ctx, &c, t, rate, stdout)
	if err != nil {
		return err
	}
	res.Saturation = saturation
	md := res.markdown()
	fmt.Fprintf(stdout, "\n%s", md)
	if c.mdOut != "" {
		if err := os.WriteFile(c.mdOut, []byte(md+"\n"+res.samplesMarkdown()), 0o644); err != nil {
			return fmt.Errorf("write -md: %w", err)
		}
	}
	if err := writeJSON(c.load.jsonOut, res); err != nil {
		return fmt.Errorf("write -json: %w", err)
	}
	if !res.Verdict.Flat {
		v := res.Verdict
		return fmt.Errorf("soak: not flat: goroutines %+.0f (limit %+.0f), RSS %+.1f%% (limit %+.0f%%)",
			v.GoroutineDelta, v.GoroutineLimit, v.RSSDeltaPct, v.RSSLimitPct)
	}
	return nil
}

// measureSaturation runs saturate's ramp on its own set of clients and
// returns the highest sustained delivery rate.
func measureSaturation(ctx context.Context, c *loadConfig, t *target, w io.Writer) (float64, error) {
	s, err := loaded(ctx, c, t, w)
	if err != nil {
		return 0, err
	}
	defer s.close()
	sat, err := s.saturate(ctx, w)
	if err != nil {
		return 0, err
	}
	if sat.Best == nil {
		return 0, errors.New("no saturation step passed; lower -start-rate or give -rate")
	}
	return sat.Best.Rate, nil
}

// soakRun is the state of one soak: the clients, the population that
// churns them, the phase their deliveries are charged to, and the last
// sample's counters.
type soakRun struct {
	cfg   *soakConfig
	s     *session
	pop   *population
	ph    *loadclient.Phase
	start time.Time
	res   *SoakResult
	w     io.Writer
	last  soakCounters
}

// soakCounters are the cumulative counts a sample's interval figures are
// differences of.
type soakCounters struct {
	at                             time.Time
	cpu, self, machine             time.Duration
	distinct, other                uint64
	replaced, failures, unexpected uint64
	lat                            loadstats.Snapshot
	haveCPU                        bool
}

func doSoak(ctx context.Context, c *soakConfig, t *target, rate float64, w io.Writer) (*SoakResult, error) {
	fmt.Fprintf(w, "\n== soak: %d clients, %.1f replaced per second, %s at %.0f deliveries/s\n",
		c.load.clients, c.churnPerSec, c.load.duration, rate)
	s, err := loaded(ctx, &c.load, t, w)
	if err != nil {
		return nil, err
	}
	defer s.close()
	k := &soakRun{cfg: c, s: s, w: w, pop: newPopulation(s, c.churnPerSec, c.grace),
		res: &SoakResult{Started: time.Now(), Clients: c.load.clients, Accounts: c.load.accounts, Kind: s.driver.Kind.String(),
			Duration: c.load.duration, Warm: c.warm, Settle: c.load.settle, ChurnPerSec: c.churnPerSec,
			TargetRate: rate, RecipientsPer: s.driver.RecipientsPerEvent()}}
	defer func() { k.pop.close(time.Now()) }() // on the way out early; a no-op after the end's
	eps := rate / k.res.RecipientsPer
	fmt.Fprintf(w, "  %.1f events/s; warm-up %s, reference and final samples after %s of settling; a sample every %s\n",
		eps, c.warm, c.load.settle, c.sample)
	k.ph = s.rec.Begin("soak")
	k.start = time.Now()
	fmt.Fprintf(w, "  %8s %-9s %7s %7s %10s %8s %8s %8s %5s %6s %9s %8s %8s %8s %5s %4s\n", "t", "sample", "clients", "sockets",
		"goroutines", "heap MiB", "live MiB", "RSS MiB", "cores", "others", "deliv/s", "other/s", "p99 ms", "replaced", "fail", "disc")
	first := k.sample(ctx, "start")
	if first.Goroutines < 0 {
		return nil, errors.New("the server serves no go_goroutines on GET /metrics: the soak cannot judge it")
	}
	k.pop.start(ctx)
	k.segment(ctx, eps, c.warm)
	if k.res.Reference, err = k.checkpoint(ctx, "reference"); err != nil {
		return nil, err
	}
	k.pop.setPaused(false)
	k.segment(ctx, eps, c.load.duration-c.warm)
	if k.res.Final, err = k.checkpoint(ctx, "final"); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("soak cut short: %w", ctx.Err())
	}
	k.pop.close(time.Now())
	k.finish()
	return k.res, nil
}

// segment injects events at eps for dur while the population churns, and
// samples every -sample.
func (k *soakRun) segment(ctx context.Context, eps float64, dur time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.s.driver.Run(ctx, k.ph, eps, dur)
	}()
	tick := time.NewTicker(k.cfg.sample)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			k.sample(ctx, "run")
		}
	}
}

// checkpoint stops the churn (the events are stopped already), brings the
// population back to N, waits for the deliveries to end and for -settle,
// and samples: the reference and the final sample are taken alike.
func (k *soakRun) checkpoint(ctx context.Context, kind string) (SoakSample, error) {
	if err := k.pop.restore(ctx, time.Minute); err != nil {
		return SoakSample{}, err
	}
	deadline := time.Now().Add(30 * time.Second)
	last, quietSince := k.ph.Distinct.Load(), time.Now()
	for ctx.Err() == nil && time.Now().Before(deadline) && time.Since(quietSince) < time.Second {
		time.Sleep(50 * time.Millisecond)
		if n := k.ph.Distinct.Load(); n != last {
			last, quietSince = n, time.Now()
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(k.cfg.load.settle):
	}
	// A client the server dropped meanwhile is replaced before the sample.
	if err := k.pop.restore(ctx, time.Minute); err != nil {
		return SoakSample{}, err
	}
	return k.sample(ctx, kind), nil
}

func (k *soakRun) counters() soakCounters {
	c := soakCounters{at: time.Now(), distinct: k.ph.Distinct.Load(), other: k.s.rec.Other.Load(),
		replaced: k.pop.replaced.Load(), failures: k.pop.failures.Load(), unexpected: k.pop.unexpected.Load(),
		lat: k.ph.Latency.Snapshot()}
	if p, ok := k.s.t.proc(); ok {
		c.cpu, c.haveCPU = p.CPU, true
	}
	self, _ := loadstats.ReadProc(os.Getpid())
	c.self = self.CPU
	c.machine, _ = loadstats.MachineCPU()
	return c
}

// sample reads the server and the interval's figures, prints and keeps them.
func (k *soakRun) sample(ctx context.Context, kind string) SoakSample {
	m := k.s.t.runtimeMetrics(ctx)
	proc, _ := k.s.t.proc()
	cur := k.counters()
	prev := k.last
	k.last = cur
	dt := cur.at.Sub(prev.at).Seconds()
	metric := func(name string) float64 {
		if v, ok := m[name]; ok {
			return v
		}
		return -1
	}
	s := SoakSample{At: cur.at.Sub(k.start), Kind: kind, Clients: k.pop.connected(), Sockets: metric(metricSockets),
		Goroutines: metric("go_goroutines"), HeapInuse: metric("go_memstats_heap_inuse_bytes"), LiveHeap: -1,
		RSS: proc.RSS, Threads: proc.Threads, P99: cur.lat.Sub(prev.lat).Quantile(0.99),
		Replaced: cur.replaced - prev.replaced, Failures: cur.failures - prev.failures, Disconnects: cur.unexpected - prev.unexpected}
	if goal, gogc := metric(metricNextGC), metric(metricGOGC); goal > 0 && gogc > 0 {
		s.LiveHeap = goal / (1 + gogc/100)
	}
	if !prev.at.IsZero() && dt > 0 { // the first sample has no interval
		s.Rate = float64(cur.distinct-prev.distinct) / dt
		s.OtherRate = float64(cur.other-prev.other) / dt
		if cur.haveCPU && prev.haveCPU {
			s.ServerCores = (cur.cpu - prev.cpu).Seconds() / dt
		}
		s.ToolCores = (cur.self - prev.self).Seconds() / dt
		s.OtherCores = max((cur.machine-prev.machine).Seconds()/dt-s.ToolCores-s.ServerCores, 0)
	}
	k.res.Samples = append(k.res.Samples, s)
	fmt.Fprintf(k.w, "  %8s %-9s %7d %7s %10.0f %8.1f %8s %8.1f %5.2f %6.2f %9.0f %8.0f %8.2f %8d %5d %4d\n",
		s.At.Round(time.Second), kind, s.Clients, orDash(s.Sockets), s.Goroutines, s.HeapInuse/(1<<20), mibOrDash(s.LiveHeap), mib(s.RSS),
		s.ServerCores, s.OtherCores, s.Rate, s.OtherRate, float64(s.P99)/1e6, s.Replaced, s.Failures, s.Disconnects)
	return s
}

func orDash(v float64) string {
	if v < 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func mibOrDash(b float64) string {
	if b < 0 {
		return "-"
	}
	return strconv.FormatFloat(b/(1<<20), 'f', 1, 64)
}

// finish totals the soak and judges it.
func (k *soakRun) finish() {
	r, ph, rec, p := k.res, k.ph, k.s.rec, k.pop
	lat := ph.Latency.Snapshot()
	r.Events, r.FailedEvents, r.Deliveries, r.Duplicates = ph.Sent.Load(), ph.Failed.Load(), ph.Distinct.Load(), ph.Dups.Load()
	r.Owed, r.Missing, r.OtherEvents, r.BadEvents = p.owed.Load(), p.missing.Load(), rec.Other.Load(), rec.BadEvents.Load()
	r.P99, r.Max = lat.Quantile(0.99), time.Duration(lat.Max)
	r.Replaced, r.Failures, r.FirstFailure = p.replaced.Load(), p.failures.Load(), p.firstFailure()
	r.ReconnectP99 = p.connectLat.Snapshot().Quantile(0.99)
	r.Unexpected, r.FirstUnexpected = p.unexpected.Load(), rec.FirstDisconnect()
	for _, s := range r.Samples[1:] {
		r.OtherCoresMean += s.OtherCores / float64(len(r.Samples)-1)
		r.OtherCoresMax = max(r.OtherCoresMax, s.OtherCores)
	}
	r.Verdict = judge(r.Reference, r.Final, r.Clients, k.cfg.goroutineTol, k.cfg.goroutineSlack, k.cfg.rssTol)
	r.SocketsMatch = r.Final.Sockets < 0 || int(r.Final.Sockets) == r.Clients
}

// markdown is the soak's summary: the final sample against the reference,
// the verdict, and the totals.
func (r *SoakResult) markdown() string {
	var sb strings.Builder
	ref, fin, v := r.Reference, r.Final, r.Verdict
	okStr := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "**grew**"
	}
	fmt.Fprintf(&sb, "| measure | after warm-up (%s) | end (%s) | change | limit | |\n|---|---:|---:|---:|---:|---|\n",
		ref.At.Round(time.Second), fin.At.Round(time.Second))
	fmt.Fprintf(&sb, "| connected clients | %d | %d | | %d | %s |\n", ref.Clients, fin.Clients, r.Clients,
		map[bool]string{true: "restored", false: "**not restored**"}[v.PopulationRestored])
	if ref.Sockets >= 0 && fin.Sockets >= 0 {
		fmt.Fprintf(&sb, "| server sockets | %.0f | %.0f | %+.0f | %d | %s |\n", ref.Sockets, fin.Sockets, fin.Sockets-ref.Sockets, r.Clients,
			map[bool]string{true: "ok", false: "**mismatch**"}[r.SocketsMatch])
	}
	fmt.Fprintf(&sb, "| server goroutines | %.0f | %.0f | %+.0f (%+.3f per client) | %+.0f | %s |\n",
		ref.Goroutines, fin.Goroutines, v.GoroutineDelta, v.GoroutinesPerConn, v.GoroutineLimit, okStr(v.GoroutinesFlat))
	fmt.Fprintf(&sb, "| server RSS (MiB) | %.1f | %.1f | %+.1f (%+.1f%%) | %+.0f%% | %s |\n",
		mib(ref.RSS), mib(fin.RSS), mib(v.RSSDelta), v.RSSDeltaPct, v.RSSLimitPct, okStr(v.RSSFlat))
	fmt.Fprintf(&sb, "| server heap in use (MiB) | %.1f | %.1f | %+.1f | | |\n", ref.HeapInuse/(1<<20), fin.HeapInuse/(1<<20), v.HeapDelta/(1<<20))
	if ref.LiveHeap >= 0 && fin.LiveHeap >= 0 {
		fmt.Fprintf(&sb, "| server heap live at the last GC (MiB) | %.1f | %.1f | %+.1f | | |\n", ref.LiveHeap/(1<<20), fin.LiveHeap/(1<<20), v.LiveHeapDelta/(1<<20))
	}
	fmt.Fprintf(&sb, "| server threads | %d | %d | %+d | | |\n", ref.Threads, fin.Threads, fin.Threads-ref.Threads)
	verdict := "**flat**"
	if !v.Flat {
		verdict = "**NOT flat**"
	}
	fmt.Fprintf(&sb, "\nVerdict: %s (goroutines within %+.0f, RSS within %+.0f%% of the sample after warm-up).\n\n", verdict, v.GoroutineLimit, v.RSSLimitPct)
	secs := r.Duration.Seconds()
	fmt.Fprintf(&sb, "| over the soak (%s, %d clients, %s events) | |\n|---|---:|\n", r.Duration, r.Clients, r.Kind)
	if r.Saturation > 0 {
		fmt.Fprintf(&sb, "| saturation measured first (deliveries/s) | %.0f |\n", r.Saturation)
	}
	fmt.Fprintf(&sb, "| deliveries/s asked | %.0f (%.1f events/s, %.1f recipients each) |\n", r.TargetRate, r.TargetRate/r.RecipientsPer, r.RecipientsPer)
	fmt.Fprintf(&sb, "| deliveries (per second of load) | %d (%.0f/s) |\n", r.Deliveries, float64(r.Deliveries)/secs)
	fmt.Fprintf(&sb, "| other events received: presence ... (per second) | %d (%.0f/s) |\n", r.OtherEvents, float64(r.OtherEvents)/secs)
	fmt.Fprintf(&sb, "| latency p99 / max (ms) | %.2f / %.2f |\n", float64(r.P99)/1e6, float64(r.Max)/1e6)
	fmt.Fprintf(&sb, "| events published / failed | %d / %d |\n", r.Events, r.FailedEvents)
	fmt.Fprintf(&sb, "| owed to connections in their rooms over an event's lifetime / missing | %d / %d |\n", r.Owed, r.Missing)
	fmt.Fprintf(&sb, "| duplicate deliveries | %d |\n", r.Duplicates)
	fmt.Fprintf(&sb, "| connections replaced (per second) | %d (%.1f/s) |\n", r.Replaced, float64(r.Replaced)/secs)
	fmt.Fprintf(&sb, "| reconnect p99: token, connect, subscribe, join (ms) | %.1f |\n", float64(r.ReconnectP99)/1e6)
	fmt.Fprintf(&sb, "| connect failures (each retried) | %d |\n", r.Failures)
	fmt.Fprintf(&sb, "| unexpected disconnects (replaced) | %d |\n", r.Unexpected)
	fmt.Fprintf(&sb, "| the rest of the machine, cores (mean / max of the samples) | %.2f / %.2f |\n", r.OtherCoresMean, r.OtherCoresMax)
	if r.FirstFailure != "" {
		fmt.Fprintf(&sb, "\nFirst connect failure: %s\n", r.FirstFailure)
	}
	if r.FirstUnexpected != "" {
		fmt.Fprintf(&sb, "\nFirst unexpected disconnect: %s\n", r.FirstUnexpected)
	}
	return sb.String()
}

// samplesMarkdown is the table of every sample.
func (r *SoakResult) samplesMarkdown() string {
	var sb strings.Builder
	sb.WriteString("| t | sample | clients | sockets | goroutines | heap MiB | live MiB | RSS MiB | server cores | other cores | deliveries/s | other events/s | p99 ms | replaced | failed | disconnects |\n")
	sb.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Samples {
		fmt.Fprintf(&sb, "| %s | %s | %d | %s | %.0f | %.1f | %s | %.1f | %.2f | %.2f | %.0f | %.0f | %.2f | %d | %d | %d |\n",
			s.At.Round(time.Second), s.Kind, s.Clients, orDash(s.Sockets), s.Goroutines, s.HeapInuse/(1<<20), mibOrDash(s.LiveHeap), mib(s.RSS),
			s.ServerCores, s.OtherCores, s.Rate, s.OtherRate, float64(s.P99)/1e6, s.Replaced, s.Failures, s.Disconnects)
	}
	return sb.String()
}
