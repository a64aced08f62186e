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

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime/internal/loadclient"
	"github.com/turumba/realtime/internal/rediskeys"
)

// compareConfig is compare's command line.
type compareConfig struct {
	ours, oursPort, basePort string
	load                     loadConfig
	idleClients              int
	idleAccounts             int
	connectClients           int
	logDir                   string
	mdOut                    string
	skip                     string
	repeat                   int
	oursRedis                string
}

// CompareResult holds every figure of one compare session.
type CompareResult struct {
	Started time.Time                   `json:"started"`
	Servers map[string]*ServerScenarios `json:"servers"`
}

// ServerScenarios are one server's results, one per repetition.
type ServerScenarios struct {
	Load  []LoadRun        `json:"load,omitempty"`
	Idle  []IdleResult     `json:"idle,omitempty"`
	RS256 []ConnectsResult `json:"connects_rs256,omitempty"`
}

// LoadRun is one open-loop phase and saturation ramp on one set of clients.
type LoadRun struct {
	Open       PhaseResult      `json:"open_loop"`
	Saturation SaturationResult `json:"saturation"`
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
	fs.DurationVar(&c.load.p99Limit, "p99-limit", 0, "saturation: a step fails above this p99 or injector lag (0: 20x the first step's median, at least 100ms)")
	fs.IntVar(&c.load.refine, "refine", 2, "saturation: bisection steps")
	fs.StringVar(&c.ours, "ours", "", "our binary (go build -o /tmp/rt ./cmd/turumba-realtime)")
	fs.StringVar(&c.oursPort, "ours-port", "3299", "our binary's port")
	fs.StringVar(&c.basePort, "baseline-port", "3298", "the baseline relay's port")
	fs.IntVar(&c.idleClients, "idle-clients", 5000, "clients of the idle-memory measurement")
	fs.IntVar(&c.idleAccounts, "idle-accounts", 0, "accounts of the idle-memory measurement (0: one per 5 clients, so that presence broadcasts stay small)")
	fs.IntVar(&c.connectClients, "connect-clients", 5000, "clients of the RS256 connects/s measurement")
	fs.StringVar(&c.logDir, "log-dir", os.TempDir(), "where the servers' output goes")
	fs.StringVar(&c.mdOut, "md", "", "also write the summary table (markdown) to this file")
	fs.StringVar(&c.skip, "skip", "", "comma-separated scenarios to skip: load, idle, rs256")
	fs.StringVar(&c.oursRedis, "ours-redis", "", "production mode: our server uses this Redis (loopback) for presence and the streams adapter, under its own key prefix; empty: in memory")
	fs.IntVar(&c.repeat, "repeat", 1, "run each scenario this many times, alternating the servers; the summary takes the best of them")
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
	redisEnv := []string{"REDIS_URL="}
	if c.oursRedis != "" {
		if err := loadclient.CheckLoopback(c.oursRedis); err != nil {
			return fmt.Errorf("-ours-redis: %w", err)
		}
		prefix := fmt.Sprintf("realtime-load-%d:", time.Now().UnixNano())
		redisEnv = []string{"REDIS_URL=" + c.oursRedis, "REDIS_KEY_PREFIX=" + prefix}
		defer forgetRedisPrefix(c.oursRedis, prefix, stdout)
	}
	quiet := append([]string{"LOG_LEVEL=warn", "RABBITMQ_URL="}, redisEnv...)
	if c.load.inject == "amqp" {
		queue := fmt.Sprintf("realtime-load-%d.events", time.Now().UnixNano())
		quiet = append([]string{"LOG_LEVEL=warn", "RABBITMQ_URL=" + c.load.amqpURL,
			"RABBITMQ_EXCHANGE=" + c.load.exchange, "RABBITMQ_QUEUE=" + queue}, redisEnv...)
		defer forgetQueue(c.load.amqpURL, queue, stdout)
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
			rsEnv: append([]string{"HOST=127.0.0.1", "LOG_LEVEL=warn", "RABBITMQ_URL=",
				"JWKS_URI=" + jwksURL(iss), "COGNITO_ISSUER=" + iss.Issuer}, redisEnv...)},
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

	for rep := 1; rep <= c.repeat; rep++ {
		tag := func(name string) string { return fmt.Sprintf("%s (%d/%d)", name, rep, c.repeat) }
		for _, s := range servers {
			if skip("load") {
				break
			}
			fmt.Fprintf(stdout, "\n== %s: %d clients, %d accounts, conversations of %d: open loop at %.0f deliveries/s, then saturation\n",
				tag(s.name), c.load.clients, c.load.accounts, c.load.convSize, c.load.rate)
			t, err := start(s, s.dev, s.env, "load")
			if err != nil {
				return err
			}
			open, sat, err := loadScenario(ctx, &c.load, t, stdout)
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Servers[s.name].Load = append(res.Servers[s.name].Load, LoadRun{Open: open, Saturation: sat})
		}
		for _, s := range servers {
			if skip("idle") {
				break
			}
			fmt.Fprintf(stdout, "\n== %s: %d idle clients (subscribed and joined)\n", tag(s.name), c.idleClients)
			t, err := start(s, s.dev, s.env, "idle")
			if err != nil {
				return err
			}
			lc := c.load
			lc.clients, lc.accounts, lc.settle = c.idleClients, c.idleAccounts, 5*time.Second
			if lc.accounts == 0 {
				lc.accounts = max(1, c.idleClients/5)
			}
			idle, err := doIdle(ctx, &lc, t, stdout)
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Servers[s.name].Idle = append(res.Servers[s.name].Idle, idle)
		}
		for _, s := range servers {
			if skip("rs256") {
				break
			}
			fmt.Fprintf(stdout, "\n== %s: %d connects with RS256 tokens\n", tag(s.name), c.connectClients)
			t, err := start(s, s.rs256, s.rsEnv, "rs256")
			if err != nil {
				return err
			}
			lc := c.load
			lc.clients = c.connectClients
			lc.iss = iss
			conn, err := doConnects(ctx, &lc, t, stdout)
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Servers[s.name].RS256 = append(res.Servers[s.name].RS256, conn)
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
	// Deliveries still missing now were lost, not late: the phases count a
	// delivery only until their drain ends.
	missing, extra := s.exactMissing()
	fmt.Fprintf(w, "  whole run: %d deliveries missing, %d unexpected; %d clients disconnected by the server %s\n",
		missing, extra, s.rec.Disconnects.Load(), s.rec.FirstDisconnect())
	return open, sat, err
}

// forgetRedisPrefix deletes what our servers left in Redis under the
// session's key prefix (the stream's retained entries and any presence).
func forgetRedisPrefix(url, prefix string, w io.Writer) {
	o, err := redis.ParseURL(url)
	if err != nil {
		fmt.Fprintf(w, "-ours-redis: %v; keys %s* were not deleted\n", err, prefix)
		return
	}
	rdb := redis.NewClient(o)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := rediskeys.DeletePrefix(ctx, rdb, prefix)
	if err != nil {
		fmt.Fprintf(w, "Redis: %v; delete the keys %s* by hand\n", err, prefix)
		return
	}
	fmt.Fprintf(w, "Redis: deleted the session's %d keys (%s*)\n", n, prefix)
}

// forgetQueue deletes the queue our servers consumed from in this session,
// with the dead-letter queue and exchange they declared beside it
// (amqpsource's defaults: queue + ".dead", queue + ".dlx").
func forgetQueue(url, queue string, w io.Writer) {
	if err := deleteTopology(url, queue); err != nil {
		fmt.Fprintf(w, "RabbitMQ: %v; delete the queues %s and %s.dead and the exchange %s.dlx by hand\n", err, queue, queue, queue)
		return
	}
	fmt.Fprintf(w, "RabbitMQ: deleted the session's queues %s, %s.dead and exchange %s.dlx\n", queue, queue, queue)
}

func deleteTopology(url, queue string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, q := range []string{queue, queue + ".dead"} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("delete queue %s: %w", q, err)
		}
	}
	if err := ch.ExchangeDelete(queue+".dlx", false, false); err != nil {
		return fmt.Errorf("delete exchange %s.dlx: %w", queue, err)
	}
	return nil
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
// baseline measured in the same session. Each figure is the best over the
// repetitions: other processes on the machine only ever make a figure worse.
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
	us := func(d time.Duration) float64 { return float64(d) / 1e6 } // per 1,000 deliveries -> us per delivery
	msf := func(d time.Duration) float64 { return float64(d) / 1e6 }
	both := func(f func(*ServerScenarios) float64) (float64, float64) { return f(b), f(o) }
	sat := func(s *ServerScenarios) (out []*PhaseResult) {
		for i := range s.Load {
			if s.Load[i].Saturation.Best != nil {
				out = append(out, s.Load[i].Saturation.Best)
			}
		}
		return out
	}
	// The saturation row's companions come from the same step: the fastest.
	fastest := func(s *ServerScenarios) *PhaseResult {
		var f *PhaseResult
		for _, p := range sat(s) {
			if f == nil || p.Rate > f.Rate {
				f = p
			}
		}
		return f
	}
	if bs, ob := fastest(b), fastest(o); bs != nil && ob != nil {
		row("deliveries/s at saturation", bs.Rate, ob.Rate, "%.0f")
		row("server CPU per delivery at saturation (us)", us(bs.CPUPer1k), us(ob.CPUPer1k), "%.2f")
		row("p99 at saturation (ms)", msf(bs.P99), msf(ob.P99), "%.2f")
	}
	if len(b.Load) > 0 && len(o.Load) > 0 {
		name := fmt.Sprintf("at %.0f deliveries/s", rate)
		open := func(f func(PhaseResult) float64) func(*ServerScenarios) float64 {
			return func(s *ServerScenarios) float64 {
				return pick(s.Load, func(l LoadRun) float64 { return f(l.Open) }, less)
			}
		}
		bv, ov := both(open(func(p PhaseResult) float64 { return us(p.CPUPer1k) }))
		row("server CPU per delivery "+name+" (us)", bv, ov, "%.2f")
		bv, ov = both(open(func(p PhaseResult) float64 { return msf(p.P50) }))
		row("p50 "+name+" (ms)", bv, ov, "%.2f")
		bv, ov = both(open(func(p PhaseResult) float64 { return msf(p.P99) }))
		row("p99 "+name+" (ms)", bv, ov, "%.2f")
		bv, ov = both(open(func(p PhaseResult) float64 { return p.AllocBytesPerDelivery }))
		row("server bytes allocated per delivery "+name, bv, ov, "%.0f")
		bv, ov = both(open(func(p PhaseResult) float64 { return p.AllocsPerDelivery }))
		row("server allocations per delivery "+name, bv, ov, "%.1f")
		bv, ov = both(open(func(p PhaseResult) float64 { return float64(p.Missing + p.Duplicates) }))
		row("missing + duplicate deliveries "+name, bv, ov, "%.0f")
	}
	if len(b.Idle) > 0 && len(o.Idle) > 0 {
		idle := func(f func(IdleResult) float64, better func(a, b float64) bool) func(*ServerScenarios) float64 {
			return func(s *ServerScenarios) float64 { return pick(s.Idle, f, better) }
		}
		bv, ov := both(idle(func(i IdleResult) float64 { return i.RSSPerConn / 1000 }, less))
		row("RSS per idle connection (KB)", bv, ov, "%.1f")
		bv, ov = both(idle(func(i IdleResult) float64 { return i.HeapPerConn / 1000 }, less))
		row("heap in use per idle connection (KB)", bv, ov, "%.1f")
		bv, ov = both(idle(func(i IdleResult) float64 { return i.GoroutinesPerConn }, less))
		row("goroutines per idle connection", bv, ov, "%.2f")
		bv, ov = both(idle(func(i IdleResult) float64 { return i.ConnectsPerSec }, more))
		row("ready/s (connect with HS256, subscribe, join)", bv, ov, "%.0f")
		failed := func(s *ServerScenarios) (n float64) {
			for _, i := range s.Idle {
				n += float64(i.Failed)
			}
			for _, c := range s.RS256 {
				n += float64(c.Failed)
			}
			return n
		}
		row("failed connects, all repetitions", failed(b), failed(o), "%.0f")
	}
	if len(b.RS256) > 0 && len(o.RS256) > 0 {
		rs := func(f func(ConnectsResult) float64, better func(a, b float64) bool) func(*ServerScenarios) float64 {
			return func(s *ServerScenarios) float64 { return pick(s.RS256, f, better) }
		}
		bv, ov := both(rs(func(c ConnectsResult) float64 { return c.PerSec }, more))
		row("connects/s (RS256)", bv, ov, "%.0f")
		bv, ov = both(rs(func(c ConnectsResult) float64 { return c.ServerMS }, less))
		row("server CPU per RS256 connect (ms)", bv, ov, "%.3f")
	}
	return sb.String()
}

func less(a, b float64) bool { return a < b }
func more(a, b float64) bool { return a > b }

// pick is the best value of f over runs.
func pick[T any](runs []T, f func(T) float64, better func(a, b float64) bool) float64 {
	var v float64
	for i, r := range runs {
		if x := f(r); i == 0 || better(x, v) {
			v = x
		}
	}
	return v
}
