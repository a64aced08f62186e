package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// errNotFetched is the key set's state before its first fetch completes.
var errNotFetched = errors.New("JWKS not fetched yet")

// keySet holds the issuer's signing keys, fetched and refreshed by jwkset,
// and remembers whether the last fetch worked so that a missing key can be
// told apart from keys that cannot be had.
type keySet struct {
	url     string
	log     *slog.Logger
	keyfunc keyfunc.Keyfunc
	// stop ends jwkset's refresh goroutine.
	stop context.CancelFunc

	mu sync.Mutex
	// fetchErr is the last fetch's error, nil after a successful one.
	fetchErr error
}

// newKeySet fetches the JWKS once (bounded by cfg.httpTimeout, and a failure
// is only recorded) and starts jwkset's periodic refresh.
func newKeySet(url string, cfg *cognitoConfig) (*keySet, error) {
	ctx, stop := context.WithCancel(context.Background())
	ks := &keySet{url: url, log: cfg.logger, stop: stop, fetchErr: errNotFetched}
	store, err := jwkset.NewStorageFromHTTP(url, jwkset.HTTPClientStorageOptions{
		Client:      cfg.httpClient,
		Ctx:         ctx,
		HTTPTimeout: cfg.httpTimeout,
		// The service must start while the JWKS is down; Verify reports it.
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler:       ks.fetchFailed,
		RefreshInterval:           cfg.refreshInterval,
		Storage:                   observedStorage{Storage: jwkset.NewMemoryStorage(), replaced: ks.fetched},
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: JWKS storage for %s: %w", url, err)
	}
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{url: store},
		// Bounds both the wait for the limiter and the refresh itself, so an
		// unknown kid never holds a handshake longer than one HTTP timeout;
		// a wait that would outlast it (or Verify's deadline) fails at once.
		RateLimitWaitMax:  cfg.httpTimeout,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.refreshUnknownKID), 1),
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: JWKS client for %s: %w", url, err)
	}
	kf, err := keyfunc.New(keyfunc.Options{
		Ctx:     ctx,
		Storage: client,
		// Cognito marks its keys "sig"; keys that say nothing are allowed for other issuers.
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: keyfunc for %s: %w", url, err)
	}
	ks.keyfunc = kf
	return ks, nil
}

// key finds the verification key of t, refreshing the JWKS for an unknown kid
// within jwkset's rate limit. Its errors wrap ErrInvalidToken when the issuer
// has no such key and ErrAuthUnavailable when its keys cannot be fetched.
func (ks *keySet) key(ctx context.Context, t *jwt.Token) (any, error) {
	if kid, _ := t.Header[jwkset.HeaderKID].(string); kid == "" {
		return nil, fmt.Errorf("auth: %w: no kid in header", ErrInvalidToken)
	}
	key, err := ks.keyfunc.KeyfuncCtx(ctx)(t)
	if err == nil {
		return key, nil
	}
	// keyfunc's own error quotes the kid, so it is not passed on.
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, fmt.Errorf("auth: %w: key lookup: %w", ErrAuthUnavailable, ctxErr)
	}
	if fetchErr := ks.unavailable(); fetchErr != nil {
		return nil, fmt.Errorf("auth: %w: JWKS %s: %w", ErrAuthUnavailable, ks.url, fetchErr)
	}
	return nil, fmt.Errorf("auth: %w: no usable key for the token's kid", ErrInvalidToken)
}

// unavailable returns why the last fetch failed, or nil if it worked.
func (ks *keySet) unavailable() error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.fetchErr
}

// fetched records a successful fetch; jwkset calls it through observedStorage.
func (ks *keySet) fetched() {
	ks.mu.Lock()
	was := ks.fetchErr
	ks.fetchErr = nil
	ks.mu.Unlock()
	if was != nil && was != errNotFetched {
		ks.log.Info("auth: JWKS reachable again", "url", ks.url)
	}
}

// fetchFailed records a failed fetch; jwkset calls it as RefreshErrorHandler.
func (ks *keySet) fetchFailed(ctx context.Context, err error) {
	if errors.Is(err, context.Canceled) {
		// The caller went away or Close ran: this says nothing about the JWKS.
		return
	}
	ks.mu.Lock()
	ks.fetchErr = err
	ks.mu.Unlock()
	ks.log.WarnContext(ctx, "auth: JWKS fetch failed", "url", ks.url, "error", err)
}

// close ends jwkset's refresh goroutine.
func (ks *keySet) close() { ks.stop() }

// observedStorage is jwkset's memory storage that reports each successful
// fetch, since jwkset replaces all keys exactly when one succeeds.
type observedStorage struct {
	jwkset.Storage
	replaced func()
}

// KeyReplaceAll stores the freshly fetched keys and reports the success.
func (s observedStorage) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	if err := s.Storage.KeyReplaceAll(ctx, given); err != nil {
		return err
	}
	s.replaced()
	return nil
}
