package auth

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestDevVerifierRoundTrip(t *testing.T) {
	d := NewDevVerifier(nil)
	token, err := d.Mint("user-1", "dev@example.com", []string{"acc-1", "acc-2"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := d.Verify(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "user-1" || id.Email != "dev@example.com" || !slices.Equal(id.AccountIDs, []string{"acc-1", "acc-2"}) {
		t.Fatalf("identity = %+v", id)
	}
	if d := time.Until(id.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expires in %v, want an hour", d)
	}
}

func TestDevVerifierRejects(t *testing.T) {
	secret := []byte("dev-secret")
	d := NewDevVerifier(secret)
	mint := func(sub string, ttl time.Duration) string {
		token, err := d.Mint(sub, "", nil, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	valid := mint("user-1", time.Hour)
	parts := strings.Split(valid, ".")
	other := strings.Split(mint("admin", time.Hour), ".")
	fromRandom, err := NewDevVerifier(nil).Mint("user-1", "", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"iss": DevIssuer, "sub": "user-1", "exp": time.Now().Add(time.Hour).Unix()}

	checkRejects(t, d, []rejectCase{
		{"expired", mint("user-1", -time.Minute), ErrTokenExpired},
		{"another process's secret", fromRandom, ErrInvalidToken},
		{"payload swapped", parts[0] + "." + other[1] + "." + parts[2], ErrInvalidToken},
		{"alg none", signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims), ErrInvalidToken},
		{"HS512 with the secret", signWith(t, jwt.SigningMethodHS512, secret, "", claims), ErrInvalidToken},
		{"RS256", sign(t, rsaKey(t, 0), "k1", claims), ErrInvalidToken},
		{"wrong issuer", signWith(t, jwt.SigningMethodHS256, secret, "", with(claims, "iss", "someone")), ErrInvalidToken},
		{"no exp", signWith(t, jwt.SigningMethodHS256, secret, "", with(claims, "exp", nil)), ErrInvalidToken},
		{"garbage", "garbage", ErrInvalidToken},
		{"100 KB token", strings.Repeat("a", 100<<10), ErrInvalidToken},
	})
}

func TestDevVerifierSharedSecret(t *testing.T) {
	secret := []byte("shared")
	token, err := NewDevVerifier(secret).Mint("user-1", "", []string{"acc"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secret[0] = 'X' // The verifier keeps its own copy.
	if _, err := NewDevVerifier([]byte("shared")).Verify(context.Background(), token); err != nil {
		t.Fatalf("second verifier with the same secret: %v", err)
	}
}

func TestDevVerifierMintRejects(t *testing.T) {
	d := NewDevVerifier(nil)
	if _, err := d.Mint("", "", nil, time.Hour); err == nil {
		t.Fatal("minted a token without sub")
	}
	if _, err := d.Mint("user-1", "", []string{"a,b"}, time.Hour); err == nil {
		t.Fatal("minted an account id with a comma")
	}
}
