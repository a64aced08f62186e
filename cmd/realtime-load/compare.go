package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/turumba/realtime/internal/loadclient"
)

// compareConfig is compare's command line.
type compareConfig struct {
	ours, oursPort, basePort string
	load                     loadConfig
	idleClients              int
	connectClients           int
	logDir                   string
	mdOut                    string
	skip                     string
}

// CompareResult holds every figure of one compare session.
type CompareResult struct {
	Started time.Time                   `json:"started"`
	Servers map[string]*ServerScenarios `json:"servers"`
}

// ServerScenarios are one server's results.
type ServerScenarios struct {
	Open       *PhaseResult      `json:"open_loop,omitempty"`
	Saturation *SaturationResult `json:"saturation,omitempty"`
	Idle       *IdleResult       `json:"idle,omitempty"`
	RS256      *ConnectsResult   `json:"connects_rs256,omitempty"`
}

func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("realtime-load compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c compareConfig
	c.load.register(fs, "run")
	tf := fs.Lookup("timeout")
	tf.DefValue = "30m"
	_ = tf.Value.Set(tf.DefValue)
	// saturate's flags, registered by hand as run owns -duration and -rate.
	fs.Float64Var(&c.load.startRate, "start-rate", 10000, "saturation: first step's deliveries per second")
	fs.Float64Var(&c.load.factor, "factor", 1.25, "saturation: rate multiplier per passing step")
	fs.Float64Var(&c.load.maxRate, "max-rate", 2_000_000, "saturation: highest rate asked")
	fs.DurationVar(&c.load.step, "step", 5*time.Second, "saturation: duration of one step")
	fs.DurationVar(&c.load.p99Limit, "p99-limit", 50*time.Millisecond, "saturation: a step fails above this p99 (or injector lag)")
	fs.IntVar(&c.load.refine, "refine", 2, "saturation: bisection steps")
	fs.StringVar(&c.ours, "ours", "", "our binary (go build -o /tmp/rt ./cmd/turumba-realtime)")
	fs.StringVar(&c.oursPort, "ours-port", "3299", "our binary's port")
	fs.StringVar(&c.basePort, "baseline-port", "3298", "the baseline relay's port")
	fs.IntVar(&c.idleClients, "idle-clients", 5000, "clients of the idle-memory measurement")
	fs.IntVar(&c.connectClients, "connect-clients", 5000, "clients of the RS256 connects/s measurement")
	fs.StringVar(&c.logDir, "log-dir", os.TempDir(), "where the servers' output goes")
	fs.StringVar(&c.mdOut, "md", "", "also write the summary table (markdown) to this file")
	fs.StringVar(&c.skip, "skip", "", "comma-separated scenarios to skip: load, idle, rs256")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.ours == "" {
		return errors.New("-ours is required: go build -o /tmp/rt ./cmd/turumba-realtime")
	}
	if err := c.load.validate(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.load.timeout)
	defer cancel()
	limit, err := raiseLimit(max(c.load.clients, c.idleClients, c.connectClients))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "realtime-load compare: %s, %d CPUs, GOMAXPROCS %d, open-file limit %d\n",
		time.Now().Format(time.RFC3339), runtime.NumCPU(), runtime.GOMAXPROCS(0), limit)

	iss, stopJWKS, err := serveJWKS()
	if err != nil {
		return err
	}
	defer stopJWKS()
	quiet := []string{"LOG_LEVEL=warn", "RABBITMQ_URL=", "REDIS_URL="}
	if c.load.inject == "amqp" {
		quiet = []string{"LOG_LEVEL=warn", "REDIS_URL=", "RABBITMQ_URL=" + c.load.amqpURL,
			"RABBITMQ_EXCHANGE=" + c.load.exchange, "RABBITMQ_QUEUE=realtime-load.events"}
	}
	type server struct {
		name       string
		dev, rs256 []string
		env        []string
		rsEnv      []string
		port       string
	}
	baseDev := []string{self, "baseline", "-port", c.basePort}
	if c.load.inject == "amqp" {
		baseDev = append(baseDev, "-amqp-url", c.load.amqpURL, "-exchange", c.load.exchange)
	}
	servers := []server{
		{name: "baseline", port: c.basePort, dev: baseDev,
			rs256: []string{self, "baseline", "-port", c.basePort, "-verify", "rs256", "-jwks-url", jwksURL(iss), "-issuer", iss.Issuer}},
		{name: "ours", port: c.oursPort, dev: []string{c.ours, "-dev", "-port", c.oursPort}, env: quiet,
			rs256: []string{c.ours, "-port", c.oursPort},
			rsEnv: []string{"HOST=127.0.0.1", "LOG_LEVEL=warn", "RABBITMQ_URL=", "REDIS_URL=",
				"JWKS_URI=" + jwksURL(iss), "COGNITO_ISSUER=" + iss.Issuer}},
	}
	res := CompareResult{Started: time.Now(), Servers: map[string]*ServerScenarios{}}
	for _, s := range servers {
		res.Servers[s.name] = &ServerScenarios{}
	}
	skip := func(name string) bool { return strings.Contains(","+c.skip+",", ","+name+",") }
	start := func(s server, args, env []string, tag string) (*target, error) {
		t, err := newTarget(ctx, "http://127.0.0.1:"+s.port, 0, args, env, fmt.Sprintf("%s/realtime-load-%s-%s.log", c.logDir, s.name, tag))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		return t, nil
	}

	if !skip("load") {
		for _, s := range servers {
			fmt.Fprintf(stdout, "\n== %s: %d clients, %d accounts, conversations of %d: open loop at %.0f deliveries/s, then saturation\n",
				s.name, c.load.clients, c.load.accounts, c.load.convSize, c.load.rate)
			t, err := start(s, s.dev, s.env, "load")
			if err != nil {
				return err
			}
			open, sat, err := loadScenario(ctx, &c.load, t, stdout)
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Servers[s.name].Open, res.Servers[s.name].Saturation = &open, &sat
		}
	}
	if !skip("idle") {
		for _, s := range servers {
			fmt.Fprintf(stdout, "\n== %s: %d idle clients (subscribed and joined)\n", s.name, c.idleClients)
			t, err := start(s, s.dev, s.env, "idle")
			if err != nil {
				return err
			}
			lc := c.load
			lc.clients, lc.settle = c.idleClients, 5*time.Second
			idle, err := doIdle(ctx, &lc, t, stdout)
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Servers[s.name].Idle = &idle
		}
	}
	if !skip("rs256") {
		for _, s := range servers {
			fmt.Fprintf(stdout, "\n== %s: %d connects with RS256 tokens\n", s.name, c.connectClients)
			t, err := start(s, s.rs256, s.rsEnv, "rs256")
			if err != nil {
				return err
			}
			lc := c.load
			lc.clients = c.connectClients
			conn, err := doConnects(ctx, &lc, t, iss, stdout)
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Servers[s.name].RS256 = &conn
		}
	}
	table := summary(&res, c.load.rate)
	fmt.Fprintf(stdout, "\n%s", table)
	if c.mdOut != "" {
		if err := os.WriteFile(c.mdOut, []byte(table), 0o644); err != nil {
			return err
		}
	}
	return writeJSON(c.load.jsonOut, res)
}

// loadScenario runs the open-loop phase and the saturation ramp on one set
// of clients.
func loadScenario(ctx context.Context, c *loadConfig, t *target, w io.Writer) (PhaseResult, SaturationResult, error) {
	s, err := loaded(ctx, c, t, w)
	if err != nil {
		return PhaseResult{}, SaturationResult{}, err
	}
	defer s.close()
	if c.warmup > 0 {
		s.phase(ctx, "warmup", c.rate, c.warmup, 5*time.Second).print(w)
	}
	open := s.phase(ctx, "open loop", c.rate, c.duration, 10*time.Second)
	open.print(w)
	s.settle(ctx)
	lc := *c
	lc.warmup = 0
	s.cfg = &lc
	sat, err := s.saturate(ctx, w)
	return open, sat, err
}

func raiseLimit(clients int) (uint64, error) {
	limit, err := loadclient.RaiseFileLimit()
	if err != nil {
		return 0, err
	}
	if need := uint64(clients) + 256; need > limit {
		return limit, fmt.Errorf("%d clients need %d open files; the limit is %d (ulimit -Hn)", clients, need, limit)
	}
	return limit, nil
}

// summary is the markdown table of a compare session, ours as a ratio of the
// baseline measured in the same session.
func summary(r *CompareResult, rate float64) string {
	b, o := r.Servers["baseline"], r.Servers["ours"]
	var sb strings.Builder
	sb.WriteString("| measure | baseline | ours | ours / baseline |\n|---|---:|---:|---:|\n")
	row := func(name string, bv, ov float64, format string) {
		if bv == 0 && ov == 0 {
			return
		}
		ratio := "n/a"
		if bv != 0 {
			ratio = fmt.Sprintf("%.2fx", ov/bv)
		}
		fmt.Fprintf(&sb, "| %s | "+format+" | "+format+" | %s |\n", name, bv, ov, ratio)
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	msf := func(d time.Duration) float64 { return float64(d) / 1e6 }
	if b.Saturation != nil && o.Saturation != nil && b.Saturation.Best != nil && o.Saturation.Best != nil {
		bs, ob := b.Saturation.Best, o.Saturation.Best
		row("deliveries/s at saturation", bs.Rate, ob.Rate, "%.0f")
		row("server CPU per delivery at saturation (us)", us(bs.CPUPer1k)/1000, us(ob.CPUPer1k)/1000, "%.2f")
		row("p99 at saturation (ms)", msf(bs.P99), msf(ob.P99), "%.2f")
	}
	if b.Open != nil && o.Open != nil {
		name := fmt.Sprintf("at %.0f deliveries/s", rate)
		row("server CPU per delivery "+name+" (us)", us(b.Open.CPUPer1k)/1000, us(o.Open.CPUPer1k)/1000, "%.2f")
		row("server cores "+name, b.Open.ServerCores, o.Open.ServerCores, "%.2f")
		row("p50 "+name+" (ms)", msf(b.Open.P50), msf(o.Open.P50), "%.2f")
		row("p99 "+name+" (ms)", msf(b.Open.P99), msf(o.Open.P99), "%.2f")
		row("max "+name+" (ms)", msf(b.Open.Max), msf(o.Open.Max), "%.2f")
		row("missing + duplicate deliveries "+name, float64(b.Open.Missing+b.Open.Duplicates), float64(o.Open.Missing+o.Open.Duplicates), "%.0f")
	}
	if b.Idle != nil && o.Idle != nil {
		row("RSS per idle connection (KB)", b.Idle.RSSPerConn/1000, o.Idle.RSSPerConn/1000, "%.1f")
		row("ready/s (connect, HS256, subscribe, join)", b.Idle.ConnectsPerSec, o.Idle.ConnectsPerSec, "%.0f")
	}
	if b.RS256 != nil && o.RS256 != nil {
		row("connects/s (RS256)", b.RS256.PerSec, o.RS256.PerSec, "%.0f")
		row("server CPU per RS256 connect (ms)", b.RS256.ServerMS, o.RS256.ServerMS, "%.3f")
	}
	return sb.String()
}
