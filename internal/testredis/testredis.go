// Package testredis gives tests of other packages the real Redis under a
// key prefix of their own.
package testredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turumba/realtime/internal/rediskeys"
	"github.com/turumba/realtime/internal/testenv"
)

// Start is the command that starts the Redis the tests expect.
const Start = `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no`

// URL is the Redis the tests use: $REDIS_URL, or redis://127.0.0.1:6379.
func URL() string {
	if url := os.Getenv("REDIS_URL"); url != "" {
		return url
	}
	return "redis://127.0.0.1:6379"
}

// Client returns a client of the Redis at URL() and a key prefix
// ("<name>-<random>:") of the test's own; the prefix's keys are deleted and
// the client closed when the test ends. It skips the test when that Redis
// does not answer (testenv.Missing).
func Client(tb testing.TB, name string) (*redis.Client, string) {
	tb.Helper()
	url := URL()
	o, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("REDIS_URL=%q: %v", url, err)
	}
	rdb := redis.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		testenv.Missing(tb, "no Redis at %s (%v); start one with: %s", url, err, Start)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := name + "-" + hex.EncodeToString(b) + ":"
	tb.Cleanup(func() {
		DeletePrefix(tb, rdb, prefix)
		_ = rdb.Close()
	})
	return rdb, prefix
}

// DeletePrefix deletes every key under prefix.
func DeletePrefix(tb testing.TB, rdb *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rediskeys.DeletePrefix(ctx, rdb, prefix); err != nil {
		tb.Error(err)
	}
}
