package rediskeys

import (
	"context"
	"fmt"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

func TestDeletePrefixKeepsOtherKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	for i := range 2500 { // more than one SCAN page and one DEL chunk
		mr.Set(fmt.Sprintf("run-1:k%d", i), "v")
	}
	mr.Set("run-10:k", "v") // another run whose prefix starts the same
	mr.Set("other", "v")

	n, err := DeletePrefix(ctx, rdb, "run-1:")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2500 {
		t.Errorf("deleted %d keys, want 2500", n)
	}
	if got := mr.Keys(); len(got) != 2 || got[0] != "other" || got[1] != "run-10:k" {
		t.Errorf("left %v, want [other run-10:k]", got)
	}
	if n, err := DeletePrefix(ctx, rdb, "run-1:"); n != 0 || err != nil {
		t.Errorf("second delete: %d, %v; want 0, nil", n, err)
	}
	mr.Close()
	if _, err := DeletePrefix(ctx, rdb, "run-1:"); err == nil {
		t.Error("no error from a Redis that is gone")
	}
}
