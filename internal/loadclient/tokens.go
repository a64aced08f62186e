package loadclient

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DevTokens fetches one token per client from the server's dev issuer
// (GET /dev/token?sub=&accounts=), a few requests at a time.
func DevTokens(ctx context.Context, hc *http.Client, base string, l Layout, ttl time.Duration) ([]string, error) {
	return mintAll(ctx, l.Clients, 16, func(i int) (string, error) { return DevToken(ctx, hc, base, l, i, ttl) })
}

// DevToken fetches a fresh token for client i of l from the server's dev
// issuer (GET /dev/token?sub=&accounts=).
func DevToken(ctx context.Context, hc *http.Client, base string, l Layout, i int, ttl time.Duration) (string, error) {
	q := url.Values{"sub": {UserID(i)}, "accounts": {AccountID(l.Account(i))}, "ttl": {ttl.String()}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/dev/token?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /dev/token: %s: %.200s", resp.Status, body)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("GET /dev/token: no token in %.200s", body)
	}
	return out.Token, nil
}

// RSAIssuer mints RS256 tokens shaped like Cognito id tokens and publishes
// its key as a JWKS, to measure connects with real signature checks.
type RSAIssuer struct {
	Issuer string
	key    *rsa.PrivateKey
	kid    string
}

// NewRSAIssuer makes a fresh 2048-bit key (Cognito's size).
func NewRSAIssuer(issuer string) (*RSAIssuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	sum := sha256.Sum256(key.N.Bytes())
	return &RSAIssuer{Issuer: issuer, key: key, kid: base64.RawURLEncoding.EncodeToString(sum[:12])}, nil
}

// JWKS is the key set document serving the public key.
func (r *RSAIssuer) JWKS() []byte {
	b64 := func(n *big.Int) string { return base64.RawURLEncoding.EncodeToString(n.Bytes()) }
	doc, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": r.kid,
		"n": b64(r.key.N), "e": b64(big.NewInt(int64(r.key.E))),
	}}})
	return doc
}

// ServeHTTP serves the JWKS.
func (r *RSAIssuer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(r.JWKS())
}

// Mint returns an id token for client i of layout l.
func (r *RSAIssuer) Mint(i int, l Layout, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": r.Issuer, "sub": UserID(i), "token_use": "id", "aud": "realtime-load",
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(),
		"email":              UserID(i) + "@load.invalid",
		"custom:account_ids": AccountID(l.Account(i)),
	})
	t.Header["kid"] = r.kid
	return t.SignedString(r.key)
}

// MintAll mints a token for every client of l, on every core.
func (r *RSAIssuer) MintAll(ctx context.Context, l Layout, ttl time.Duration, workers int) ([]string, error) {
	return mintAll(ctx, l.Clients, workers, func(i int) (string, error) { return r.Mint(i, l, ttl) })
}

func mintAll(ctx context.Context, n, workers int, mint func(i int) (string, error)) ([]string, error) {
	tokens := make([]string, n)
	jobs := make(chan int)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				t, err := mint(i)
				if err != nil {
					once.Do(func() { first = fmt.Errorf("token for client %d: %w", i, err) })
					continue
				}
				tokens[i] = t
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return tokens, first
}
