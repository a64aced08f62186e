// Package redisadapter ties several turumba-realtime instances together
// through Redis: it builds the Socket.IO adapter (realtime.WithAdapter) that
// makes an emit on one instance reach the sockets of every instance.
//
// Three kinds are offered, all on top of the library's Redis adapters
// (github.com/zishang520/socket.io/adapters/redis/v3):
//
//   - Streams (the default): every broadcast is appended to one Redis stream
//     that each instance reads in order. On top of the library's streams
//     adapter this package keeps sessions in Redis and replays missed packets
//     from the stream, so that connection state recovery works across
//     instances (see RestoreSession in streams.go for the guarantees).
//   - PubSub: the classic PUBLISH/PSUBSCRIBE adapter. No recovery at all.
//   - Sharded: Redis 7 sharded pub/sub (SPUBLISH/SSUBSCRIBE). No recovery.
//
// docs/scaling.md explains the choice with measurements.
package redisadapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	sioredis "github.com/zishang520/socket.io/adapters/redis/v3"
	libadapter "github.com/zishang520/socket.io/adapters/redis/v3/adapter"
	"github.com/zishang520/socket.io/servers/socket/v3"
)

// Kind selects the Redis mechanism the adapter uses.
type Kind string

// The adapter kinds.
const (
	// Streams appends broadcasts to a Redis stream; it supports connection
	// state recovery across instances.
	Streams Kind = "streams"
	// PubSub uses classic Redis pub/sub; recovery is not available.
	PubSub Kind = "pubsub"
	// Sharded uses Redis 7 sharded pub/sub; recovery is not available.
	Sharded Kind = "sharded"
)

// Kinds lists the valid kinds, the default first.
var Kinds = []Kind{Streams, PubSub, Sharded}

// ParseKind reads a kind by name ("" is the default, Streams).
func ParseKind(s string) (Kind, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return Streams, nil
	}
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("redisadapter: unknown kind %q (want streams, pubsub or sharded)", s)
}

// SupportsRecovery reports whether sessions survive a move to another
// instance with this kind.
func (k Kind) SupportsRecovery() bool { return k == Streams }

// Option configures an Adapter.
type Option func(*config) error

type config struct {
	kind      Kind
	prefix    string
	margin    time.Duration
	maxLen    int64
	readCount int64
	block     time.Duration
	trimEvery time.Duration
	maxReplay int
	logger    *slog.Logger
	reg       prometheus.Registerer
	// beforeTail, when set (tests), runs in the stream reader before it
	// reads where the stream ends.
	beforeTail func()
}

func defaultConfig() *config {
	return &config{
		kind:      Streams,
		margin:    time.Minute,
		maxLen:    250_000,
		readCount: 256,
		block:     2 * time.Second,
		trimEvery: 10 * time.Second,
		maxReplay: 10_000,
		logger:    slog.Default(),
	}
}

// WithKind selects the mechanism. Default: Streams.
func WithKind(k Kind) Option {
	return func(c *config) error {
		if _, err := ParseKind(string(k)); err != nil || k == "" {
			return fmt.Errorf("WithKind: %q is not streams, pubsub or sharded", k)
		}
		c.kind = k
		return nil
	}
}

// WithKeyPrefix prefixes every Redis key and channel the adapter uses, so
// that several fleets (or test runs) can share one Redis. Default: none,
// which gives the library's names ("socket.io" stream and channels), so
// other Socket.IO emitters can publish to the fleet.
func WithKeyPrefix(p string) Option {
	return func(c *config) error {
		if strings.ContainsAny(p, " \t\r\n#") {
			return fmt.Errorf("WithKeyPrefix: %q contains a space or '#'", p)
		}
		c.prefix = p
		return nil
	}
}

// WithRetentionMargin sets how long stream entries are kept beyond the
// recovery window. It must cover the time a server takes to notice a dead
// connection (Engine.IO ping interval + timeout, 45 s by default): entries
// older than the disconnect minus this margin are assumed to have reached
// the client before its connection failed. Default: 1m.
func WithRetentionMargin(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("WithRetentionMargin: %v is negative", d)
		}
		c.margin = d
		return nil
	}
}

// WithMaxLen caps the stream's length (approximately) whatever its age, so
// a burst cannot exhaust Redis memory; 0 means no cap. When the cap trims
// entries still inside the window, the clients that needed them are told
// that recovery failed. Default: 250000 entries (about 100 MB).
func WithMaxLen(n int64) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("WithMaxLen: %d is negative", n)
		}
		c.maxLen = n
		return nil
	}
}

// WithMaxReplay bounds how many missed packets one recovering client is
// sent; a client that missed more is told that recovery failed, so it
// refetches instead of replaying a flood. Default: 10000.
func WithMaxReplay(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxReplay: %d is not positive", n)
		}
		c.maxReplay = n
		return nil
	}
}

// WithReadBlock sets how long one XREAD waits for new entries before it is
// issued again. Default: 2s.
func WithReadBlock(d time.Duration) Option {
	return func(c *config) error {
		if d < 10*time.Millisecond {
			return fmt.Errorf("WithReadBlock: %v is below 10ms", d)
		}
		c.block = d
		return nil
	}
}

// WithTrimInterval sets how often the stream is trimmed to the retention.
// Default: 10s.
func WithTrimInterval(d time.Duration) Option {
	return func(c *config) error {
		if d < 10*time.Millisecond {
			return fmt.Errorf("WithTrimInterval: %v is below 10ms", d)
		}
		c.trimEvery = d
		return nil
	}
}

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithMetrics registers the adapter's Prometheus metrics (prefixed
// realtime_adapter_) with r. Default: kept but not registered.
func WithMetrics(r prometheus.Registerer) Option {
	return func(c *config) error {
		if r == nil {
			return errors.New("WithMetrics: nil registerer")
		}
		c.reg = r
		return nil
	}
}

// Adapter builds the Socket.IO adapter of each namespace; pass it to
// realtime.WithAdapter. Close it after the Hub has shut down.
type Adapter struct {
	cfg     *config
	rdb     redis.UniversalClient
	rc      *sioredis.RedisClient
	ctor    socket.AdapterConstructor
	streams *streamsHub // nil unless Streams
	metrics *metrics
	cancel  context.CancelFunc
	once    sync.Once
}

var _ socket.AdapterConstructor = (*Adapter)(nil)

// New builds an Adapter on rdb, which it does not close.
func New(rdb redis.UniversalClient, opts ...Option) (*Adapter, error) {
	if rdb == nil {
		return nil, errors.New("redisadapter: nil Redis client")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(cfg); err != nil {
			return nil, fmt.Errorf("redisadapter: %w", err)
		}
	}
	m, err := newMetrics(cfg.reg)
	if err != nil {
		return nil, fmt.Errorf("redisadapter: metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Adapter{cfg: cfg, rdb: rdb, rc: sioredis.NewRedisClient(ctx, rdb), metrics: m, cancel: cancel}
	// The library reports Redis failures as "error" events; without a
	// listener they would vanish.
	_ = a.rc.On("error", func(args ...any) {
		m.redisErrors.Inc()
		if len(args) > 0 {
			cfg.logger.Warn("redis adapter: redis error", "kind", cfg.kind, "err", fmt.Sprint(args[0]))
		}
	})
	name := cfg.prefix + libadapter.DefaultStreamName // "socket.io", as the library and its Node twin name it
	switch cfg.kind {
	case PubSub:
		o := libadapter.DefaultRedisAdapterOptions()
		o.SetKey(name)
		a.ctor = &libadapter.RedisAdapterBuilder{Redis: a.rc, Opts: o}
	case Sharded:
		o := libadapter.DefaultShardedRedisAdapterOptions()
		o.SetChannelPrefix(name)
		a.ctor = &libadapter.ShardedRedisAdapterBuilder{Redis: a.rc, Opts: o}
	default:
		a.streams = newStreamsHub(ctx, cfg, a.rc, name, m)
		a.ctor = a.streams
	}
	return a, nil
}

// New builds the adapter of one namespace (socket.AdapterConstructor).
func (a *Adapter) New(nsp socket.Namespace) socket.Adapter { return a.ctor.New(nsp) }

// Kind returns the mechanism in use.
func (a *Adapter) Kind() Kind { return a.cfg.kind }

// Check reports whether the adapter can reach Redis and, for Streams, whether
// it keeps up with the stream (realtime.Checker, for /ready).
func (a *Adapter) Check(ctx context.Context) error {
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisadapter: ping: %w", err)
	}
	if a.streams != nil {
		return a.streams.check()
	}
	return nil
}

// BroadcastFailures counts the broadcasts that could not be handed to Redis
// and reached this instance's sockets only (realtime.BroadcastFailureCounter:
// the Hub then requeues the event instead of acknowledging it).
func (a *Adapter) BroadcastFailures() uint64 { return a.metrics.publishFailures.Load() }

// Flush returns once this instance's sockets have had every broadcast this
// instance appended to the stream before the call (Broadcast returns once
// Redis has the entry; the stream reader delivers it here a moment later),
// or ctx's error. The Hub flushes before its shutdown notice
// (realtime.BroadcastFlusher). Other kinds deliver before Broadcast
// returns: nothing to wait for.
func (a *Adapter) Flush(ctx context.Context) error {
	if a.streams == nil {
		return nil
	}
	return a.streams.flush(ctx)
}

// Close stops the adapter's background work (stream reader, trimmer). The
// Socket.IO server closes the namespace adapters themselves.
func (a *Adapter) Close() error {
	a.once.Do(func() {
		a.cancel()
		if a.streams != nil {
			a.streams.wait()
		}
	})
	return nil
}
