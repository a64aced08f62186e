package presence

import (
	"time"

	"github.com/turumba/realtime"
)

// MemoryStore is the in-process PresenceStore, right for a single instance.
//
// It is an alias of realtime.MemoryPresence rather than a type of its own
// because realtime.New defaults to it, and the root package cannot import
// presence (presence imports realtime): the code lives in the root, and this
// name keeps the layout's promise that every store is found in presence.
type MemoryStore = realtime.MemoryPresence

// NewMemoryStore returns an empty MemoryStore whose connections expire ttl
// after their last sign of life; ttl <= 0 means DefaultTTL.
func NewMemoryStore(ttl time.Duration) *MemoryStore {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return realtime.NewMemoryPresence(ttl)
}
