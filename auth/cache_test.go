package auth

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turumba/realtime"
)

func TestIdentityCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	key := func(i int) tokenKey { return tokenKey{byte(i), byte(i >> 8)} }
	ident := func(i int, ttl time.Duration) realtime.Identity {
		return realtime.Identity{Subject: fmt.Sprint("user-", i), AccountIDs: []string{"acc"}, ExpiresAt: now.Add(ttl)}
	}

	t.Run("hit until expiry", func(t *testing.T) {
		c := newIdentityCache(4)
		c.put(key(1), ident(1, time.Minute))
		if id, ok := c.get(key(1), now.Add(59*time.Second)); !ok || id.Subject != "user-1" {
			t.Fatalf("get before expiry = %+v, %v", id, ok)
		}
		if _, ok := c.get(key(1), now.Add(time.Minute)); ok {
			t.Fatal("expired entry served")
		}
		if n := c.len(); n != 0 {
			t.Fatalf("expired entry kept: len %d", n)
		}
	})

	t.Run("bounded, oldest evicted first", func(t *testing.T) {
		c := newIdentityCache(3)
		for i := range 10 {
			c.put(key(i), ident(i, time.Hour))
			if n := c.len(); n > 3 {
				t.Fatalf("len %d after %d puts, limit 3", n, i+1)
			}
		}
		for i := range 10 {
			_, ok := c.get(key(i), now)
			if want := i >= 7; ok != want {
				t.Fatalf("key %d cached = %v, want %v", i, ok, want)
			}
		}
	})

	t.Run("bound holds across expiry and re-insertion", func(t *testing.T) {
		c := newIdentityCache(2)
		for i := range 100 {
			c.put(key(i%5), ident(i%5, time.Duration(i%3)*time.Second))
			c.get(key(i%7), now.Add(time.Second))
			if n := c.len(); n > 2 {
				t.Fatalf("len %d, limit 2", n)
			}
		}
	})

	t.Run("callers cannot change the cached accounts", func(t *testing.T) {
		c := newIdentityCache(2)
		id := ident(1, time.Hour)
		c.put(key(1), id)
		id.AccountIDs[0] = "changed by the putter"
		got, _ := c.get(key(1), now)
		got.AccountIDs[0] = "changed by a getter"
		if again, _ := c.get(key(1), now); again.AccountIDs[0] != "acc" {
			t.Fatalf("cached accounts changed to %q", again.AccountIDs)
		}
	})
}

func TestCognitoCacheSkipsVerification(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url())
	ctx := context.Background()
	token := sign(t, rsaKey(t, 0), "k1", claimsFor("id"))
	first, err := v.Verify(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	first.AccountIDs[0] = "mutated"
	second, err := v.Verify(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if n := v.parses.Load(); n != 1 {
		t.Fatalf("%d verifications for one token verified twice, want 1", n)
	}
	if second.Subject != "user-1" || second.AccountIDs[0] != "acc-1" {
		t.Fatalf("cached identity = %+v", second)
	}

	bad := sign(t, rsaKey(t, 1), "k1", claimsFor("id"))
	for range 2 {
		_, err := v.Verify(ctx, bad)
		assertSentinel(t, err, ErrInvalidToken, bad)
	}
	if n := v.parses.Load(); n != 3 {
		t.Fatalf("%d verifications, want 3: rejected tokens must not be cached", n)
	}
}

func TestCognitoCacheExpiry(t *testing.T) {
	idp := newFakeIdP(t, true)
	base := time.Now()
	var offset atomic.Int64
	clock := func() time.Time { return base.Add(time.Duration(offset.Load())) }
	v := newTestVerifier(t, idp.url(), withClock(clock))
	ctx := context.Background()
	token := sign(t, rsaKey(t, 0), "k1", with(claimsFor("id"), "exp", base.Add(time.Minute).Unix()))

	for _, step := range []struct {
		at     time.Duration
		parses int64
		want   error
	}{
		{0, 1, nil},
		{30 * time.Second, 1, nil},            // Cached.
		{2 * time.Minute, 2, ErrTokenExpired}, // Past exp: not served, verified afresh.
		{2*time.Minute + time.Second, 3, ErrTokenExpired},
	} {
		offset.Store(int64(step.at))
		_, err := v.Verify(ctx, token)
		if step.want == nil && err != nil {
			t.Fatalf("at +%v: %v", step.at, err)
		}
		if step.want != nil {
			assertSentinel(t, err, step.want, token)
		}
		if n := v.parses.Load(); n != step.parses {
			t.Fatalf("at +%v: %d verifications, want %d", step.at, n, step.parses)
		}
	}
}

func TestCognitoCacheBound(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url(), WithCacheSize(2))
	ctx := context.Background()
	tokens := make([]string, 3)
	for i := range tokens {
		tokens[i] = sign(t, rsaKey(t, 0), "k1", with(claimsFor("id"), "sub", fmt.Sprint("user-", i)))
		if _, err := v.Verify(ctx, tokens[i]); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n != 2 {
		t.Fatalf("cache holds %d, limit 2", n)
	}
	for _, tc := range []struct {
		token  string
		parses int64
	}{{tokens[2], 3}, {tokens[0], 4}} { // The newest is cached, the oldest was evicted.
		if _, err := v.Verify(ctx, tc.token); err != nil {
			t.Fatal(err)
		}
		if n := v.parses.Load(); n != tc.parses {
			t.Fatalf("%d verifications, want %d", n, tc.parses)
		}
	}
}

func TestCognitoCacheOff(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url(), WithCacheSize(0))
	token := sign(t, rsaKey(t, 0), "k1", claimsFor("id"))
	for range 3 {
		if _, err := v.Verify(context.Background(), token); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.parses.Load(); n != 3 {
		t.Fatalf("%d verifications with the cache off, want 3", n)
	}
}

func TestCognitoCacheConcurrent(t *testing.T) {
	idp := newFakeIdP(t, true)
	v := newTestVerifier(t, idp.url(), WithCacheSize(3))
	tokens := make([]string, 5)
	for i := range tokens {
		tokens[i] = sign(t, rsaKey(t, 0), "k1", with(claimsFor("id"), "sub", fmt.Sprint("user-", i)))
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				n := (g + i) % len(tokens)
				id, err := v.Verify(context.Background(), tokens[n])
				if err != nil || id.Subject != fmt.Sprint("user-", n) {
					t.Errorf("Verify token %d = %+v, %v", n, id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := v.cache.len(); n > 3 {
		t.Fatalf("cache holds %d, limit 3", n)
	}
}
