// Command fleetbench measures fan-out through the Redis adapter with real
// turumba-realtime processes on this machine: for each configuration (an
// adapter kind and a number of instances) it starts the instances on the
// real Redis and RabbitMQ, spreads lean Socket.IO clients across them
// (internal/loadclient), publishes events to RabbitMQ at a fixed rate and
// then at a saturating one, and reports deliveries per second, latency
// percentiles, the instances' CPU and the Redis traffic per delivery
// (INFO stats deltas, the idle traffic of the fleet subtracted).
//
//	go build -o /tmp/rt ./cmd/turumba-realtime
//	go run ./redisadapter/internal/fleetbench -bin /tmp/rt -json /tmp/fleet.json
//
// docs/scaling.md quotes its output. Everything is on loopback and bounded.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime/internal/loadclient"
	"github.com/turumba/realtime/internal/loadstats"
)

type options struct {
	bin               string
	redisURL, amqpURL string
	configs           string
	clients, accounts int
	convSize          int
	kind              string
	rate, satRate     float64
	warmup, duration  time.Duration
	satDuration       time.Duration
	posters           int
	repeat            int
	jsonOut           string
}

// config is one measured setup: an adapter kind ("memory": no Redis at all)
// and a number of instances.
type config struct {
	Kind      string `json:"kind"`
	Instances int    `json:"instances"`
}

// result is one phase of one configuration.
type result struct {
	config
	Phase            string  `json:"phase"`
	TargetRate       float64 `json:"target_deliveries_per_s"`
	Rate             float64 `json:"deliveries_per_s"`
	Events           uint64  `json:"events"`
	Delivered        uint64  `json:"deliveries"`
	Missing          uint64  `json:"missing"`
	Duplicates       uint64  `json:"duplicates"`
	P50ms            float64 `json:"p50_ms"`
	P99ms            float64 `json:"p99_ms"`
	ServerCores      float64 `json:"server_cores"`
	CPUPer1kms       float64 `json:"server_cpu_ms_per_1000_deliveries"`
	RedisOutPerEvent float64 `json:"redis_out_bytes_per_event"`
	RedisInPerEvent  float64 `json:"redis_in_bytes_per_event"`
	RedisPerDelivery float64 `json:"redis_bytes_per_delivery"`
	OtherCores       float64 `json:"other_cores"`       // the rest of the machine (tool, Redis, RabbitMQ, noise)
	RedisConns       int64   `json:"redis_connections"` // Redis clients the fleet opened
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := flag.NewFlagSet("fleetbench", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "", "turumba-realtime binary (required)")
	fs.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379", "Redis (loopback)")
	fs.StringVar(&o.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ (loopback)")
	fs.StringVar(&o.configs, "configs", "memory:1,streams:1,streams:3,pubsub:1,pubsub:3,sharded:1,sharded:3", "kind:instances, comma-separated")
	fs.IntVar(&o.clients, "clients", 300, "clients, spread evenly across the instances")
	fs.IntVar(&o.accounts, "accounts", 10, "accounts; client i is in account i%accounts")
	fs.IntVar(&o.convSize, "conv-size", 5, "agents per conversation")
	fs.StringVar(&o.kind, "kind", "account", "events: account or conversation (see realtime-load)")
	fs.Float64Var(&o.rate, "rate", 10000, "deliveries/s of the latency phase")
	fs.Float64Var(&o.satRate, "sat-rate", 40000, "deliveries/s offered in the throughput phase (above capacity: the rate achieved is the throughput)")
	fs.DurationVar(&o.satDuration, "sat-duration", 5*time.Second, "how long the throughput phase offers its rate; it then runs until every delivery is in")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up before each configuration's phases")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "length of each measured phase")
	fs.IntVar(&o.posters, "posters", 4, "concurrent AMQP publishers")
	fs.IntVar(&o.repeat, "repeat", 1, "run every configuration this many times (in turn) and report the medians")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results (every run) as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.bin == "" {
		return errors.New("-bin is required (go build -o /tmp/rt ./cmd/turumba-realtime)")
	}
	for _, u := range []string{o.redisURL, o.amqpURL} {
		if err := loadclient.CheckLoopback(u); err != nil {
			return err
		}
	}
	var configs []config
	for _, c := range strings.Split(o.configs, ",") {
		k, n, _ := strings.Cut(strings.TrimSpace(c), ":")
		i, err := strconv.Atoi(n)
		if err != nil || i < 1 || i > 5 {
			return fmt.Errorf("-configs: %q is not kind:instances (1-5)", c)
		}
		configs = append(configs, config{k, i})
	}
	if _, err := loadclient.RaiseFileLimit(); err != nil {
		return err
	}
	iss, jwks, closeJWKS, err := serveJWKS()
	if err != nil {
		return err
	}
	defer closeJWKS()
	ropts, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()

	var all []result
	fmt.Printf("fleetbench: %d clients, %d accounts, %s events, %d cores\n", o.clients, o.accounts, o.kind, runtime.NumCPU())
	for round := range max(o.repeat, 1) {
		for _, c := range configs {
			rs, err := measure(ctx, o, c, iss, jwks, rdb)
			if err != nil {
				return fmt.Errorf("%s x%d: %w", c.Kind, c.Instances, err)
			}
			for _, r := range rs {
				fmt.Print("run ", round+1, "  ")
				r.print()
			}
			all = append(all, rs...)
		}
	}
	if o.repeat > 1 {
		fmt.Printf("\nmedians of %d runs\n", o.repeat)
		for _, r := range medians(all) {
			r.print()
		}
	}
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		return os.WriteFile(o.jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}

func (r result) print() {
	fmt.Printf("%-8s x%d %-10s target %7.0f/s got %7.0f/s  missing %d dup %d  p50 %7.2fms p99 %8.2fms  servers %.2f cores %.1fms CPU/1k  others %.2f cores  redis out %5.0f B/event in %4.0f B/event %5.1f B/delivery  %d redis conns\n",
		r.Kind, r.Instances, r.Phase, r.TargetRate, r.Rate, r.Missing, r.Duplicates, r.P50ms, r.P99ms,
		r.ServerCores, r.CPUPer1kms, r.OtherCores, r.RedisOutPerEvent, r.RedisInPerEvent, r.RedisPerDelivery, r.RedisConns)
}

// medians groups the runs of each configuration and phase and keeps the
// median of every figure (missing and duplicates: the worst).
func medians(all []result) []result {
	type key struct {
		config
		phase string
	}
	var order []key
	groups := map[key][]result{}
	for _, r := range all {
		k := key{r.config, r.Phase}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	med := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var out []result
	for _, k := range order {
		rs := groups[k]
		m := rs[0]
		m.Rate = med(rs, func(r result) float64 { return r.Rate })
		m.P50ms = med(rs, func(r result) float64 { return r.P50ms })
		m.P99ms = med(rs, func(r result) float64 { return r.P99ms })
		m.ServerCores = med(rs, func(r result) float64 { return r.ServerCores })
		m.CPUPer1kms = med(rs, func(r result) float64 { return r.CPUPer1kms })
		m.OtherCores = med(rs, func(r result) float64 { return r.OtherCores })
		m.RedisOutPerEvent = med(rs, func(r result) float64 { return r.RedisOutPerEvent })
		m.RedisInPerEvent = med(rs, func(r result) float64 { return r.RedisInPerEvent })
		m.RedisPerDelivery = med(rs, func(r result) float64 { return r.RedisPerDelivery })
		for _, r := range rs {
			m.Missing = max(m.Missing, r.Missing)
			m.Duplicates = max(m.Duplicates, r.Duplicates)
		}
		out = append(out, m)
	}
	return out
}

// serveJWKS serves an RS256 issuer's key set on loopback.
func serveJWKS() (*loadclient.RSAIssuer, string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	base := "http://" + ln.Addr().String()
	iss, err := loadclient.NewRSAIssuer(base + "/issuer")
	if err != nil {
		_ = ln.Close()
		return nil, "", nil, err
	}
	srv := &http.Server{Handler: iss, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return iss, base + "/.well-known/jwks.json", func() { _ = srv.Close() }, nil
}

// instance is one running binary.
type instance struct {
	cmd  *exec.Cmd
	addr string
}

func startInstance(ctx context.Context, o options, env []string) (*instance, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(o.bin, "-host", "127.0.0.1", "-port", port)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_LEVEL=error"}, env...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	in := &instance{cmd: cmd, addr: addr}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/ready")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return in, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			in.stop()
			return nil, fmt.Errorf("instance on %s not ready", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (in *instance) stop() {
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = in.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = in.cmd.Process.Kill()
		<-done
	}
}

// measure runs one configuration: start, connect, warm up, two phases.
func measure(ctx context.Context, o options, c config, iss *loadclient.RSAIssuer, jwks string, rdb *redis.Client) ([]result, error) {
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	exchange, prefix := "fleetbench."+id, "fleetbench-"+id+":"
	env := []string{"JWKS_URI=" + jwks, "COGNITO_ISSUER=" + iss.Issuer, "RABBITMQ_URL=" + o.amqpURL,
		"RABBITMQ_EXCHANGE=" + exchange, "RABBITMQ_QUEUE=" + exchange, "REDIS_KEY_PREFIX=" + prefix,
		"RABBITMQ_PREFETCH=512", "SHUTDOWN_TIMEOUT=5s"}
	if c.Kind == "memory" {
		if c.Instances != 1 {
			return nil, errors.New("memory runs one instance only")
		}
		env = append(env, "REDIS_URL=")
	} else {
		env = append(env, "REDIS_URL="+o.redisURL, "REDIS_ADAPTER="+c.Kind)
	}
	conns0 := redisClients(ctx, rdb)
	var insts []*instance
	defer func() {
		for _, in := range insts {
			in.stop()
		}
		cleanup(o, exchange, prefix, rdb)
	}()
	for i := range c.Instances {
		in, err := startInstance(ctx, o, env)
		if err != nil {
			return nil, err
		}
		insts = append(insts, in)
		if i == 0 {
			time.Sleep(200 * time.Millisecond) // the first is the single active consumer
		}
	}

	l := loadclient.Layout{Clients: o.clients, Accounts: o.accounts, ConvSize: o.convSize}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	tokens, err := iss.MintAll(ctx, l, 2*time.Hour, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	d, err := loadclient.NewDialer(1, 10*time.Second)
	if err != nil {
		return nil, err
	}
	rec := &loadclient.Recorder{}
	var clients []*loadclient.Client
	defer func() { loadclient.CloseAll(clients) }()
	for k, in := range insts {
		from, to := k*o.clients/len(insts), (k+1)*o.clients/len(insts)
		res := loadclient.ConnectAll(ctx, d, loadclient.ConnectOptions{Addr: in.addr, ReadBuffer: 4096, Timeout: 15 * time.Second},
			l, rec, tokens, from, to, 32, true)
		clients = append(clients, res.Clients...)
		if res.Failed > (to-from)/100 {
			return nil, fmt.Errorf("%d clients failed to connect: %w", res.Failed, res.FirstErr)
		}
		if res.Failed > 0 { // the driver owes them nothing
			fmt.Printf("  (%d clients of instance %d failed to connect: %v)\n", res.Failed, k, res.FirstErr)
		}
	}
	conn, err := amqp.Dial(o.amqpURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	kind, err := loadclient.ParseKind(o.kind)
	if err != nil {
		return nil, err
	}
	var posters []loadclient.Poster
	for range o.posters {
		p, err := loadclient.NewAMQPPoster(conn, exchange, false)
		if err != nil {
			return nil, err
		}
		posters = append(posters, p)
	}
	drv := loadclient.NewDriver(l, kind, posters, clients)
	conns := redisClients(ctx, rdb) - conns0

	warm := rec.Begin("warmup")
	drv.Run(ctx, warm, o.rate/drv.RecipientsPerEvent(), o.warmup)
	settle(ctx, warm, 3*time.Second)

	var out []result
	for _, ph := range []struct {
		name      string
		rate      float64
		dur, wait time.Duration
	}{{"latency", o.rate, o.duration, 10 * time.Second}, {"throughput", o.satRate, o.satDuration, time.Minute}} {
		r, err := phase(ctx, c, ph.name, ph.rate, ph.dur, ph.wait, rec, drv, insts, rdb)
		if err != nil {
			return nil, err
		}
		r.RedisConns = conns
		out = append(out, r)
	}
	return out, nil
}

// redisClients reads how many clients Redis has connected.
func redisClients(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.Info(ctx, "clients").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// settle waits until a phase's deliveries are all in, or stop arriving.
func settle(ctx context.Context, ph *loadclient.Phase, limit time.Duration) time.Time {
	end := time.Now().Add(limit)
	last, changed := ph.Distinct.Load(), time.Now()
	for ctx.Err() == nil && time.Now().Before(end) {
		n := ph.Distinct.Load()
		if n >= ph.Expected.Load() {
			return time.Now()
		}
		if n != last {
			last, changed = n, time.Now()
		}
		if time.Since(changed) > time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return changed
}

// netBytes reads Redis's traffic counters.
func netBytes(ctx context.Context, rdb *redis.Client) (in, out float64, err error) {
	info, err := rdb.Info(ctx, "stats").Result()
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		f, _ := strconv.ParseFloat(v, 64)
		switch k {
		case "total_net_input_bytes":
			in = f
		case "total_net_output_bytes":
			out = f
		}
	}
	return in, out, nil
}

func serverCPU(insts []*instance) time.Duration {
	var total time.Duration
	for _, in := range insts {
		if s, err := loadstats.ReadProc(in.cmd.Process.Pid); err == nil {
			total += s.CPU
		}
	}
	return total
}

// phase measures one rate: the Redis traffic of an idle second first (the
// fleet's own presence and polling), then the load, until every delivery
// is in (or none arrived for a second, or wait passed).
func phase(ctx context.Context, c config, name string, rate float64, dur, wait time.Duration, rec *loadclient.Recorder,
	drv *loadclient.Driver, insts []*instance, rdb *redis.Client) (result, error) {
	in0, out0, err := netBytes(ctx, rdb)
	if err != nil {
		return result{}, err
	}
	idleStart := time.Now()
	time.Sleep(time.Second)
	in1, out1, err := netBytes(ctx, rdb)
	if err != nil {
		return result{}, err
	}
	idleIn, idleOut := (in1-in0)/time.Since(idleStart).Seconds(), (out1-out0)/time.Since(idleStart).Seconds()

	cpu0 := serverCPU(insts)
	mach0, _ := loadstats.MachineCPU()
	ph := rec.Begin(name)
	drv.Run(ctx, ph, rate/drv.RecipientsPerEvent(), dur)
	done := settle(ctx, ph, wait)
	cpu1 := serverCPU(insts)
	mach1, _ := loadstats.MachineCPU()
	in2, out2, err := netBytes(ctx, rdb)
	if err != nil {
		return result{}, err
	}
	window := done.Sub(ph.Start).Seconds()
	elapsed := time.Since(ph.Start).Seconds()
	lat := ph.Latency.Snapshot()
	r := result{config: c, Phase: name, TargetRate: rate, Events: ph.Sent.Load(), Delivered: ph.Distinct.Load(),
		Missing: ph.Missing(), Duplicates: ph.Dups.Load(),
		P50ms: float64(lat.Quantile(0.5)) / 1e6, P99ms: float64(lat.Quantile(0.99)) / 1e6}
	if window > 0 {
		r.Rate = float64(r.Delivered) / window
		r.ServerCores = (cpu1 - cpu0).Seconds() / elapsed
		r.OtherCores = (mach1-mach0).Seconds()/elapsed - r.ServerCores
	}
	if r.Delivered > 0 {
		r.CPUPer1kms = float64(cpu1-cpu0) / 1e6 * 1000 / float64(r.Delivered)
	}
	if r.Events > 0 && c.Kind != "memory" {
		netIn := max(in2-in1-idleIn*elapsed, 0)
		netOut := max(out2-out1-idleOut*elapsed, 0)
		r.RedisInPerEvent = netIn / float64(r.Events)
		r.RedisOutPerEvent = netOut / float64(r.Events)
		r.RedisPerDelivery = (netIn + netOut) / float64(max(r.Delivered, 1))
	}
	return r, nil
}

// cleanup deletes the configuration's RabbitMQ objects and Redis keys.
func cleanup(o options, exchange, prefix string, rdb *redis.Client) {
	if conn, err := amqp.Dial(o.amqpURL); err == nil {
		if ch, err := conn.Channel(); err == nil {
			for _, q := range []string{exchange, exchange + ".dead"} {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			for _, e := range []string{exchange, exchange + ".dlx"} {
				_ = ch.ExchangeDelete(e, false, false)
			}
		}
		_ = conn.Close()
	}
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}
