package auth

import (
	"context"
	"testing"
)

// BenchmarkVerifyCold measures a handshake whose token is not cached: one
// RS256 signature check plus claim parsing.
func BenchmarkVerifyCold(b *testing.B) {
	idp := newFakeIdP(b, true)
	v := newTestVerifier(b, idp.url(), WithCacheSize(0))
	benchVerify(b, v)
}

// BenchmarkVerifyCached measures a reconnect with a token verified before.
func BenchmarkVerifyCached(b *testing.B) {
	idp := newFakeIdP(b, true)
	v := newTestVerifier(b, idp.url())
	benchVerify(b, v)
}

func benchVerify(b *testing.B, v *CognitoVerifier) {
	token := sign(b, rsaKey(b, 0), "k1", claimsFor("id"))
	ctx := context.Background()
	if _, err := v.Verify(ctx, token); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, token); err != nil {
			b.Fatal(err)
		}
	}
}
