package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/turumba/realtime/internal/loadclient"
	"github.com/turumba/realtime/internal/loadstats"
)

// Bounds every run stays within, whatever the flags say.
const (
	maxClients  = 100_000
	maxDuration = time.Hour
)

// loadConfig is the command line of run, saturate, idle and connects.
type loadConfig struct {
	target    string
	pid       int
	server    string
	serverEnv multiFlag
	serverLog string

	clients, accounts, convSize int
	kind                        string
	inject                      string
	amqpURL, exchange           string
	confirm                     bool
	posters                     int
	concurrency                 int
	sources                     int
	readBuffer                  int
	timeout                     time.Duration
	jsonOut                     string

	rate              float64
	duration, warmup  time.Duration
	profileURL        string
	profileOut        string
	startRate, factor float64
	maxRate           float64
	step              time.Duration
	p99Limit          time.Duration
	refine            int

	settle, hold time.Duration
	rs256        bool
	// iss mints the clients' tokens when set (-rs256); otherwise they
	// come from the target's GET /dev/token.
	iss *loadclient.RSAIssuer

	quietCores float64
	quietWait  time.Duration
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (c *loadConfig) register(fs *flag.FlagSet, cmd string) {
	fs.StringVar(&c.target, "target", "http://127.0.0.1:3299", "server base URL (loopback only)")
	fs.IntVar(&c.pid, "pid", 0, "server process id, for CPU and memory from /proc (or use -server)")
	fs.StringVar(&c.server, "server", "", "start the server with this command (split on spaces) and stop it at the end")
	fs.Var(&c.serverEnv, "server-env", "KEY=VALUE added to the started server's environment (repeatable)")
	fs.StringVar(&c.serverLog, "server-log", "", "file for the started server's output (default: discarded)")
	fs.IntVar(&c.clients, "clients", 1000, "clients (connections)")
	fs.IntVar(&c.accounts, "accounts", 10, "accounts; client i is in account i%accounts")
	fs.IntVar(&c.convSize, "conv-size", 5, "agents per conversation within an account")
	fs.IntVar(&c.concurrency, "concurrency", 64, "connections being set up at once")
	fs.IntVar(&c.sources, "sources", 0, "loopback source addresses 127.0.0.2... (0: one per 20,000 clients)")
	fs.IntVar(&c.readBuffer, "read-buffer", 4096, "client read buffer, bytes")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "the whole run stops after this")
	fs.StringVar(&c.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.Float64Var(&c.quietCores, "quiet-cores", 0.25, "before each measured phase, wait until the rest of the machine uses at most this many cores (0: do not wait)")
	fs.DurationVar(&c.quietWait, "quiet-wait", time.Minute, "the longest wait for -quiet-cores")
	fs.BoolVar(&c.rs256, "rs256", false, "mint RS256 tokens and serve their JWKS ({jwks} and {issuer} in -server and -server-env are replaced)")
	if cmd == "run" || cmd == "saturate" {
		fs.StringVar(&c.kind, "kind", "account", "events: account (conversation.created to the account room) or conversation (conversation.message.created: conversation and account rooms)")
		fs.StringVar(&c.inject, "inject", "http", "inject events through http (POST /dev/events) or amqp")
		fs.StringVar(&c.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672", "RabbitMQ for -inject amqp (loopback only)")
		fs.StringVar(&c.exchange, "exchange", "realtime-load.messaging", "topic exchange for -inject amqp (the server must consume from it)")
		fs.BoolVar(&c.confirm, "confirm", false, "with -inject amqp, wait for the broker's publisher confirm of each event")
		fs.IntVar(&c.posters, "posters", 8, "concurrent injectors")
		fs.DurationVar(&c.warmup, "warmup", 3*time.Second, "unmeasured load before measuring")
	}
	switch cmd {
	case "run":
		fs.Float64Var(&c.rate, "rate", 20000, "target deliveries per second (events/s times recipients per event)")
		fs.DurationVar(&c.duration, "duration", 30*time.Second, "measured duration")
		fs.StringVar(&c.profileURL, "profile-url", "", "fetch a CPU profile from this pprof URL during the measured phase (loopback)")
		fs.StringVar(&c.profileOut, "profile-out", "cpu.pprof", "where -profile-url's profile is written")
	case "saturate":
		fs.Float64Var(&c.startRate, "start-rate", 10000, "first step's deliveries per second")
		fs.Float64Var(&c.factor, "factor", 1.25, "each passing step multiplies the rate by this")
		fs.Float64Var(&c.maxRate, "max-rate", 2_000_000, "never ask for more deliveries per second than this")
		fs.DurationVar(&c.step, "step", 5*time.Second, "duration of one step")
		fs.DurationVar(&c.p99Limit, "p99-limit", 0, "a step fails when p99 latency or injector lag exceeds this (0: 20x the first step's median, at least 100ms)")
		fs.IntVar(&c.refine, "refine", 2, "bisection steps between the last passing and the first failing rate")
	case "idle":
		fs.DurationVar(&c.settle, "settle", 5*time.Second, "wait after the last connect before reading the server's memory")
		fs.DurationVar(&c.hold, "hold", 0, "keep the idle connections this long and report any dropped")
	}
}

func (c *loadConfig) layout() loadclient.Layout {
	return loadclient.Layout{Clients: c.clients, Accounts: c.accounts, ConvSize: c.convSize}
}

func (c *loadConfig) validate() error {
	if err := c.layout().Validate(); err != nil {
		return err
	}
	if c.clients > maxClients {
		return fmt.Errorf("-clients %d exceeds the tool's bound of %d", c.clients, maxClients)
	}
	if c.timeout <= 0 || c.timeout > maxDuration {
		return fmt.Errorf("-timeout must be in (0, %s]", maxDuration)
	}
	if c.duration > maxDuration || c.hold > maxDuration {
		return fmt.Errorf("-duration and -hold are bounded by %s", maxDuration)
	}
	if c.concurrency < 1 || c.readBuffer < 256 {
		return errors.New("-concurrency must be >= 1 and -read-buffer >= 256")
	}
	if c.inject == "amqp" {
		if err := loadclient.CheckLoopback(c.amqpURL); err != nil {
			return err
		}
	} else if c.inject != "" && c.inject != "http" {
		return fmt.Errorf("-inject %q: want http or amqp", c.inject)
	}
	if c.profileURL != "" {
		if err := loadclient.CheckLoopback(c.profileURL); err != nil {
			return err
		}
	}
	return nil
}

func runLoad(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("realtime-load "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c loadConfig
	c.register(fs, cmd)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	limit, err := raiseLimit(c.clients)
	if err != nil {
		return err
	}

	env := append([]string(nil), c.serverEnv...)
	command := strings.Fields(c.server)
	var issuer *loadclient.RSAIssuer
	if c.rs256 {
		var stopJWKS func()
		issuer, stopJWKS, err = serveJWKS()
		if err != nil {
			return err
		}
		defer stopJWKS()
		command, env = substitute(command, issuer), substitute(env, issuer)
		c.iss = issuer
	}
	t, err := newTarget(ctx, c.target, c.pid, command, env, c.serverLog)
	if err != nil {
		return err
	}
	defer t.stop()
	fmt.Fprintf(stdout, "realtime-load %s: target %s (pid %d), %d clients, %d accounts, conversations of %d, GOMAXPROCS %d, open-file limit %d\n",
		cmd, t.base, t.pid, c.clients, c.accounts, c.convSize, runtime.GOMAXPROCS(0), limit)

	var res any
	switch cmd {
	case "run":
		res, err = doRun(ctx, &c, t, stdout)
	case "saturate":
		res, err = doSaturate(ctx, &c, t, stdout)
	case "idle":
		res, err = doIdle(ctx, &c, t, stdout)
	case "connects":
		res, err = doConnects(ctx, &c, t, stdout)
	}
	if err != nil {
		return err
	}
	return writeJSON(c.jsonOut, res)
}

func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// serveJWKS makes an RS256 issuer and serves its JWKS on loopback.
func serveJWKS() (*loadclient.RSAIssuer, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	iss, err := loadclient.NewRSAIssuer("http://" + ln.Addr().String() + "/issuer")
	if err != nil {
		_ = ln.Close()
		return nil, nil, err
	}
	srv := &http.Server{Handler: iss, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return iss, func() { _ = srv.Close() }, nil
}

func jwksURL(iss *loadclient.RSAIssuer) string {
	return strings.TrimSuffix(iss.Issuer, "/issuer") + "/.well-known/jwks.json"
}

// substitute replaces {jwks} and {issuer} in each string.
func substitute(in []string, iss *loadclient.RSAIssuer) []string {
	r := strings.NewReplacer("{jwks}", jwksURL(iss), "{issuer}", iss.Issuer)
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = r.Replace(s)
	}
	return out
}

// session is a set of connected clients and the means to load them.
type session struct {
	cfg      *loadConfig
	t        *target
	rec      *loadclient.Recorder
	dialer   *loadclient.Dialer
	hc       *http.Client
	clients  []*loadclient.Client
	driver   *loadclient.Driver
	posters  []loadclient.Poster
	amqpConn *amqp.Connection
	out      io.Writer
}

func newSession(c *loadConfig, t *target, out io.Writer) (*session, error) {
	n := c.sources
	if n == 0 {
		n = loadclient.SourcesFor(c.clients)
	}
	d, err := loadclient.NewDialer(n, 10*time.Second)
	if err != nil {
		return nil, err
	}
	posters := max(c.posters, 1)
	hc := &http.Client{Transport: loadclient.NewHTTPTransport(d, posters+16), Timeout: 30 * time.Second}
	return &session{cfg: c, t: t, rec: &loadclient.Recorder{}, dialer: d, hc: hc, out: out}, nil
}

// tokens gets one token per client: from the server's /dev/token, or minted.
func (s *session) tokens(ctx context.Context) ([]string, error) {
	if iss := s.cfg.iss; iss != nil {
		return iss.MintAll(ctx, s.cfg.layout(), 2*time.Hour, runtime.GOMAXPROCS(0))
	}
	return loadclient.DevTokens(ctx, s.hc, s.t.base, s.cfg.layout(), 2*time.Hour)
}

func (s *session) connect(ctx context.Context, tokens []string, join bool) (loadclient.ConnectResult, error) {
	o := loadclient.ConnectOptions{Addr: s.t.addr, ReadBuffer: s.cfg.readBuffer, Timeout: 15 * time.Second}
	res := loadclient.ConnectAll(ctx, s.dialer, o, s.cfg.layout(), s.rec, tokens, 0, s.cfg.clients, s.cfg.concurrency, join)
	s.clients = append(s.clients, res.Clients...)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	// A few failures are a finding, not a reason to stop: they are reported
	// and the connected clients are measured (nothing is owed to the others).
	if res.Failed > 0 {
		err := fmt.Errorf("%d of %d clients failed to connect; first: %w", res.Failed, res.Attempts, res.FirstErr)
		if res.Failed*100 > res.Attempts {
			return res, err
		}
		fmt.Fprintf(s.out, "  WARNING: %v\n", err)
	}
	return res, nil
}

// prepareLoad sets up the injector for the connected clients.
func (s *session) prepareLoad() error {
	kind, err := loadclient.ParseKind(s.cfg.kind)
	if err != nil {
		return err
	}
	for i := 0; i < max(s.cfg.posters, 1); i++ {
		var p loadclient.Poster
		if s.cfg.inject == "amqp" {
			if s.amqpConn == nil {
				if s.amqpConn, err = amqp.Dial(s.cfg.amqpURL); err != nil {
					return fmt.Errorf("amqp: %w", err)
				}
			}
			if p, err = loadclient.NewAMQPPoster(s.amqpConn, s.cfg.exchange, s.cfg.confirm); err != nil {
				return err
			}
		} else {
			p = loadclient.NewHTTPPoster(s.hc, s.t.base)
		}
		s.posters = append(s.posters, p)
	}
	s.driver = loadclient.NewDriver(s.cfg.layout(), kind, s.posters, s.clients)
	return nil
}

func (s *session) close() {
	loadclient.CloseAll(s.clients)
	s.clients = nil
	for _, p := range s.posters {
		_ = p.Close()
	}
	if s.amqpConn != nil {
		_ = s.amqpConn.Close()
	}
	s.hc.CloseIdleConnections()
}

// PhaseResult is one measured interval of load.
type PhaseResult struct {
	Name         string        `json:"name"`
	TargetRate   float64       `json:"target_deliveries_per_s"`
	Rate         float64       `json:"deliveries_per_s"`
	Window       time.Duration `json:"window_ns"`
	Events       uint64        `json:"events"`
	FailedEvents uint64        `json:"failed_events"`
	Expected     uint64        `json:"expected_deliveries"`
	Delivered    uint64        `json:"deliveries"`
	Missing      uint64        `json:"missing"`
	Duplicates   uint64        `json:"duplicates"`
	P50          time.Duration `json:"p50_ns"`
	P90          time.Duration `json:"p90_ns"`
	P99          time.Duration `json:"p99_ns"`
	P999         time.Duration `json:"p999_ns"`
	Max          time.Duration `json:"max_ns"`
	LagP99       time.Duration `json:"injector_lag_p99_ns"`
	ServerCPU    time.Duration `json:"server_cpu_ns"`
	CPUPer1k     time.Duration `json:"server_cpu_per_1000_deliveries_ns"`
	ServerCores  float64       `json:"server_cores"`
	ToolCores    float64       `json:"tool_cores"`
	OtherCores   float64       `json:"other_cores"` // the rest of the machine: noise

	ServerRSS int64 `json:"server_rss_bytes"`
	// From the server's /metrics (both servers serve them).
	AllocBytesPerDelivery float64 `json:"server_alloc_bytes_per_delivery,omitempty"`
	AllocsPerDelivery     float64 `json:"server_allocs_per_delivery,omitempty"`
	GCs                   int     `json:"server_gcs,omitempty"`
	Passed                bool    `json:"passed,omitempty"`
	Disconnects           uint64  `json:"disconnects"`
	FirstDisconnect       string  `json:"first_disconnect,omitempty"`
}

// phase publishes at rate deliveries/s for dur, waits for the deliveries
// (at most drain after the last publish, or until none arrive for a second),
// and measures.
func (s *session) phase(ctx context.Context, name string, rate float64, dur, drain time.Duration) PhaseResult {
	waitQuiet(ctx, s.t, s.cfg.quietCores, s.cfg.quietWait, s.out)
	disc0 := s.rec.Disconnects.Load()
	srv0, okSrv := s.t.proc()
	self0, _ := loadstats.ReadProc(os.Getpid())
	mach0, _ := loadstats.MachineCPU()
	rt0 := s.t.runtimeMetrics(ctx)
	ph := s.rec.Begin(name)
	s.driver.Run(ctx, ph, rate/s.driver.RecipientsPerEvent(), dur)
	sendEnd := time.Now()
	done := sendEnd
	last, lastChange := ph.Distinct.Load(), time.Now()
	for {
		d, now := ph.Distinct.Load(), time.Now()
		if d >= ph.Expected.Load() {
			done = now
			break
		}
		if d != last {
			last, lastChange = d, now
		}
		if now.Sub(lastChange) > time.Second || now.Sub(sendEnd) > drain || ctx.Err() != nil {
			done = lastChange
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if done.Before(sendEnd) {
		done = sendEnd
	}
	srv1, _ := s.t.proc()
	self1, _ := loadstats.ReadProc(os.Getpid())
	mach1, _ := loadstats.MachineCPU()
	rt1 := s.t.runtimeMetrics(ctx)
	lat := ph.Latency.Snapshot()
	r := PhaseResult{
		Name: name, TargetRate: rate, Window: done.Sub(ph.Start),
		Events: ph.Sent.Load(), FailedEvents: ph.Failed.Load(), Expected: ph.Expected.Load(),
		Delivered: ph.Distinct.Load(), Missing: ph.Missing(), Duplicates: ph.Dups.Load(),
		P50: lat.Quantile(0.5), P90: lat.Quantile(0.9), P99: lat.Quantile(0.99), P999: lat.Quantile(0.999),
		Max: time.Duration(lat.Max), LagP99: ph.Lag.Snapshot().Quantile(0.99),
		Disconnects: s.rec.Disconnects.Load() - disc0,
	}
	if r.Disconnects > 0 {
		r.FirstDisconnect = s.rec.FirstDisconnect()
	}
	secs := r.Window.Seconds()
	r.Rate = float64(r.Delivered) / secs
	if r.Delivered > 0 {
		if b, ok := rt1.delta(rt0, "go_memstats_alloc_bytes_total"); ok {
			r.AllocBytesPerDelivery = b / float64(r.Delivered)
		}
		if n, ok := rt1.delta(rt0, "go_memstats_mallocs_total"); ok {
			r.AllocsPerDelivery = n / float64(r.Delivered)
		}
		if n, ok := rt1.delta(rt0, "go_gc_duration_seconds_count"); ok {
			r.GCs = int(n)
		}
	}
	wall := self1.At.Sub(self0.At).Seconds()
	if wall > 0 {
		r.ToolCores = (self1.CPU - self0.CPU).Seconds() / wall
		r.OtherCores = (mach1-mach0).Seconds()/wall - r.ToolCores
	}
	if okSrv {
		r.ServerCPU = srv1.CPU - srv0.CPU
		r.ServerRSS = srv1.RSS
		if wall > 0 {
			r.ServerCores = r.ServerCPU.Seconds() / wall
			r.OtherCores -= r.ServerCores
		}
		if r.Delivered > 0 {
			r.CPUPer1k = time.Duration(float64(r.ServerCPU) * 1000 / float64(r.Delivered))
		}
	}
	return r
}

func (r PhaseResult) print(w io.Writer) {
	fmt.Fprintf(w, "  %-14s target %8.0f/s  got %8.0f/s  events %6d  missing %d  dup %d  failed %d  lat p50 %s p90 %s p99 %s max %s  lag p99 %s",
		r.Name, r.TargetRate, r.Rate, r.Events, r.Missing, r.Duplicates, r.FailedEvents,
		ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max), ms(r.LagP99))
	if r.ServerCPU > 0 {
		fmt.Fprintf(w, "  server %.2f cores, %s CPU/1k deliveries", r.ServerCores, ms(r.CPUPer1k))
	}
	if r.AllocsPerDelivery > 0 {
		fmt.Fprintf(w, ", %.0f B in %.1f allocs per delivery, %d GCs", r.AllocBytesPerDelivery, r.AllocsPerDelivery, r.GCs)
	}
	fmt.Fprintf(w, "  tool %.2f cores, others %.2f", r.ToolCores, max(r.OtherCores, 0))
	if r.Disconnects > 0 {
		fmt.Fprintf(w, "  DISCONNECTS %d", r.Disconnects)
	}
	if r.FirstDisconnect != "" {
		fmt.Fprintf(w, " (first: %s)", r.FirstDisconnect)
	}
	fmt.Fprintln(w)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

// waitQuiet waits until the processes other than the server and this tool
// use at most cores of the machine, sampled over half a second, or until
// wait has passed. On a shared machine this keeps other people's builds out
// of the measurements where it can; what remains shows as "others".
func waitQuiet(ctx context.Context, t *target, cores float64, wait time.Duration, w io.Writer) {
	if cores <= 0 {
		return
	}
	start := time.Now()
	for ctx.Err() == nil {
		others, err := otherCores(t, 500*time.Millisecond)
		if err != nil || others <= cores {
			break
		}
		if time.Since(start) > wait {
			fmt.Fprintf(w, "  (the machine stayed busy: others use %.2f cores; measuring anyway)\n", others)
			return
		}
	}
	if waited := time.Since(start); waited > time.Second {
		fmt.Fprintf(w, "  (waited %s for the machine to quiet down)\n", waited.Round(time.Second))
	}
}

// otherCores is how many cores the rest of the machine used over d.
func otherCores(t *target, d time.Duration) (float64, error) {
	m0, err := loadstats.MachineCPU()
	if err != nil {
		return 0, err
	}
	self0, _ := loadstats.ReadProc(os.Getpid())
	srv0, _ := t.proc()
	time.Sleep(d)
	m1, _ := loadstats.MachineCPU()
	self1, _ := loadstats.ReadProc(os.Getpid())
	srv1, _ := t.proc()
	own := (self1.CPU - self0.CPU) + (srv1.CPU - srv0.CPU)
	return (m1 - m0 - own).Seconds() / d.Seconds(), nil
}
