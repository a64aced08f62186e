package realtime

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/turumba/realtime/internal/fastpath"
)

// AdapterConstructor builds the Socket.IO adapter of a namespace: the part
// that decides which sockets, on which instances, an emit reaches.
type AdapterConstructor = socket.AdapterConstructor

// Option configures a Hub. Every option has a safe default, so New() alone
// gives a working in-memory hub.
type Option func(*config) error

// RateLimit is a token bucket: Burst events at once, refilled at PerSecond.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

type config struct {
	source           EventSource
	pipelined        bool
	presence         PresenceStore
	verifier         TokenVerifier
	authorizer       Authorizer
	routes           []Route
	logger           *slog.Logger
	registerer       prometheus.Registerer
	corsOrigins      []string
	typingTTL        time.Duration
	presenceTTL      time.Duration
	recoveryWindow   time.Duration
	handshakeTimeout time.Duration
	clientRate       RateLimit
	typingRate       RateLimit
	maxPayloadBytes  int
	checks           map[string]Checker
	adapter          AdapterConstructor
	writeQueue       int
	writeTimeout     time.Duration
}

func defaultConfig() *config {
	return &config{
		routes:           DefaultRoutes,
		logger:           slog.Default(),
		corsOrigins:      []string{"http://localhost:3600", "http://localhost:3500"},
		typingTTL:        5 * time.Second,
		presenceTTL:      60 * time.Second,
		recoveryWindow:   2 * time.Minute,
		handshakeTimeout: 5 * time.Second,
		clientRate:       RateLimit{PerSecond: 20, Burst: 40},
		typingRate:       RateLimit{PerSecond: 2, Burst: 5},
		maxPayloadBytes:  16 << 10,
		authorizer:       TokenAccounts,
		checks:           map[string]Checker{},
		writeQueue:       fastpath.DefaultLimits.Queue,
		writeTimeout:     fastpath.DefaultLimits.WriteTimeout,
		pipelined:        true,
	}
}

// WithEventSource sets where events come from (amqpsource.Source in
// production). Default: none; events arrive only through Hub.Publish.
func WithEventSource(s EventSource) Option {
	return func(c *config) error {
		if s == nil {
			return errors.New("WithEventSource: nil source")
		}
		c.source = s
		return nil
	}
}

// WithPresenceStore sets where presence is kept (presence.RedisStore for a
// fleet). Default: an in-process MemoryPresence, right for one instance.
func WithPresenceStore(p PresenceStore) Option {
	return func(c *config) error {
		if p == nil {
			return errors.New("WithPresenceStore: nil store")
		}
		c.presence = p
		return nil
	}
}

// WithTokenVerifier sets how handshake tokens are verified
// (auth.CognitoVerifier in production, auth.DevVerifier in dev mode).
// Default: a verifier that refuses every token, so an unconfigured Hub is
// closed rather than open.
func WithTokenVerifier(v TokenVerifier) Option {
	return func(c *config) error {
		if v == nil {
			return errors.New("WithTokenVerifier: nil verifier")
		}
		c.verifier = v
		return nil
	}
}

// WithAuthorizer replaces the account membership check used for account
// rooms, conversation rooms, typing and presence lists. Default:
// TokenAccounts (the token's account list is the only authority).
func WithAuthorizer(a Authorizer) Option {
	return func(c *config) error {
		if a == nil {
			return errors.New("WithAuthorizer: nil authorizer")
		}
		c.authorizer = a
		return nil
	}
}

// WithRoutes replaces the routing table. Default: DefaultRoutes.
func WithRoutes(routes []Route) Option {
	return func(c *config) error {
		if _, err := NewRouter(routes); err != nil {
			return fmt.Errorf("WithRoutes: %w", err)
		}
		c.routes = routes
		return nil
	}
}

// WithLogger sets the structured logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithMetrics registers the Hub's Prometheus metrics (prefixed realtime_)
// with r. Default: metrics are kept but not registered anywhere.
func WithMetrics(r prometheus.Registerer) Option {
	return func(c *config) error {
		if r == nil {
			return errors.New("WithMetrics: nil registerer")
		}
		c.registerer = r
		return nil
	}
}

// WithCORS sets the browser origins allowed to connect. Default:
// http://localhost:3600 and http://localhost:3500. "*" allows any origin.
func WithCORS(origins ...string) Option {
	return func(c *config) error {
		for _, o := range origins {
			if o == "*" {
				continue
			}
			u, err := url.Parse(o)
			if err != nil || u.Scheme == "" || u.Host == "" {
				return fmt.Errorf("WithCORS: %q is not an origin like https://app.example.com", o)
			}
		}
		c.corsOrigins = origins
		return nil
	}
}

// WithTypingTTL sets how long a typing indicator lasts without a stop.
// Default: 5s.
func WithTypingTTL(d time.Duration) Option {
	return positive("WithTypingTTL", d, func(c *config) { c.typingTTL = d })
}

// WithPresenceTTL sets how long a connection stays present without a
// heartbeat; heartbeats run every third of it. Default: 60s. It must match
// the TTL the PresenceStore was built with.
func WithPresenceTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < 3*time.Second {
			return fmt.Errorf("WithPresenceTTL: %v is shorter than 3s", d)
		}
		c.presenceTTL = d
		return nil
	}
}

// WithRecoveryWindow sets how long a dropped client can come back and
// receive what it missed (Socket.IO connection state recovery); 0 turns
// recovery off. Default: 2m.
func WithRecoveryWindow(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("WithRecoveryWindow: %v is negative", d)
		}
		c.recoveryWindow = d
		return nil
	}
}

// WithHandshakeTimeout bounds token verification per handshake, so a slow
// identity provider cannot stall connections. Default: 5s.
func WithHandshakeTimeout(d time.Duration) Option {
	return positive("WithHandshakeTimeout", d, func(c *config) { c.handshakeTimeout = d })
}

// WithClientRateLimit bounds client events per connection; excess events
// are answered with rate_limited. Default: 20/s, bursts of 40.
func WithClientRateLimit(l RateLimit) Option {
	return rateOption("WithClientRateLimit", l, func(c *config) { c.clientRate = l })
}

// WithTypingRateLimit bounds typing events per connection, on top of the
// client limit. Default: 2/s, bursts of 5.
func WithTypingRateLimit(l RateLimit) Option {
	return rateOption("WithTypingRateLimit", l, func(c *config) { c.typingRate = l })
}

// WithMaxPayloadBytes bounds the size of one client event's payload.
// Default: 16 KiB.
func WithMaxPayloadBytes(n int) Option {
	return func(c *config) error {
		if n < 256 {
			return fmt.Errorf("WithMaxPayloadBytes: %d is below 256", n)
		}
		c.maxPayloadBytes = n
		return nil
	}
}

// WithReadinessCheck adds a named dependency to the /ready report (the
// event source and presence store are added by themselves when they
// implement Checker).
func WithReadinessCheck(name string, ch Checker) Option {
	return func(c *config) error {
		if name == "" || ch == nil {
			return errors.New("WithReadinessCheck: name and checker are required")
		}
		c.checks[name] = ch
		return nil
	}
}

// WithAdapter sets the Socket.IO adapter, such as the Redis adapter that
// makes emits reach sockets on every instance of a fleet. Default: the
// in-memory adapter (one instance), session-aware when recovery is on.
func WithAdapter(a AdapterConstructor) Option {
	return func(c *config) error {
		if a == nil {
			return errors.New("WithAdapter: nil adapter")
		}
		c.adapter = a
		return nil
	}
}

// WithWriteQueueLimit bounds the frames that may wait for one websocket
// client's writer; a client that falls further behind is disconnected
// (realtime_slow_clients_disconnected_total) and reconnects with
// recovery, so it never holds up the others or the memory. Default: 4096.
func WithWriteQueueLimit(frames int) Option {
	return func(c *config) error {
		if frames < 16 {
			return fmt.Errorf("WithWriteQueueLimit: %d is below 16", frames)
		}
		c.writeQueue = frames
		return nil
	}
}

// WithPipelinedConsume sets whether Run consumes with ConsumePipelined when
// the event source has it (PipelinedEventSource): the next event is taken
// while the adapter appends the previous ones. Default: on. Off, Run uses
// Consume and handles one event at a time (an event requeued after a
// transient failure then keeps its place in the order).
func WithPipelinedConsume(on bool) Option {
	return func(c *config) error {
		c.pipelined = on
		return nil
	}
}

// WithWriteTimeout bounds one write to a websocket client; a client whose
// writes block longer is disconnected as slow. Default: 10s.
func WithWriteTimeout(d time.Duration) Option {
	return positive("WithWriteTimeout", d, func(c *config) { c.writeTimeout = d })
}

func positive(name string, d time.Duration, set func(*config)) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%s: %v is not positive", name, d)
		}
		set(c)
		return nil
	}
}

func rateOption(name string, l RateLimit, set func(*config)) Option {
	return func(c *config) error {
		if l.PerSecond <= 0 || l.Burst < 1 {
			return fmt.Errorf("%s: rate %v/s burst %d must both be positive", name, l.PerSecond, l.Burst)
		}
		set(c)
		return nil
	}
}
