package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/turumba/realtime"
)

// Defaults of the CognitoVerifier options.
const (
	// DefaultLeeway is the clock skew allowed on exp and nbf; servers are NTP
	// synced, so a few seconds cover it without stretching token lifetime.
	DefaultLeeway = 10 * time.Second
	// DefaultRefreshUnknownKIDInterval spaces JWKS refreshes caused by unknown
	// kids: a flood of forged kids costs the issuer at most 4 requests a
	// minute, and a JWKS that was down is picked up within 15 s of its return.
	DefaultRefreshUnknownKIDInterval = 15 * time.Second
	// DefaultRefreshInterval is how often the JWKS is fetched regardless.
	DefaultRefreshInterval = time.Hour
	// DefaultHTTPTimeout bounds one JWKS fetch, including the wait for it.
	DefaultHTTPTimeout = 5 * time.Second
	// DefaultCacheSize is how many verified tokens are remembered.
	DefaultCacheSize = 10000
)

// CognitoVerifier verifies AWS Cognito id and access tokens (RS256, keys from
// the user pool's JWKS) and is safe for concurrent use.
//
// An unreachable JWKS never fails construction: Verify returns errors
// wrapping ErrAuthUnavailable until the keys can be fetched, and succeeds
// again, without a restart, once they can. A verified token is remembered
// until it expires, even if its key is withdrawn from the JWKS meanwhile.
// Call Close to stop the background refresh.
type CognitoVerifier struct {
	parser *jwt.Parser
	rules  *claimRules
	keys   *keySet
	// cache is nil when WithCacheSize(0) turned it off.
	cache *identityCache
	now   func() time.Time
	// parses counts full verifications so tests can see cache hits.
	parses atomic.Int64
}

var _ realtime.TokenVerifier = (*CognitoVerifier)(nil)

// CognitoOption configures a CognitoVerifier.
type CognitoOption func(*cognitoConfig) error

type cognitoConfig struct {
	poolIssuer        string
	issuer            string
	jwksURL           string
	tokenUse          []string
	clientIDs         []string
	accountsClaim     string
	leeway            time.Duration
	refreshUnknownKID time.Duration
	refreshInterval   time.Duration
	httpClient        *http.Client
	httpTimeout       time.Duration
	logger            *slog.Logger
	cacheSize         int
	now               func() time.Time
}

// WithUserPool sets the Cognito user pool, which gives the issuer
// https://cognito-idp.{region}.amazonaws.com/{poolID} and its JWKS.
func WithUserPool(region, poolID string) CognitoOption {
	return func(c *cognitoConfig) error {
		if !isIDPart(region) || !isIDPart(poolID) {
			return fmt.Errorf("auth: WithUserPool: region %q and pool id %q must be non-empty letters, digits, '-' and '_'", region, poolID)
		}
		c.poolIssuer = "https://cognito-idp." + region + ".amazonaws.com/" + poolID
		return nil
	}
}

// WithIssuer sets the only accepted "iss", overriding WithUserPool's (for
// tests and other identity providers). The JWKS defaults to
// {issuer}/.well-known/jwks.json.
func WithIssuer(issuer string) CognitoOption {
	return func(c *cognitoConfig) error {
		if strings.TrimSpace(issuer) == "" {
			return errors.New("auth: WithIssuer: empty issuer")
		}
		c.issuer = issuer
		return nil
	}
}

// WithJWKSURL sets where the signing keys are fetched, overriding the URL
// derived from the issuer.
func WithJWKSURL(jwksURL string) CognitoOption {
	return func(c *cognitoConfig) error {
		if err := checkJWKSURL(jwksURL); err != nil {
			return fmt.Errorf("auth: WithJWKSURL: %w", err)
		}
		c.jwksURL = jwksURL
		return nil
	}
}

// WithTokenUse sets the accepted "token_use" values, "id" and/or "access"
// (default both). Blank entries are ignored, so a split env variable works.
func WithTokenUse(uses ...string) CognitoOption {
	return func(c *cognitoConfig) error {
		list := nonBlank(uses)
		for _, u := range list {
			if u != "id" && u != "access" {
				return fmt.Errorf("auth: WithTokenUse: %q is neither \"id\" nor \"access\"", u)
			}
		}
		if len(list) == 0 {
			return errors.New("auth: WithTokenUse: no token use given")
		}
		c.tokenUse = list
		return nil
	}
}

// WithClientIDs sets the accepted app client ids, matched against "aud" in
// id tokens and "client_id" in access tokens. None (the default) means the
// client is not checked. Blank entries are ignored.
func WithClientIDs(ids ...string) CognitoOption {
	return func(c *cognitoConfig) error {
		c.clientIDs = nonBlank(ids)
		return nil
	}
}

// WithAccountIDsClaim names the claim listing the user's accounts (default
// DefaultAccountIDsClaim); it may hold a comma-separated string or a JSON
// array of strings.
func WithAccountIDsClaim(name string) CognitoOption {
	return func(c *cognitoConfig) error {
		if strings.TrimSpace(name) == "" {
			return errors.New("auth: WithAccountIDsClaim: empty claim name")
		}
		c.accountsClaim = name
		return nil
	}
}

// WithLeeway sets the clock skew allowed on exp and nbf, at most 5 minutes
// (default DefaultLeeway).
func WithLeeway(d time.Duration) CognitoOption {
	return func(c *cognitoConfig) error {
		if d < 0 || d > 5*time.Minute {
			return fmt.Errorf("auth: WithLeeway: %v is not between 0 and 5m", d)
		}
		c.leeway = d
		return nil
	}
}

// WithRefreshUnknownKIDInterval sets the least time between two JWKS
// refreshes caused by a token with an unknown kid (default
// DefaultRefreshUnknownKIDInterval).
func WithRefreshUnknownKIDInterval(d time.Duration) CognitoOption {
	return func(c *cognitoConfig) error {
		if d <= 0 {
			return fmt.Errorf("auth: WithRefreshUnknownKIDInterval: %v is not positive", d)
		}
		c.refreshUnknownKID = d
		return nil
	}
}

// WithRefreshInterval sets how often the JWKS is fetched in the background
// (default DefaultRefreshInterval).
func WithRefreshInterval(d time.Duration) CognitoOption {
	return func(c *cognitoConfig) error {
		if d <= 0 {
			return fmt.Errorf("auth: WithRefreshInterval: %v is not positive", d)
		}
		c.refreshInterval = d
		return nil
	}
}

// WithHTTPClient sets the client that fetches the JWKS (default: a client
// with the HTTP timeout).
func WithHTTPClient(client *http.Client) CognitoOption {
	return func(c *cognitoConfig) error {
		if client == nil {
			return errors.New("auth: WithHTTPClient: nil client")
		}
		c.httpClient = client
		return nil
	}
}

// WithHTTPTimeout bounds one JWKS fetch, including the rate limiter's wait
// before a refresh on an unknown kid (default DefaultHTTPTimeout).
func WithHTTPTimeout(d time.Duration) CognitoOption {
	return func(c *cognitoConfig) error {
		if d <= 0 {
			return fmt.Errorf("auth: WithHTTPTimeout: %v is not positive", d)
		}
		c.httpTimeout = d
		return nil
	}
}

// WithLogger sets where JWKS fetch failures are logged (default slog.Default()).
func WithLogger(l *slog.Logger) CognitoOption {
	return func(c *cognitoConfig) error {
		if l == nil {
			return errors.New("auth: WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithCacheSize sets how many verified tokens are remembered until they
// expire (default DefaultCacheSize); 0 turns the cache off.
func WithCacheSize(n int) CognitoOption {
	return func(c *cognitoConfig) error {
		if n < 0 {
			return fmt.Errorf("auth: WithCacheSize: %d is negative", n)
		}
		c.cacheSize = n
		return nil
	}
}

// NewCognitoVerifier returns a verifier for the issuer given by WithUserPool
// or WithIssuer. It fetches the JWKS once, waiting at most the HTTP timeout,
// and succeeds even when that fetch fails.
func NewCognitoVerifier(opts ...CognitoOption) (*CognitoVerifier, error) {
	cfg := cognitoConfig{
		tokenUse:          []string{"id", "access"},
		accountsClaim:     DefaultAccountIDsClaim,
		leeway:            DefaultLeeway,
		refreshUnknownKID: DefaultRefreshUnknownKIDInterval,
		refreshInterval:   DefaultRefreshInterval,
		httpTimeout:       DefaultHTTPTimeout,
		logger:            slog.Default(),
		cacheSize:         DefaultCacheSize,
		now:               time.Now,
	}
	for _, opt := range opts {
		if err := opt(&cfg); err != nil {
			return nil, err
		}
	}
	issuer := cfg.issuer
	if issuer == "" {
		issuer = cfg.poolIssuer
	}
	if issuer == "" {
		return nil, errors.New("auth: NewCognitoVerifier: no issuer: use WithUserPool or WithIssuer")
	}
	jwksURL := cfg.jwksURL
	if jwksURL == "" {
		jwksURL = strings.TrimSuffix(issuer, "/") + "/.well-known/jwks.json"
		if err := checkJWKSURL(jwksURL); err != nil {
			return nil, fmt.Errorf("auth: WithIssuer: no JWKS URL can be derived from %q (use WithJWKSURL): %w", issuer, err)
		}
	}
	if cfg.httpClient == nil {
		cfg.httpClient = &http.Client{Timeout: cfg.httpTimeout}
	}
	keys, err := newKeySet(jwksURL, &cfg)
	if err != nil {
		return nil, err
	}
	v := &CognitoVerifier{
		parser: jwt.NewParser(
			// RS256 only: none, HS256 with the public key as secret and every
			// other algorithm fail before a key is looked up.
			jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
			// Claims are checked by rules, in an order that keeps
			// ErrTokenExpired for otherwise valid tokens.
			jwt.WithoutClaimsValidation(),
			jwt.WithStrictDecoding(),
		),
		rules: newClaimRules(issuer, cfg.tokenUse, cfg.clientIDs, cfg.accountsClaim, cfg.leeway, cfg.now),
		keys:  keys,
		now:   cfg.now,
	}
	if cfg.cacheSize > 0 {
		v.cache = newIdentityCache(cfg.cacheSize)
	}
	return v, nil
}

// Verify checks token and returns the identity it names. A token seen before
// is answered from the cache until it expires. An unknown kid may trigger a
// JWKS refresh, which ends with ctx's deadline or the HTTP timeout.
func (v *CognitoVerifier) Verify(ctx context.Context, token string) (realtime.Identity, error) {
	if err := checkSize(token); err != nil {
		return realtime.Identity{}, err
	}
	var key tokenKey
	if v.cache != nil {
		key = sha256.Sum256([]byte(token))
		if id, ok := v.cache.get(key, v.now()); ok {
			return id, nil
		}
	}
	v.parses.Add(1)
	id, err := verifyToken(v.parser, v.rules, token, func(t *jwt.Token) (any, error) {
		return v.keys.key(ctx, t)
	})
	if err != nil {
		return realtime.Identity{}, err
	}
	if v.cache != nil && v.now().Before(id.ExpiresAt) {
		v.cache.put(key, id)
	}
	return id, nil
}

// Close stops the background JWKS refresh; Verify keeps using the keys it
// has. It is safe to call more than once.
func (v *CognitoVerifier) Close() error {
	v.keys.close()
	return nil
}

// isIDPart reports whether s is a plausible AWS region or pool id, so that
// neither can bend the issuer URL.
func isIDPart(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// checkJWKSURL accepts absolute http(s) URLs only.
func checkJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

// nonBlank trims each entry and drops the empty ones.
func nonBlank(list []string) []string {
	var out []string
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
