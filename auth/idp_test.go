package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// The pool the tests pretend to be; its JWKS is served on loopback.
const (
	testRegion = "us-east-1"
	testPool   = "us-east-1_Test"
	testIssuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Test"
	testClient = "client-a"
	jwksPath   = "/.well-known/jwks.json"
)

var (
	keysOnce sync.Once
	keys     [3]*rsa.PrivateKey
)

// rsaKey returns one of three RSA keys generated once per test binary, since
// 2048-bit generation is slow under -race.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		for n := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[n] = k
		}
	})
	return keys[i]
}

// fakeIdP serves a JWKS on loopback whose keys, availability and latency the
// test controls.
type fakeIdP struct {
	srv     *httptest.Server
	fetches atomic.Int64
	// status, when non-zero, is answered instead of the JWKS.
	status atomic.Int32
	// hang makes requests wait until the client gives up.
	hang    atomic.Bool
	release chan struct{}

	mu   sync.Mutex
	keys map[string]*rsa.PrivateKey
}

// newFakeIdP returns an IdP publishing rsaKey(0) as "k1"; with start false
// its server is created but not started.
func newFakeIdP(t testing.TB, start bool) *fakeIdP {
	t.Helper()
	p := &fakeIdP{release: make(chan struct{}), keys: map[string]*rsa.PrivateKey{"k1": rsaKey(t, 0)}}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	t.Cleanup(func() { close(p.release) })
	if start {
		p.srv.Start()
	}
	return p
}

func (p *fakeIdP) url() string { return p.srv.URL + jwksPath }

// publish adds key under kid to the served JWKS.
func (p *fakeIdP) publish(kid string, key *rsa.PrivateKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = key
}

func (p *fakeIdP) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != jwksPath {
		http.NotFound(w, r)
		return
	}
	p.fetches.Add(1)
	if p.hang.Load() {
		select {
		case <-r.Context().Done():
		case <-p.release:
		}
		return
	}
	if s := p.status.Load(); s != 0 {
		http.Error(w, "unavailable", int(s))
		return
	}
	p.mu.Lock()
	set := jwkset.JWKSMarshal{}
	for kid, key := range p.keys {
		jwk, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgRS256, USE: jwkset.UseSig},
		})
		if err != nil {
			p.mu.Unlock()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}

// testLogger drops the verifier's warnings about the JWKS outages tests cause.
func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// withClock makes the verifier read time from now, for cache expiry tests.
func withClock(now func() time.Time) CognitoOption {
	return func(c *cognitoConfig) error {
		c.now = now
		return nil
	}
}

// newTestVerifier returns a verifier for the test pool fetching keys from
// jwksURL, with a short unknown-kid interval so tests need not wait.
func newTestVerifier(t testing.TB, jwksURL string, opts ...CognitoOption) *CognitoVerifier {
	t.Helper()
	base := []CognitoOption{
		WithUserPool(testRegion, testPool),
		WithJWKSURL(jwksURL),
		WithClientIDs(testClient),
		WithRefreshUnknownKIDInterval(10 * time.Millisecond),
		WithHTTPTimeout(2 * time.Second),
		WithLogger(testLogger()),
	}
	v, err := NewCognitoVerifier(append(base, opts...)...)
	if err != nil {
		t.Fatalf("NewCognitoVerifier: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// claimsFor returns valid claims of a token_use "id" or "access" token.
func claimsFor(use string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss":                  testIssuer,
		"sub":                  "user-1",
		"token_use":            use,
		"iat":                  now.Unix(),
		"exp":                  now.Add(time.Hour).Unix(),
		"email":                "agent@example.com",
		DefaultAccountIDsClaim: "acc-1,acc-2",
	}
	if use == "id" {
		c["aud"] = testClient
	} else {
		c["client_id"] = testClient
		delete(c, "email")
	}
	return c
}

// with returns a copy of c with the given claims set, or removed when nil.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// signWith signs claims with method and key, naming kid unless it is empty.
func signWith(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// sign signs claims with RS256.
func sign(t testing.TB, key *rsa.PrivateKey, kid string, claims jwt.MapClaims) string {
	t.Helper()
	return signWith(t, jwt.SigningMethodRS256, key, kid, claims)
}
