package auth

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/turumba/realtime"
)

// sentinels are the errors a verifier may wrap; each error wraps exactly one.
var sentinels = []error{ErrInvalidToken, ErrTokenExpired, ErrAuthUnavailable}

// assertSentinel fails unless err wraps want and no other sentinel, and its
// message does not contain the token.
func assertSentinel(t testing.TB, err, want error, token string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Verify succeeded, want %v", want)
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Fatalf("errors.Is(%q, %v) = %v", err, s, got)
		}
	}
	if len(token) >= 16 && strings.Contains(err.Error(), token) {
		t.Fatalf("error message contains the token: %q", err)
	}
}

// rejectCase is a token a verifier must refuse with the error want.
type rejectCase struct {
	name  string
	token string
	want  error
}

// checkRejects runs each case through v as a subtest.
func checkRejects(t *testing.T, v realtime.TokenVerifier, cases []rejectCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token)
			assertSentinel(t, err, tc.want, tc.token)
		})
	}
}

func TestCognitoVerifyAccepts(t *testing.T) {
	idp := newFakeIdP(t, true)
	k1 := rsaKey(t, 0)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tests := []struct {
		name     string
		opts     []CognitoOption
		claims   jwt.MapClaims
		email    string
		accounts []string
	}{
		{name: "id token", claims: with(claimsFor("id"), "exp", exp.Unix()), email: "agent@example.com", accounts: []string{"acc-1", "acc-2"}},
		{name: "access token", claims: with(claimsFor("access"), "exp", exp.Unix()), accounts: []string{"acc-1", "acc-2"}},
		{name: "id token with several audiences", claims: with(claimsFor("id"), "exp", exp.Unix(), "aud", []string{"other", testClient}), email: "agent@example.com", accounts: []string{"acc-1", "acc-2"}},
		{name: "accounts string with blanks", claims: with(claimsFor("access"), "exp", exp.Unix(), DefaultAccountIDsClaim, " acc-1 , ,acc-2,"), accounts: []string{"acc-1", "acc-2"}},
		{name: "accounts JSON array", claims: with(claimsFor("access"), "exp", exp.Unix(), DefaultAccountIDsClaim, []string{"acc-1", " ", " acc-3"}), accounts: []string{"acc-1", "acc-3"}},
		{name: "no accounts claim", claims: with(claimsFor("access"), "exp", exp.Unix(), DefaultAccountIDsClaim, nil)},
		{name: "empty accounts string", claims: with(claimsFor("access"), "exp", exp.Unix(), DefaultAccountIDsClaim, "")},
		{name: "custom accounts claim", opts: []CognitoOption{WithAccountIDsClaim("custom:tenants")}, claims: with(claimsFor("access"), "exp", exp.Unix(), "custom:tenants", "t-1,t-2"), accounts: []string{"t-1", "t-2"}},
		{name: "custom accounts claim as array", opts: []CognitoOption{WithAccountIDsClaim("tenants")}, claims: with(claimsFor("access"), "exp", exp.Unix(), "tenants", []any{"t-1"}), accounts: []string{"t-1"}},
		{name: "client not checked", opts: []CognitoOption{WithClientIDs()}, claims: with(claimsFor("id"), "exp", exp.Unix(), "aud", "anyone"), email: "agent@example.com", accounts: []string{"acc-1", "acc-2"}},
		{name: "second client id", opts: []CognitoOption{WithClientIDs("client-b", " ", testClient)}, claims: with(claimsFor("access"), "exp", exp.Unix()), accounts: []string{"acc-1", "acc-2"}},
		{name: "only id tokens accepted", opts: []CognitoOption{WithTokenUse("id")}, claims: with(claimsFor("id"), "exp", exp.Unix()), email: "agent@example.com", accounts: []string{"acc-1", "acc-2"}},
		{name: "nbf just passed", claims: with(claimsFor("access"), "exp", exp.Unix(), "nbf", time.Now().Unix()), accounts: []string{"acc-1", "acc-2"}},
		{name: "expired within leeway", claims: with(claimsFor("access"), "exp", time.Now().Add(-2*time.Second).Unix()), accounts: []string{"acc-1", "acc-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, idp.url(), tt.opts...)
			id, err := v.Verify(context.Background(), sign(t, k1, "k1", tt.claims))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			wantExp := time.Unix(tt.claims["exp"].(int64), 0)
			want := realtime.Identity{Subject: "user-1", Email: tt.email, AccountIDs: tt.accounts, ExpiresAt: wantExp}
			if id.Subject != want.Subject || id.Email != want.Email || !slices.Equal(id.AccountIDs, want.AccountIDs) || !id.ExpiresAt.Equal(want.ExpiresAt) {
				t.Fatalf("identity = %+v, want %+v", id, want)
			}
		})
	}
}

func TestCognitoVerifyRejects(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url())
	k1, stranger := rsaKey(t, 0), rsaKey(t, 1)
	id, access := claimsFor("id"), claimsFor("access")
	past, future := time.Now().Add(-time.Hour).Unix(), time.Now().Add(time.Hour).Unix()

	der, err := x509.MarshalPKIXPublicKey(&k1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	none := signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "k1", access)
	valid := sign(t, k1, "k1", access)
	parts := strings.Split(valid, ".")
	otherPayload := strings.Split(sign(t, k1, "k1", with(access, "sub", "admin")), ".")[1]
	b64 := base64.RawURLEncoding.EncodeToString

	checkRejects(t, v, []rejectCase{
		{"expired", sign(t, k1, "k1", with(access, "exp", past)), ErrTokenExpired},
		{"expired id token", sign(t, k1, "k1", with(id, "exp", past)), ErrTokenExpired},
		{"expired and wrong issuer", sign(t, k1, "k1", with(access, "exp", past, "iss", "https://evil.example")), ErrInvalidToken},
		{"expired and wrong client", sign(t, k1, "k1", with(access, "exp", past, "client_id", "other")), ErrInvalidToken},
		{"expired and nbf in future", sign(t, k1, "k1", with(access, "exp", past, "nbf", future)), ErrInvalidToken},
		{"nbf in future", sign(t, k1, "k1", with(access, "nbf", future)), ErrInvalidToken},
		{"wrong issuer", sign(t, k1, "k1", with(access, "iss", "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other")), ErrInvalidToken},
		{"issuer with trailing slash", sign(t, k1, "k1", with(access, "iss", testIssuer+"/")), ErrInvalidToken},
		{"no issuer", sign(t, k1, "k1", with(access, "iss", nil)), ErrInvalidToken},
		{"token_use refresh", sign(t, k1, "k1", with(access, "token_use", "refresh")), ErrInvalidToken},
		{"no token_use", sign(t, k1, "k1", with(access, "token_use", nil)), ErrInvalidToken},
		{"id token for another client", sign(t, k1, "k1", with(id, "aud", "client-x")), ErrInvalidToken},
		{"id token without aud", sign(t, k1, "k1", with(id, "aud", nil)), ErrInvalidToken},
		{"access token for another client", sign(t, k1, "k1", with(access, "client_id", "client-x")), ErrInvalidToken},
		{"access token naming the client in aud only", sign(t, k1, "k1", with(access, "client_id", nil, "aud", testClient)), ErrInvalidToken},
		{"no sub", sign(t, k1, "k1", with(access, "sub", nil)), ErrInvalidToken},
		{"sub not a string", sign(t, k1, "k1", with(access, "sub", 42)), ErrInvalidToken},
		{"no exp", sign(t, k1, "k1", with(access, "exp", nil)), ErrInvalidToken},
		{"exp not a number", sign(t, k1, "k1", with(access, "exp", "tomorrow")), ErrInvalidToken},
		{"accounts claim a number", sign(t, k1, "k1", with(access, DefaultAccountIDsClaim, 7)), ErrInvalidToken},
		{"accounts array with a number", sign(t, k1, "k1", with(access, DefaultAccountIDsClaim, []any{"a", 7})), ErrInvalidToken},
		{"email not a string", sign(t, k1, "k1", with(id, "email", true)), ErrInvalidToken},
		{"alg none", none, ErrInvalidToken},
		{"alg none without signature segment", strings.TrimSuffix(none, "."), ErrInvalidToken},
		{"HS256 with the RSA public key PEM", signWith(t, jwt.SigningMethodHS256, pemKey, "k1", access), ErrInvalidToken},
		{"HS256 with the RSA public key DER", signWith(t, jwt.SigningMethodHS256, der, "k1", access), ErrInvalidToken},
		{"RS512 with the right key", signWith(t, jwt.SigningMethodRS512, k1, "k1", access), ErrInvalidToken},
		{"PS256 with the right key", signWith(t, jwt.SigningMethodPS256, k1, "k1", access), ErrInvalidToken},
		{"signed by a stranger", sign(t, stranger, "k1", access), ErrInvalidToken},
		{"no kid", sign(t, k1, "", access), ErrInvalidToken},
		{"unknown kid", sign(t, stranger, "nope", access), ErrInvalidToken},
		{"payload swapped", parts[0] + "." + otherPayload + "." + parts[2], ErrInvalidToken},
		{"signature dropped", parts[0] + "." + parts[1] + ".", ErrInvalidToken},
		{"header not JSON", b64([]byte("{")) + "." + parts[1] + "." + parts[2], ErrInvalidToken},
		{"payload not an object", parts[0] + "." + b64([]byte(`"x"`)) + "." + parts[2], ErrInvalidToken},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], ErrInvalidToken},
		{"four segments", valid + ".x", ErrInvalidToken},
		{"garbage", "garbage", ErrInvalidToken},
		{"dots", "..", ErrInvalidToken},
		{"empty", "", ErrInvalidToken},
		{"100 KB token", parts[0] + "." + strings.Repeat("A", 100<<10) + "." + parts[2], ErrInvalidToken},
		{"100 KB of garbage", strings.Repeat("x", 100<<10), ErrInvalidToken},
	})
}

func TestCognitoTokenUseRestricted(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url(), WithTokenUse("id"))
	token := sign(t, rsaKey(t, 0), "k1", claimsFor("access"))
	_, err := v.Verify(context.Background(), token)
	assertSentinel(t, err, ErrInvalidToken, token)
}

func TestCognitoIssuerDerivedJWKS(t *testing.T) {
	idp := newFakeIdP(t, true)
	v, err := NewCognitoVerifier(WithIssuer(idp.srv.URL), WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Verify(context.Background(), sign(t, rsaKey(t, 0), "k1", with(claimsFor("id"), "iss", idp.srv.URL))); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestCognitoKeyRotation(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url())
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, rsaKey(t, 0), "k1", claimsFor("id"))); err != nil {
		t.Fatalf("old key: %v", err)
	}
	k2 := rsaKey(t, 1)
	rotated := sign(t, k2, "k2", claimsFor("id"))
	_, err := v.Verify(ctx, rotated)
	assertSentinel(t, err, ErrInvalidToken, rotated) // Not published yet.

	idp.publish("k2", k2)
	before := idp.fetches.Load()
	eventually(t, func() error {
		_, err := v.Verify(ctx, rotated)
		return err
	})
	if n := idp.fetches.Load() - before; n < 1 {
		t.Fatalf("no JWKS fetch after rotation")
	}
}

func TestCognitoUnknownKIDFloodFailsFast(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url(), WithRefreshUnknownKIDInterval(time.Minute))
	before := idp.fetches.Load()
	stranger := rsaKey(t, 1)
	tokens := make([]string, 200)
	for i := range tokens {
		tokens[i] = sign(t, stranger, fmt.Sprintf("forged-%d", i), claimsFor("access"))
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(tokens))
	for i, tok := range tokens {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, errs[i] = v.Verify(ctx, tok)
		})
	}
	wg.Wait()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("200 unknown kids took %v", d)
	}
	for i, err := range errs {
		assertSentinel(t, err, ErrInvalidToken, tokens[i])
	}
	if n := idp.fetches.Load() - before; n > 1 {
		t.Fatalf("%d JWKS fetches for one interval, want at most 1", n)
	}
}

func TestCognitoVerifyHonoursDeadline(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url())
	idp.hang.Store(true)
	token := sign(t, rsaKey(t, 1), "k2", claimsFor("access"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := v.Verify(ctx, token)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Verify took %v with a 100ms deadline", d)
	}
	assertSentinel(t, err, ErrAuthUnavailable, token)
}

func TestCognitoJWKSDownAtStart(t *testing.T) {
	idp := newFakeIdP(t, false)
	// The JWKS address takes connections and drops them until it is up:
	// the port stays ours, so no other test can take it meanwhile.
	gate := &downUntilUp{Listener: idp.srv.Listener}
	idp.srv.Listener = gate
	idp.srv.Start()

	start := time.Now()
	v := newTestVerifier(t, idp.url())
	if d := time.Since(start); d > time.Second {
		t.Fatalf("construction took %v with the JWKS down", d)
	}
	token := sign(t, rsaKey(t, 0), "k1", claimsFor("id"))
	_, err := v.Verify(context.Background(), token)
	assertSentinel(t, err, ErrAuthUnavailable, token)

	gate.up.Store(true)
	eventually(t, func() error {
		_, err := v.Verify(context.Background(), token)
		return err
	})
}

// downUntilUp is a listener that closes every connection it accepts until
// up is set.
type downUntilUp struct {
	net.Listener
	up atomic.Bool
}

func (d *downUntilUp) Accept() (net.Conn, error) {
	for {
		c, err := d.Listener.Accept()
		if err != nil || d.up.Load() {
			return c, err
		}
		_ = c.Close()
	}
}

func TestCognitoJWKSDownLater(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url())
	ctx := context.Background()
	k1, k2 := rsaKey(t, 0), rsaKey(t, 1)
	if _, err := v.Verify(ctx, sign(t, k1, "k1", claimsFor("id"))); err != nil {
		t.Fatalf("before outage: %v", err)
	}

	idp.status.Store(http.StatusServiceUnavailable)
	idp.publish("k2", k2)
	// Keys already fetched keep working; a distinct token skips the cache.
	if _, err := v.Verify(ctx, sign(t, k1, "k1", with(claimsFor("id"), "sub", "user-2"))); err != nil {
		t.Fatalf("known key during outage: %v", err)
	}
	rotated := sign(t, k2, "k2", claimsFor("id"))
	_, err := v.Verify(ctx, rotated)
	assertSentinel(t, err, ErrAuthUnavailable, rotated)

	idp.status.Store(0)
	eventually(t, func() error {
		_, err := v.Verify(ctx, rotated)
		return err
	})
}

func TestNewCognitoVerifierOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []CognitoOption
		want string
	}{
		{"no issuer", nil, "WithUserPool or WithIssuer"},
		{"empty region", []CognitoOption{WithUserPool("", testPool)}, "WithUserPool"},
		{"pool id with a slash", []CognitoOption{WithUserPool(testRegion, "a/../b")}, "WithUserPool"},
		{"empty issuer", []CognitoOption{WithIssuer(" ")}, "WithIssuer"},
		{"issuer not a URL", []CognitoOption{WithIssuer("cognito")}, "WithIssuer"},
		{"relative JWKS URL", []CognitoOption{WithUserPool(testRegion, testPool), WithJWKSURL("/jwks.json")}, "WithJWKSURL"},
		{"ftp JWKS URL", []CognitoOption{WithUserPool(testRegion, testPool), WithJWKSURL("ftp://example.com/jwks.json")}, "WithJWKSURL"},
		{"token use refresh", []CognitoOption{WithTokenUse("id", "refresh")}, "WithTokenUse"},
		{"no token use", []CognitoOption{WithTokenUse("", " ")}, "WithTokenUse"},
		{"empty claim name", []CognitoOption{WithAccountIDsClaim("")}, "WithAccountIDsClaim"},
		{"negative leeway", []CognitoOption{WithLeeway(-time.Second)}, "WithLeeway"},
		{"huge leeway", []CognitoOption{WithLeeway(time.Hour)}, "WithLeeway"},
		{"zero unknown kid interval", []CognitoOption{WithRefreshUnknownKIDInterval(0)}, "WithRefreshUnknownKIDInterval"},
		{"zero refresh interval", []CognitoOption{WithRefreshInterval(0)}, "WithRefreshInterval"},
		{"nil client", []CognitoOption{WithHTTPClient(nil)}, "WithHTTPClient"},
		{"zero timeout", []CognitoOption{WithHTTPTimeout(0)}, "WithHTTPTimeout"},
		{"nil logger", []CognitoOption{WithLogger(nil)}, "WithLogger"},
		{"negative cache size", []CognitoOption{WithCacheSize(-1)}, "WithCacheSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewCognitoVerifier(tt.opts...)
			if err == nil {
				v.Close()
				t.Fatal("NewCognitoVerifier succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %s", err, tt.want)
			}
		})
	}
}

func TestCognitoCloseStopsRefresh(t *testing.T) {
	idp := newFakeIdP(t, true)
	noRefresh := func() error {
		if n := refreshGoroutines(); n != 0 {
			return fmt.Errorf("%d JWKS refresh goroutines running", n)
		}
		return nil
	}
	eventually(t, noRefresh) // Earlier tests' verifiers are closed by now.
	v := newTestVerifier(t, idp.url())
	if n := refreshGoroutines(); n != 1 {
		t.Fatalf("%d refresh goroutines after New, want 1", n)
	}
	for range 2 { // Close is idempotent.
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, noRefresh)
}

// refreshGoroutines counts jwkset's JWKS refresh goroutines.
func refreshGoroutines() int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	return strings.Count(buf.String(), "jwkset.NewStorageFromHTTP.func")
}

// eventually retries f until it succeeds, failing the test after 5 s.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after 5s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
