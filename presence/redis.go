package presence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime"
)

// Default batch sizes; they bound how long one script blocks Redis, which
// runs scripts one at a time.
const (
	defaultHeartbeatBatch = 1000
	defaultExpireBatch    = 1000
)

// RedisStore is the PresenceStore for a fleet of instances: presence lives in
// Redis, keyed by connection, so a user is online while any connection on
// any instance is alive, and a crashed instance's connections expire after
// the TTL. Every call is one Lua script run (one round trip), atomic in
// Redis; see scripts.go for the data model. It keeps the card's keys
// (agent:presence, agent:heartbeat:{user}) up to date for other services.
// It needs Redis 6.2 or later (ZMSCORE, and TIME inside scripts).
//
// It does not retry: when Redis is down calls fail as fast as the client's
// dial and read timeouts allow, and the Hub's next heartbeat re-registers
// its connections once Redis is back. The scripts leave the same state when
// run twice, but a client that retries one after a lost reply (go-redis
// MaxRetries) gets "unchanged" from the second run, so that change is not
// broadcast; set MaxRetries to -1 where that matters more than a retry.
type RedisStore struct {
	client redis.UniversalClient
	ttl    time.Duration
	prefix string
	expiry string // the key of the global expiry ZSET, KEYS[1] of every script
	log    *slog.Logger
	// heartbeatBatch is about how many connections one heartbeat script
	// covers; expireBatch is at most how many one expire script claims.
	heartbeatBatch, expireBatch int
}

var (
	_ realtime.PresenceStore = (*RedisStore)(nil)
	_ realtime.Checker       = (*RedisStore)(nil)
)

// Option configures a RedisStore.
type Option func(*RedisStore) error

// WithTTL sets how long a connection stays alive without a heartbeat; the
// Hub heartbeats every TTL/3. Default: DefaultTTL. It must be at least a
// millisecond, Redis's resolution.
func WithTTL(ttl time.Duration) Option {
	return func(s *RedisStore) error {
		if ttl < time.Millisecond {
			return fmt.Errorf("presence: WithTTL(%v): must be at least 1ms", ttl)
		}
		s.ttl = ttl
		return nil
	}
}

// WithKeyPrefix prefixes every key the store uses, the card's keys
// included, to share a Redis between deployments or tests. Default: "".
// On Redis Cluster, use a hash tag ("{presence}") so that all keys share a
// slot, as the scripts need.
func WithKeyPrefix(prefix string) Option {
	return func(s *RedisStore) error {
		s.prefix = prefix
		return nil
	}
}

// WithLogger sets where the store reports connections it had to
// re-register. Default: a logger that discards.
func WithLogger(l *slog.Logger) Option {
	return func(s *RedisStore) error {
		if l == nil {
			return errors.New("presence: WithLogger(nil): logger is nil")
		}
		s.log = l
		return nil
	}
}

// NewRedisStore returns a store on client, which the caller owns and closes.
func NewRedisStore(client redis.UniversalClient, opts ...Option) (*RedisStore, error) {
	if client == nil {
		return nil, errors.New("presence: NewRedisStore: client is nil")
	}
	s := &RedisStore{
		client: client,
		ttl:    DefaultTTL,
		log:    slog.New(slog.DiscardHandler),

		heartbeatBatch: defaultHeartbeatBatch,
		expireBatch:    defaultExpireBatch,
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	s.expiry = s.prefix + "presence:expiry"
	return s, nil
}

// TTL returns how long a connection lives without a heartbeat.
func (s *RedisStore) TTL() time.Duration { return s.ttl }

// Check pings Redis, for the Hub's readiness report.
func (s *RedisStore) Check(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("presence: ping redis: %w", err)
	}
	return nil
}

// Connect records a live connection; the user's chosen status survives it.
func (s *RedisStore) Connect(ctx context.Context, c realtime.PresenceConn) (realtime.Presence, bool, error) {
	return s.one(ctx, "connect", connectScript, c, c.UserID, c.ID, joinIDs(c.AccountIDs))
}

// Disconnect forgets a connection; the user goes offline with their last one.
func (s *RedisStore) Disconnect(ctx context.Context, c realtime.PresenceConn) (realtime.Presence, bool, error) {
	return s.one(ctx, "disconnect", disconnectScript, c, c.UserID, c.ID)
}

// SetStatus records the status the user chose (offline means invisible) and
// registers c again if Redis had lost it.
func (s *RedisStore) SetStatus(ctx context.Context, c realtime.PresenceConn, st realtime.Status) (realtime.Presence, bool, error) {
	if !st.Valid() {
		return realtime.Presence{}, false, fmt.Errorf("presence: set status %s: invalid status %q", c.UserID, st)
	}
	return s.one(ctx, "set status", setStatusScript, c, c.UserID, c.ID, joinIDs(c.AccountIDs), string(st))
}

// one runs a script about one connection and decodes its presence.
func (s *RedisStore) one(ctx context.Context, op string, script *redis.Script, c realtime.PresenceConn, args ...any) (realtime.Presence, bool, error) {
	if err := realtime.ValidatePresenceConn(c); err != nil {
		return realtime.Presence{}, false, fmt.Errorf("presence: %s: %w", op, err)
	}
	v, err := script.Run(ctx, s.client, []string{s.expiry}, s.args(args...)...).Result()
	if err != nil {
		return realtime.Presence{}, false, fmt.Errorf("presence: %s %s: %w", op, c.UserID, err)
	}
	p, changed, err := decodePresence(v)
	if err != nil {
		return realtime.Presence{}, false, fmt.Errorf("presence: %s %s: %w", op, c.UserID, err)
	}
	return p, changed, nil
}

// Heartbeat refreshes conns, re-registering those Redis lost (it restarted,
// or another instance expired them while this one stalled), and returns the
// users who came back. All batches go in one pipeline: one round trip.
func (s *RedisStore) Heartbeat(ctx context.Context, conns []realtime.PresenceConn) ([]realtime.Presence, error) {
	if len(conns) == 0 {
		return nil, nil
	}
	for _, c := range conns {
		if err := realtime.ValidatePresenceConn(c); err != nil {
			return nil, fmt.Errorf("presence: heartbeat: %w", err)
		}
	}
	batches := heartbeatBatches(conns, s.heartbeatBatch)
	argv := make([][]any, len(batches))
	for i, b := range batches {
		args := make([]any, 0, 3*len(b))
		for _, c := range b {
			args = append(args, c.UserID, c.ID, joinIDs(c.AccountIDs))
		}
		argv[i] = s.args(args...)
	}
	// A failed batch does not hide the users other batches brought back:
	// they are returned with the error, to be broadcast all the same.
	var (
		out      []realtime.Presence
		firstErr error
	)
	for _, cmd := range s.runAll(ctx, heartbeatScript, argv) {
		v, err := cmd.Result()
		var ps []realtime.Presence
		if err == nil {
			ps, err = decodePresences(v)
		}
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		out = append(out, ps...)
	}
	if len(out) > 0 {
		s.log.Info("presence: re-registered connections Redis had lost", "users_back", len(out))
	}
	sortPresences(out)
	if firstErr != nil {
		return out, fmt.Errorf("presence: heartbeat %d connections: %w", len(conns), firstErr)
	}
	return out, nil
}

// runAll runs script once per argument list in one pipeline, and again
// with EVAL, in a second one, for those Redis answered NOSCRIPT (its script
// cache is empty after a restart). Each command holds its result or error.
func (s *RedisStore) runAll(ctx context.Context, script *redis.Script, argv [][]any) []*redis.Cmd {
	keys := []string{s.expiry}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.Cmd, len(argv))
	for i, args := range argv {
		cmds[i] = script.EvalSha(ctx, pipe, keys, args...)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command
	var retry []int
	for i, cmd := range cmds {
		if err := cmd.Err(); errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe := s.client.Pipeline()
		for _, i := range retry {
			cmds[i] = script.Eval(ctx, pipe, keys, argv[i]...)
		}
		_, _ = pipe.Exec(ctx)
	}
	return cmds
}

// Expire claims the connections whose heartbeat lapsed (a crashed instance)
// and returns the users who went offline; Redis runs one script at a time,
// so of all instances calling Expire, exactly one gets each change.
func (s *RedisStore) Expire(ctx context.Context) ([]realtime.Presence, error) {
	var out []realtime.Presence
	for {
		v, err := expireScript.Run(ctx, s.client, []string{s.expiry}, s.args(s.expireBatch)...).Slice()
		if err != nil {
			return out, fmt.Errorf("presence: expire: %w", err)
		}
		if len(v) != 2 {
			return out, fmt.Errorf("presence: expire: reply of %d values, want 2", len(v))
		}
		claimed, _ := v[0].(int64)
		ps, err := decodePresences(v[1])
		if err != nil {
			return out, fmt.Errorf("presence: expire: %w", err)
		}
		out = append(out, ps...)
		if claimed < int64(s.expireBatch) {
			sortPresences(out)
			return out, nil
		}
	}
}

// List returns the users who are not offline and have a live connection
// listing accountID, sorted by user id.
func (s *RedisStore) List(ctx context.Context, accountID string) ([]realtime.Presence, error) {
	v, err := listScript.Run(ctx, s.client, []string{s.expiry}, s.args(accountID)...).Result()
	if err != nil {
		return nil, fmt.Errorf("presence: list %s: %w", accountID, err)
	}
	ps, err := decodePresences(v)
	if err != nil {
		return nil, fmt.Errorf("presence: list %s: %w", accountID, err)
	}
	sortPresences(ps)
	return ps, nil
}

// args prepends the ARGV every script starts with.
func (s *RedisStore) args(rest ...any) []any {
	return append([]any{s.prefix, s.ttl.Milliseconds()}, rest...)
}

// heartbeatBatches sorts conns by user and cuts them into batches of about
// size, never splitting a user, so that a user who comes back is reported
// once with all their accounts.
func heartbeatBatches(conns []realtime.PresenceConn, size int) [][]realtime.PresenceConn {
	conns = slices.Clone(conns)
	slices.SortFunc(conns, func(a, b realtime.PresenceConn) int {
		return cmp.Or(strings.Compare(a.UserID, b.UserID), strings.Compare(a.ID, b.ID))
	})
	var out [][]realtime.PresenceConn
	start := 0
	for i := 1; i <= len(conns); i++ {
		if i == len(conns) || (i-start >= size && conns[i].UserID != conns[i-1].UserID) {
			out = append(out, conns[start:i])
			start = i
		}
	}
	return out
}

// joinIDs encodes account ids as the scripts store them: sorted, unique,
// NUL-separated.
func joinIDs(ids []string) string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	ids = slices.DeleteFunc(ids, func(s string) bool { return s == "" })
	return strings.Join(ids, "\x00")
}

// decodePresence decodes a script's {user, status, last_seen, changed, accounts}.
func decodePresence(v any) (realtime.Presence, bool, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 5 {
		return realtime.Presence{}, false, fmt.Errorf("unexpected presence reply %v", v)
	}
	uid, _ := a[0].(string)
	status, _ := a[1].(string)
	seen, _ := a[2].(string)
	changed, _ := a[3].(int64)
	accts, _ := a[4].([]any)
	lastSeen, err := time.Parse(time.RFC3339, seen)
	if err != nil {
		return realtime.Presence{}, false, fmt.Errorf("last_seen of %s: %w", uid, err)
	}
	p := realtime.Presence{UserID: uid, Status: realtime.Status(status), LastSeen: lastSeen, AccountIDs: make([]string, 0, len(accts))}
	for _, x := range accts {
		if id, ok := x.(string); ok {
			p.AccountIDs = append(p.AccountIDs, id)
		}
	}
	slices.Sort(p.AccountIDs)
	return p, changed == 1, nil
}

// decodePresences decodes a list of presences.
func decodePresences(v any) ([]realtime.Presence, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("unexpected presence list reply %v", v)
	}
	out := make([]realtime.Presence, 0, len(a))
	for _, x := range a {
		p, _, err := decodePresence(x)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func sortPresences(ps []realtime.Presence) {
	slices.SortFunc(ps, func(a, b realtime.Presence) int { return strings.Compare(a.UserID, b.UserID) })
}
