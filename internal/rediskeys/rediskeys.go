// Package rediskeys removes what a run left under its Redis key prefix:
// the tests' prefixes and the load tool's.
package rediskeys

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// DeletePrefix deletes every key under prefix and reports how many it
// deleted.
func DeletePrefix(ctx context.Context, rdb redis.UniversalClient, prefix string) (int, error) {
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("scan %s*: %w", prefix, err)
	}
	deleted := 0
	for chunk := range slices.Chunk(keys, 1000) {
		n, err := rdb.Del(ctx, chunk...).Result()
		deleted += int(n)
		if err != nil {
			return deleted, fmt.Errorf("delete %s*: %w", prefix, err)
		}
	}
	return deleted, nil
}
