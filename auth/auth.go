// Package auth verifies the bearer tokens browsers present on the Socket.IO
// handshake and turns them into a realtime.Identity.
//
// CognitoVerifier checks AWS Cognito tokens (or those of any RS256 issuer
// with a JWKS) in production; DevVerifier mints and checks HS256 tokens for
// local development. Every error wraps realtime.ErrInvalidToken,
// realtime.ErrTokenExpired or realtime.ErrAuthUnavailable, and no error
// message ever contains the token.
package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/turumba/realtime"
)

// The sentinels callers branch on; they are the root package's, so either
// name works with errors.Is.
var (
	// ErrInvalidToken marks a token that is malformed, badly signed or not for us.
	ErrInvalidToken = realtime.ErrInvalidToken
	// ErrTokenExpired marks a token that is valid in every way but its expiry.
	ErrTokenExpired = realtime.ErrTokenExpired
	// ErrAuthUnavailable marks a verifier that cannot get the signing keys now.
	ErrAuthUnavailable = realtime.ErrAuthUnavailable
)

// MaxTokenBytes is the largest token a verifier parses; Cognito tokens are a
// few KiB, so anything larger is refused before any decoding work.
const MaxTokenBytes = 8 << 10

// DefaultAccountIDsClaim is the claim listing the user's accounts unless
// WithAccountIDsClaim names another.
const DefaultAccountIDsClaim = "custom:account_ids"

// checkSize refuses empty and oversized tokens before they cost any work.
func checkSize(token string) error {
	switch {
	case token == "":
		return fmt.Errorf("auth: %w: empty token", ErrInvalidToken)
	case len(token) > MaxTokenBytes:
		return fmt.Errorf("auth: %w: token of %d bytes exceeds %d", ErrInvalidToken, len(token), MaxTokenBytes)
	}
	return nil
}

// verifyToken checks the signature and claims of a token that passed
// checkSize. Errors returned by key are passed through as they are, so they
// must already wrap a sentinel.
func verifyToken(p *jwt.Parser, rules *claimRules, token string, key jwt.Keyfunc) (realtime.Identity, error) {
	var keyErr error
	claims := jwt.MapClaims{}
	_, err := p.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		k, err := key(t)
		keyErr = err
		return k, err
	})
	switch {
	case keyErr != nil:
		return realtime.Identity{}, keyErr
	case err != nil:
		// jwt's messages name the failed check, never the token's contents.
		return realtime.Identity{}, fmt.Errorf("auth: %w: %w", ErrInvalidToken, err)
	}
	return rules.identity(claims)
}

// claimRules checks the claims of a token whose signature is verified and
// turns them into an Identity.
type claimRules struct {
	// issuer is the only accepted "iss".
	issuer string
	// tokenUse lists the accepted "token_use" values; empty accepts any.
	tokenUse []string
	// clientIDs lists the accepted "aud" (id tokens) or "client_id" (access
	// tokens); empty means not checked.
	clientIDs []string
	// accountsClaim names the claim listing the user's accounts.
	accountsClaim string
	// times checks exp (required) and nbf with leeway.
	times *jwt.Validator
}

func newClaimRules(issuer string, tokenUse, clientIDs []string, accountsClaim string, leeway time.Duration, now func() time.Time) *claimRules {
	return &claimRules{
		issuer:        issuer,
		tokenUse:      tokenUse,
		clientIDs:     clientIDs,
		accountsClaim: accountsClaim,
		times:         jwt.NewValidator(jwt.WithExpirationRequired(), jwt.WithLeeway(leeway), jwt.WithTimeFunc(now)),
	}
}

// identity checks every claim but the times first, so that ErrTokenExpired
// is reported only for a token that is ours in every other way.
func (r *claimRules) identity(c jwt.MapClaims) (realtime.Identity, error) {
	if iss, _ := c.GetIssuer(); iss != r.issuer {
		return realtime.Identity{}, fmt.Errorf("auth: %w: wrong issuer", ErrInvalidToken)
	}
	use, _ := c["token_use"].(string)
	if len(r.tokenUse) > 0 && !slices.Contains(r.tokenUse, use) {
		return realtime.Identity{}, fmt.Errorf("auth: %w: token_use not accepted", ErrInvalidToken)
	}
	if err := r.checkClient(c, use); err != nil {
		return realtime.Identity{}, err
	}
	sub, _ := c.GetSubject()
	if sub == "" {
		return realtime.Identity{}, fmt.Errorf("auth: %w: no sub", ErrInvalidToken)
	}
	email, ok := c["email"].(string)
	if !ok && c["email"] != nil {
		return realtime.Identity{}, fmt.Errorf("auth: %w: email is not a string", ErrInvalidToken)
	}
	accounts, err := accountIDs(c[r.accountsClaim])
	if err != nil {
		return realtime.Identity{}, fmt.Errorf("auth: %w: claim %q: %w", ErrInvalidToken, r.accountsClaim, err)
	}
	if err := r.times.Validate(c); err != nil {
		return realtime.Identity{}, timeError(err)
	}
	exp, err := c.GetExpirationTime()
	if err != nil || exp == nil {
		// Validate requires exp, so this is a bug, not a bad token.
		return realtime.Identity{}, fmt.Errorf("auth: %w: exp unreadable after validation", ErrInvalidToken)
	}
	return realtime.Identity{Subject: sub, Email: email, AccountIDs: accounts, ExpiresAt: exp.Time}, nil
}

// checkClient enforces the app client allow-list; Cognito names the client in
// "aud" for id tokens and in "client_id" for access tokens.
func (r *claimRules) checkClient(c jwt.MapClaims, use string) error {
	if len(r.clientIDs) == 0 {
		return nil
	}
	var got []string
	switch use {
	case "id":
		got, _ = c.GetAudience()
	case "access":
		if id, ok := c["client_id"].(string); ok {
			got = []string{id}
		}
	}
	for _, id := range got {
		if slices.Contains(r.clientIDs, id) {
			return nil
		}
	}
	return fmt.Errorf("auth: %w: app client not accepted", ErrInvalidToken)
}

// timeError maps a failed exp/nbf check; only a plain expiry is ErrTokenExpired.
func timeError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("auth: %w: %w", ErrInvalidToken, jwt.ErrTokenNotValidYet)
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("auth: %w", ErrTokenExpired)
	}
	return fmt.Errorf("auth: %w: %w", ErrInvalidToken, err)
}

// accountIDs reads the account claim, which Cognito custom attributes carry
// as a comma-separated string and other issuers as a JSON array.
func accountIDs(v any) ([]string, error) {
	var raw []string
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		raw = strings.Split(v, ",")
	case []any:
		raw = make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("array holds a non-string")
			}
			raw = append(raw, s)
		}
	default:
		return nil, errors.New("neither a string nor an array of strings")
	}
	ids := raw[:0]
	for _, s := range raw {
		if s = strings.TrimSpace(s); s != "" {
			ids = append(ids, s)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return ids, nil
}
