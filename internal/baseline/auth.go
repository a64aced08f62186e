package baseline

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// AccountsClaim is the claim listing a user's accounts, as in the service.
const AccountsClaim = "custom:account_ids"

// Identity is who a handshake token names.
type Identity struct {
	Subject  string
	Accounts []string
}

// Verifier checks a handshake token.
type Verifier interface {
	Verify(token string) (Identity, error)
}

func identity(c jwt.MapClaims) (Identity, error) {
	sub, _ := c.GetSubject()
	if sub == "" {
		return Identity{}, errors.New("no sub")
	}
	accounts, _ := c[AccountsClaim].(string)
	return Identity{Subject: sub, Accounts: splitAccounts(accounts)}, nil
}

// splitAccounts reads a comma-separated account list.
func splitAccounts(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// HS256 mints and verifies HS256 tokens shaped like the service's dev tokens.
type HS256 struct {
	secret []byte
	parser *jwt.Parser
}

// NewHS256 uses secret, or a random one when it is empty.
func NewHS256(secret []byte) *HS256 {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	return &HS256{secret: secret, parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())}
}

// Mint returns a token for sub with accounts, valid for ttl.
func (h *HS256) Mint(sub string, accounts []string, ttl time.Duration) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": "realtime-load-baseline", "sub": sub, "token_use": "id",
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(), AccountsClaim: strings.Join(accounts, ","),
	}).SignedString(h.secret)
}

// Verify checks the signature and expiry.
func (h *HS256) Verify(token string) (Identity, error) {
	c := jwt.MapClaims{}
	if _, err := h.parser.ParseWithClaims(token, c, func(*jwt.Token) (any, error) { return h.secret, nil }); err != nil {
		return Identity{}, err
	}
	return identity(c)
}

// Unverified accepts any well-formed token without checking its signature.
type Unverified struct{}

// Verify decodes the claims only.
func (Unverified) Verify(token string) (Identity, error) {
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, c); err != nil {
		return Identity{}, err
	}
	return identity(c)
}

// RS256 verifies tokens against the RSA keys of a JWKS fetched once, and one
// issuer, as the service does with Cognito (without its caches).
type RS256 struct {
	keys   map[string]*rsa.PublicKey
	parser *jwt.Parser
}

// NewRS256 fetches the JWKS at jwksURL.
func NewRS256(ctx context.Context, jwksURL, issuer string) (*RS256, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS: %s %v", resp.Status, err)
	}
	var doc struct {
		Keys []struct{ Kty, Kid, N, E string }
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	v := &RS256{keys: map[string]*rsa.PublicKey{}, parser: jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(issuer), jwt.WithExpirationRequired(), jwt.WithLeeway(time.Minute))}
	for _, k := range doc.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("JWKS key %q: bad n or e", k.Kid)
		}
		v.keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if len(v.keys) == 0 {
		return nil, errors.New("JWKS holds no RSA key")
	}
	return v, nil
}

// Verify checks the signature, issuer and expiry.
func (v *RS256) Verify(token string) (Identity, error) {
	c := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if k, ok := v.keys[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("unknown kid %q", kid)
	})
	if err != nil {
		return Identity{}, err
	}
	return identity(c)
}
