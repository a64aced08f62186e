package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime/redisadapter"
)

// setting is one configuration variable: read from the environment, then
// overridden by the flag of the same name (PORT -> -port).
type setting struct {
	env     string
	def     string
	devDef  *string // default in -dev mode, where it differs
	usage   string
	isBool  bool // a flag that takes no value: -dev
	value   string
	flagSet bool
}

// settings is the configuration contract, as data: the README's table and
// .env.example list exactly these.
func settings() []*setting {
	return []*setting{
		{env: "HOST", def: "0.0.0.0", devDef: ptr("127.0.0.1"), usage: "bind address"},
		{env: "PORT", def: "3200", usage: "HTTP port"},
		{env: "RABBITMQ_URL", def: "amqp://guest:guest@localhost:5672", devDef: ptr(""), usage: "broker URL; empty: no broker (events only via Hub.Publish / POST /dev/events)"},
		{env: "RABBITMQ_EXCHANGE", def: "messaging", usage: "topic exchange the events are published to"},
		{env: "RABBITMQ_QUEUE", def: "realtime.events", usage: "queue this service consumes; the dead-letter queue is {queue}.dead"},
		{env: "RABBITMQ_PREFETCH", def: "256", usage: "unacknowledged deliveries in flight"},
		{env: "REDIS_URL", def: "redis://localhost:6379", devDef: ptr(""), usage: "Redis for presence and the Socket.IO adapter; empty: in-memory, single instance"},
		{env: "REDIS_ADAPTER", def: "streams", usage: "Socket.IO adapter over Redis: streams (ordered, recovery across instances), pubsub or sharded (no recovery); see docs/scaling.md"},
		{env: "REDIS_KEY_PREFIX", def: "", usage: "prefix of every Redis key and channel (adapter and presence), to share a Redis between deployments"},
		{env: "COGNITO_USER_POOL_ID", def: "", usage: "Cognito user pool id (required outside -dev unless JWKS_URI and COGNITO_ISSUER are set)"},
		{env: "AWS_REGION", def: "us-east-1", usage: "region of the user pool"},
		{env: "JWKS_URI", def: "", usage: "JWKS URL override (default computed from the pool)"},
		{env: "COGNITO_ISSUER", def: "", usage: "issuer override (default https://cognito-idp.{region}.amazonaws.com/{pool})"},
		{env: "COGNITO_CLIENT_IDS", def: "", usage: "comma-separated app client ids accepted in aud / client_id; empty: not checked"},
		{env: "COGNITO_TOKEN_USE", def: "id,access", usage: "accepted token_use values"},
		{env: "ACCOUNT_IDS_CLAIM", def: "custom:account_ids", usage: "claim holding the account ids"},
		{env: "CORS_ORIGINS", def: "http://localhost:3600,http://localhost:3500", usage: "comma-separated allowed browser origins (* for any)"},
		{env: "PRESENCE_TTL_SECONDS", def: "60", usage: "presence heartbeat TTL in seconds"},
		{env: "TYPING_TTL_SECONDS", def: "5", usage: "typing indicator expiry in seconds"},
		{env: "RECOVERY_WINDOW", def: "2m", usage: "connection state recovery window (0 disables)"},
		{env: "HANDSHAKE_TIMEOUT", def: "5s", usage: "deadline for verifying one handshake token"},
		{env: "WRITE_QUEUE_LIMIT", def: "4096", usage: "frames that may wait for one websocket client; a client further behind is disconnected (it reconnects with recovery)"},
		{env: "WRITE_TIMEOUT", def: "10s", usage: "a write to a websocket client blocked longer than this disconnects it"},
		{env: "SHUTDOWN_TIMEOUT", def: "20s", usage: "graceful shutdown deadline"},
		{env: "LOG_LEVEL", def: "info", usage: "debug, info, warn or error"},
		{env: "LOG_FORMAT", def: "json", devDef: ptr("text"), usage: "json or text"},
		{env: "DEV", def: "false", isBool: true, usage: "dev mode: dev tokens, in-memory presence, /dev/ console (same as -dev)"},
		{env: "DEV_ALLOW_REMOTE", def: "false", isBool: true, usage: "let dev mode bind to a non-loopback address (never in production)"},
	}
}

func flagName(env string) string { return strings.ReplaceAll(strings.ToLower(env), "_", "-") }

// Config is the validated configuration of the binary.
type Config struct {
	Host, Port          string
	RabbitURL           string
	Exchange, Queue     string
	Prefetch            int
	RedisURL            string
	RedisAdapter        redisadapter.Kind
	RedisKeyPrefix      string
	PoolID, Region      string
	JWKSURI, Issuer     string
	ClientIDs, TokenUse []string
	AccountsClaim       string
	CORSOrigins         []string
	PresenceTTL         time.Duration
	TypingTTL           time.Duration
	RecoveryWindow      time.Duration
	HandshakeTimeout    time.Duration
	WriteQueueLimit     int
	WriteTimeout        time.Duration
	ShutdownTimeout     time.Duration
	LogLevel            slog.Level
	LogFormat           string
	Dev, DevAllowRemote bool
	// Healthcheck is -healthcheck: probe /health of the running server and
	// exit, for Docker's HEALTHCHECK (the final image has no curl).
	Healthcheck bool
}

// Addr is the listen address.
func (c Config) Addr() string { return net.JoinHostPort(c.Host, c.Port) }

// loadConfig reads the environment and the command line. Errors name the
// variable (and its flag) so an operator knows what to fix.
// lookupEnv is os.LookupEnv in main: a variable set to "" is set (an empty
// RABBITMQ_URL or REDIS_URL turns that dependency off).
func loadConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (Config, error) {
	all := settings()
	fs := flag.NewFlagSet("turumba-realtime", flag.ContinueOnError)
	fs.SetOutput(stderr)
	byEnv := map[string]*setting{}
	for _, s := range all {
		byEnv[s.env] = s
		s := s
		set := func(v string) error {
			s.value, s.flagSet = v, true
			return nil
		}
		usage := s.usage + " (env " + s.env + ", default " + strconv.Quote(s.def) + ")"
		if s.isBool {
			fs.BoolFunc(flagName(s.env), usage, set)
		} else {
			fs.Func(flagName(s.env), usage, set)
		}
	}
	healthcheck := fs.Bool("healthcheck", false, "probe GET /health of the server on HOST/PORT and exit 0 if it is healthy, else 1 (for Docker's HEALTHCHECK)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: turumba-realtime [flags]\n\nEvery flag can also be set by its environment variable; flags win.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	// Resolve: flag, else environment, else the (dev) default.
	devMode := false
	resolve := func(s *setting) {
		if s.flagSet {
			return
		}
		if v, ok := lookupEnv(s.env); ok {
			s.value = v
			return
		}
		s.value = s.def
		if devMode && s.devDef != nil {
			s.value = *s.devDef
		}
	}
	resolve(byEnv["DEV"])
	var err error
	if devMode, err = parseBool(byEnv["DEV"]); err != nil {
		return Config{}, err
	}
	for _, s := range all {
		resolve(s)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: configuration is given by flags and environment variables only", fs.Arg(0))
	}
	cfg, err := parse(byEnv, devMode)
	cfg.Healthcheck = *healthcheck
	return cfg, err
}

func ptr(s string) *string { return &s }

func parse(s map[string]*setting, dev bool) (Config, error) {
	var errs []error
	bad := func(env, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s (-%s): %s", env, flagName(env), fmt.Sprintf(format, a...)))
	}
	c := Config{Dev: dev, Host: s["HOST"].value, Port: s["PORT"].value, Exchange: s["RABBITMQ_EXCHANGE"].value,
		Queue: s["RABBITMQ_QUEUE"].value, PoolID: s["COGNITO_USER_POOL_ID"].value, Region: s["AWS_REGION"].value,
		JWKSURI: s["JWKS_URI"].value, Issuer: s["COGNITO_ISSUER"].value, AccountsClaim: s["ACCOUNT_IDS_CLAIM"].value,
		RabbitURL: s["RABBITMQ_URL"].value, RedisURL: s["REDIS_URL"].value, LogFormat: s["LOG_FORMAT"].value}

	if p, err := strconv.Atoi(c.Port); err != nil || p < 1 || p > 65535 {
		bad("PORT", "%q is not a port number (1-65535)", c.Port)
	}
	if net.ParseIP(c.Host) == nil && c.Host != "localhost" {
		if _, err := net.LookupHost(c.Host); err != nil {
			bad("HOST", "%q is not an address to bind", c.Host)
		}
	}
	if c.RabbitURL != "" {
		if err := checkURL(c.RabbitURL, "amqp", "amqps"); err != nil {
			bad("RABBITMQ_URL", "%v", err)
		} else if _, err := amqp.ParseURI(c.RabbitURL); err != nil {
			bad("RABBITMQ_URL", "%q: %v", redactURL(c.RabbitURL), err)
		}
	}
	if c.RedisURL != "" {
		if err := checkURL(c.RedisURL, "redis", "rediss"); err != nil {
			bad("REDIS_URL", "%v", err)
		} else if _, err := redis.ParseURL(c.RedisURL); err != nil {
			bad("REDIS_URL", "%q: %v", redactURL(c.RedisURL), err)
		}
	}
	if k, err := redisadapter.ParseKind(s["REDIS_ADAPTER"].value); err != nil {
		bad("REDIS_ADAPTER", "%q is not streams, pubsub or sharded", s["REDIS_ADAPTER"].value)
	} else {
		c.RedisAdapter = k
	}
	if c.RedisKeyPrefix = s["REDIS_KEY_PREFIX"].value; strings.ContainsAny(c.RedisKeyPrefix, " \t\r\n#") {
		bad("REDIS_KEY_PREFIX", "%q contains a space or '#'", c.RedisKeyPrefix)
	}
	// AMQP names are at most 255 bytes; the queue also names {queue}.dead and {queue}.dlx.
	if n := len(c.Exchange); n == 0 || n > 255 {
		bad("RABBITMQ_EXCHANGE", "must be 1 to 255 bytes long")
	}
	if n := len(c.Queue); n == 0 || n > 250 {
		bad("RABBITMQ_QUEUE", "must be 1 to 250 bytes long")
	}
	if c.Exchange == c.Queue+".dlx" {
		bad("RABBITMQ_EXCHANGE", "%q is the dead-letter exchange of RABBITMQ_QUEUE", c.Exchange)
	}
	var err error
	if c.Prefetch, err = strconv.Atoi(s["RABBITMQ_PREFETCH"].value); err != nil || c.Prefetch < 1 || c.Prefetch > 65535 {
		bad("RABBITMQ_PREFETCH", "%q is not a number from 1 to 65535", s["RABBITMQ_PREFETCH"].value)
	}
	c.ClientIDs = splitList(s["COGNITO_CLIENT_IDS"].value)
	c.TokenUse = splitList(s["COGNITO_TOKEN_USE"].value)
	if len(c.TokenUse) == 0 {
		bad("COGNITO_TOKEN_USE", "must list id, access or both")
	}
	for _, u := range c.TokenUse {
		if u != "id" && u != "access" {
			bad("COGNITO_TOKEN_USE", "%q is not id or access", u)
		}
	}
	if c.AccountsClaim == "" {
		bad("ACCOUNT_IDS_CLAIM", "must not be empty")
	}
	if c.JWKSURI != "" {
		if err := checkURL(c.JWKSURI, "https", "http"); err != nil {
			bad("JWKS_URI", "%v", err)
		}
	}
	if c.Issuer != "" {
		if err := checkURL(c.Issuer, "https", "http"); err != nil {
			bad("COGNITO_ISSUER", "%v", err)
		}
	}
	if !dev && c.PoolID == "" && (c.JWKSURI == "" || c.Issuer == "") {
		bad("COGNITO_USER_POOL_ID", "is required (or set both JWKS_URI and COGNITO_ISSUER, or run with -dev)")
	}
	// Both go into the issuer URL https://cognito-idp.{region}.amazonaws.com/{pool}.
	if c.PoolID != "" && !idPart.MatchString(c.PoolID) {
		bad("COGNITO_USER_POOL_ID", "%q is not a user pool id like us-east-1_AbCdEf123", c.PoolID)
	}
	if !idPart.MatchString(c.Region) {
		bad("AWS_REGION", "%q is not a region like us-east-1", c.Region)
	}
	c.CORSOrigins = splitList(s["CORS_ORIGINS"].value)
	for _, o := range c.CORSOrigins {
		if u, err := url.Parse(o); o != "*" && (err != nil || u.Scheme == "" || u.Host == "") {
			bad("CORS_ORIGINS", "%q is not an origin like https://app.example.com", o)
		}
	}
	seconds := func(env string) time.Duration {
		n, err := strconv.Atoi(s[env].value)
		if err != nil || n < 1 {
			bad(env, "%q is not a positive number of seconds", s[env].value)
			return 0
		}
		return time.Duration(n) * time.Second
	}
	c.PresenceTTL = seconds("PRESENCE_TTL_SECONDS")
	if c.PresenceTTL > 0 && c.PresenceTTL < 3*time.Second {
		bad("PRESENCE_TTL_SECONDS", "must be at least 3")
	}
	c.TypingTTL = seconds("TYPING_TTL_SECONDS")
	duration := func(env string, allowZero bool) time.Duration {
		d, err := time.ParseDuration(s[env].value)
		if err != nil || d < 0 || (d == 0 && !allowZero) {
			bad(env, "%q is not a duration like 20s or 2m", s[env].value)
		}
		return d
	}
	c.RecoveryWindow = duration("RECOVERY_WINDOW", true)
	c.HandshakeTimeout = duration("HANDSHAKE_TIMEOUT", false)
	c.WriteTimeout = duration("WRITE_TIMEOUT", false)
	if n, err := strconv.Atoi(s["WRITE_QUEUE_LIMIT"].value); err != nil || n < 16 {
		bad("WRITE_QUEUE_LIMIT", "%q is not a number of frames of at least 16", s["WRITE_QUEUE_LIMIT"].value)
	} else {
		c.WriteQueueLimit = n
	}
	c.ShutdownTimeout = duration("SHUTDOWN_TIMEOUT", false)
	if err := c.LogLevel.UnmarshalText([]byte(s["LOG_LEVEL"].value)); err != nil {
		bad("LOG_LEVEL", "%q is not debug, info, warn or error", s["LOG_LEVEL"].value)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "%q is not json or text", c.LogFormat)
	}
	if c.DevAllowRemote, err = parseBool(s["DEV_ALLOW_REMOTE"]); err != nil {
		errs = append(errs, err)
	}
	if dev && !c.DevAllowRemote && !isLoopback(c.Host) {
		bad("HOST", "dev mode mints tokens for anyone: it binds only to loopback (got %q); set DEV_ALLOW_REMOTE=true to force", c.Host)
	}
	return c, errors.Join(errs...)
}

func parseBool(s *setting) (bool, error) {
	b, err := strconv.ParseBool(s.value)
	if err != nil {
		return false, fmt.Errorf("%s (-%s): %q is not true or false", s.env, flagName(s.env), s.value)
	}
	return b, nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// idPart matches what may stand in a path segment of the Cognito issuer URL.
var idPart = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// checkURL checks that raw is an absolute URL with one of schemes, a host
// and, if given, a valid port. Its errors show the URL without its password
// (and not at all when it does not parse, since url.Parse errors echo it).
func checkURL(raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("is not a valid URL (a reserved character in the password must be percent-encoded)")
	}
	shown := u.Redacted()
	schemeOK := false
	for _, sc := range schemes {
		schemeOK = schemeOK || u.Scheme == sc
	}
	if !schemeOK || u.Hostname() == "" {
		return fmt.Errorf("%q is not a URL like %s://host:port", shown, strings.Join(schemes, "://... or "))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is not 1-65535", shown, p)
		}
	}
	return nil
}

// redactURL hides a URL's password so configuration errors never leak it.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
