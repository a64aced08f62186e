package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/turumba/realtime"
)

// DevIssuer is the "iss" of the tokens a DevVerifier mints.
const DevIssuer = "turumba-realtime-dev"

// DevVerifier mints and verifies HS256 tokens for local development (the
// service's dev mode) only: whoever holds its secret can mint any identity,
// so it must never guard a real deployment. Its tokens carry the same claims
// as Cognito id tokens, with the accounts in DefaultAccountIDsClaim as a
// comma-separated string, and its errors wrap the same sentinels.
type DevVerifier struct {
	secret []byte
	parser *jwt.Parser
	rules  *claimRules
}

var _ realtime.TokenVerifier = (*DevVerifier)(nil)

// NewDevVerifier returns a dev-mode verifier signing with secret, or with a
// random per-process secret when secret is empty.
func NewDevVerifier(secret []byte) *DevVerifier {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		rand.Read(secret) // Never fails since Go 1.24.
	} else {
		secret = bytes.Clone(secret)
	}
	return &DevVerifier{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithoutClaimsValidation(),
			jwt.WithStrictDecoding(),
		),
		rules: newClaimRules(DevIssuer, nil, nil, DefaultAccountIDsClaim, DefaultLeeway, time.Now),
	}
}

// Mint returns a token for sub that expires after ttl; a ttl of zero or less
// gives an already expired token, which tests use.
func (d *DevVerifier) Mint(sub, email string, accounts []string, ttl time.Duration) (string, error) {
	if sub == "" {
		return "", errors.New("auth: mint dev token: empty sub")
	}
	for _, a := range accounts {
		if strings.Contains(a, ",") {
			return "", fmt.Errorf("auth: mint dev token: account id %q contains a comma", a)
		}
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"iss":                  DevIssuer,
		"sub":                  sub,
		"token_use":            "id",
		"iat":                  now.Unix(),
		"exp":                  now.Add(ttl).Unix(),
		DefaultAccountIDsClaim: strings.Join(accounts, ","),
	}
	if email != "" {
		claims["email"] = email
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(d.secret)
	if err != nil {
		return "", fmt.Errorf("auth: mint dev token: %w", err)
	}
	return token, nil
}

// Verify checks a token minted with the same secret and returns its identity.
func (d *DevVerifier) Verify(_ context.Context, token string) (realtime.Identity, error) {
	if err := checkSize(token); err != nil {
		return realtime.Identity{}, err
	}
	return verifyToken(d.parser, d.rules, token, func(*jwt.Token) (any, error) {
		return d.secret, nil
	})
}
