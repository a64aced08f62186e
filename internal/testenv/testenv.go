// Package testenv decides what a test does when a service it needs (Redis,
// RabbitMQ, NATS) is not running: under REALTIME_REQUIRE_SERVICES=1, as in
// CI, it fails, since a skipped test is a test that did not run; elsewhere
// it skips, so that `go test ./...` works on a machine without them.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// Required reports whether a missing service fails the test
// (REALTIME_REQUIRE_SERVICES=1).
func Required() bool { return os.Getenv("REALTIME_REQUIRE_SERVICES") == "1" }

// Missing ends a test whose service is not reachable: it fails under
// Required, and skips otherwise.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatal(msg + " (required: REALTIME_REQUIRE_SERVICES=1)")
	}
	tb.Skip(msg + " (set REALTIME_REQUIRE_SERVICES=1 to fail instead)")
}
