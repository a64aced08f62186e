package auth

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"

	"github.com/turumba/realtime"
)

// tokenKey is a token's SHA-256, so the cache never holds a usable token.
type tokenKey [sha256.Size]byte

// identityCache remembers verified identities by token until the token
// expires, so a reconnect storm does not redo RSA verification. It holds at
// most limit entries and evicts the oldest first; it is safe for concurrent use.
type identityCache struct {
	mu      sync.Mutex
	limit   int
	entries map[tokenKey]realtime.Identity
	// order is a ring of the keys in insertion order; next is its oldest slot
	// once it is full. Every key of entries is in it, so len(entries) <= limit.
	order []tokenKey
	next  int
}

func newIdentityCache(limit int) *identityCache {
	return &identityCache{limit: limit, entries: make(map[tokenKey]realtime.Identity)}
}

// get returns the identity cached for k if it has not expired at now.
func (c *identityCache) get(k tokenKey, now time.Time) (realtime.Identity, bool) {
	c.mu.Lock()
	id, ok := c.entries[k]
	if ok && !now.Before(id.ExpiresAt) {
		// Expired: forget it; its ring slot is reused in turn.
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return realtime.Identity{}, false
	}
	// Callers own the slice they get; the cached one must not change.
	id.AccountIDs = slices.Clone(id.AccountIDs)
	return id, true
}

// put caches id for k, evicting the oldest entry when the cache is full.
func (c *identityCache) put(k tokenKey, id realtime.Identity) {
	id.AccountIDs = slices.Clone(id.AccountIDs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; ok {
		c.entries[k] = id
		return
	}
	if len(c.order) < c.limit {
		c.order = append(c.order, k)
	} else {
		delete(c.entries, c.order[c.next])
		c.order[c.next] = k
		c.next = (c.next + 1) % c.limit
	}
	c.entries[k] = id
}

// len returns the number of cached entries, expired ones included.
func (c *identityCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
