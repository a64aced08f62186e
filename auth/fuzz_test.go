package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds arbitrary strings through the whole token path: nothing may
// panic, every error wraps exactly one sentinel and never quotes the token,
// and only a genuine token is accepted.
func FuzzVerify(f *testing.F) {
	idp := newFakeIdP(f, true)
	// Forged kids must fail fast rather than wait for the limiter, or
	// minimizing such an input takes ages.
	v := newTestVerifier(f, idp.url(), WithRefreshUnknownKIDInterval(time.Hour))
	k1 := rsaKey(f, 0)
	valid := sign(f, k1, "k1", claimsFor("id"))
	parts := strings.Split(valid, ".")
	seeds := []string{
		valid,
		sign(f, k1, "k1", claimsFor("access")),
		sign(f, k1, "k1", with(claimsFor("id"), "exp", time.Now().Add(-time.Hour).Unix())),
		sign(f, rsaKey(f, 1), "k9", claimsFor("id")),
		signWith(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "k1", claimsFor("id")),
		parts[0] + "." + parts[1] + ".",
		parts[0] + "." + parts[1] + "." + strings.ToUpper(parts[2]),
		parts[0] + ".e30." + parts[2],
		"eyJhbGciOiJSUzI1NiJ9." + parts[1] + "." + parts[2],
		parts[1] + "." + parts[0] + "." + parts[2],
		"", "garbage", "a.b.c", "..", "...",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		id, err := v.Verify(ctx, token)
		if err == nil {
			if id.Subject != "user-1" || id.ExpiresAt.IsZero() {
				t.Fatalf("accepted with identity %+v", id)
			}
			return
		}
		matched := 0
		for _, s := range sentinels {
			if errors.Is(err, s) {
				matched++
			}
		}
		if matched != 1 {
			t.Fatalf("error %q wraps %d sentinels, want 1", err, matched)
		}
		for _, part := range append(strings.Split(token, "."), token) {
			if len(part) >= 16 && strings.Contains(err.Error(), part) {
				t.Fatalf("error %q quotes the token", err)
			}
		}
	})
}
