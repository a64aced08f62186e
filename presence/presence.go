// Package presence holds the realtime.PresenceStore implementations: an
// in-process store for one instance and a Redis store for a fleet. Both pass
// the conformance suite in presencetest, so they behave the same.
package presence

import "time"

// DefaultTTL is how long a connection stays alive without a heartbeat
// (PRESENCE_TTL_SECONDS).
const DefaultTTL = 60 * time.Second
