package redisadapter

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	sioredis "github.com/zishang520/socket.io/adapters/redis/v3"
	libadapter "github.com/zishang520/socket.io/adapters/redis/v3/adapter"
	"github.com/zishang520/socket.io/servers/socket/v3"
)

// The tests in this file run the scenarios this package exists for on our
// adapter and on the library's own streams adapter: ours must lose, repeat
// and leak nothing; the library's figures are only logged, for comparison
// (docs/scaling.md quotes them).

func libStreams(rdb *redis.Client, prefix string) socket.AdapterConstructor {
	o := libadapter.DefaultRedisStreamsAdapterOptions()
	o.SetStreamName(prefix + "lib")
	o.SetChannelPrefix(prefix + "lib")
	o.SetSessionKeyPrefix(prefix + "libsess:")
	o.SetBlockTimeInMs(200)
	return &libadapter.RedisStreamsAdapterBuilder{Redis: sioredis.NewRedisClient(context.Background(), rdb), Opts: o}
}

// TestCompareLiveTraffic moves a client across instances six times while
// two instances publish about 1000 events/s and the token check takes 30 ms.
func TestCompareLiveTraffic(t *testing.T) {
	for _, lib := range []bool{false, true} {
		name := map[bool]string{false: "redisadapter", true: "library streams adapter"}[lib]
		fo := fleetOpts{n: 3, window: time.Minute, needReal: true}
		if lib {
			fo.ctor = libStreams
		}
		f := newFleet(t, fo)
		for _, n := range f.nodes {
			n.delay.Store(int64(30 * time.Millisecond))
		}
		c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
		stop := f.publish("r", 500*time.Microsecond)
		recovered := 0
		for move := range 6 {
			time.Sleep(150 * time.Millisecond)
			c.drop()
			time.Sleep(50 * time.Millisecond) // the library's session key is not ours to poll
			if err := c.connect(f.nodes[(move+1)%3].http.URL); err != nil {
				t.Fatal(err)
			}
			if c.isRecovered() {
				recovered++
			}
		}
		time.Sleep(200 * time.Millisecond)
		sent := stop()
		time.Sleep(500 * time.Millisecond)
		seen := map[int]int{}
		for _, s := range c.seqs() {
			seen[s]++
		}
		missing, dups := 0, 0
		for i := range sent {
			if seen[i] == 0 {
				missing++
			}
			if seen[i] > 1 {
				dups += seen[i] - 1
			}
		}
		t.Logf("%s: %d events, %d/6 moves recovered, %d missed, %d duplicated", name, sent, recovered, missing, dups)
		if !lib && (dups > 0 || missing > 0) {
			explain(t, c, sent)
			t.Errorf("%s: %d missed and %d duplicated across the moves; want none", name, missing, dups)
		}
	}
}

// TestCompareRefusedRecovery counts the missed packets a client is sent
// when its token is refused on reconnection.
func TestCompareRefusedRecovery(t *testing.T) {
	for _, lib := range []bool{false, true} {
		name := map[bool]string{false: "redisadapter", true: "library streams adapter"}[lib]
		fo := fleetOpts{n: 2, window: time.Minute, needReal: true}
		if lib {
			fo.ctor = libStreams
		}
		f := newFleet(t, fo)
		c := dial(t, f.nodes[0].http.URL, map[string]any{"token": "ok", "rooms": []any{"r"}})
		f.nodes[0].emit("r", map[string]any{"seq": 0})
		eventually(t, 3*time.Second, func() error { return contiguous(c.seqs(), 0, 1) })
		c.drop()
		for i := 1; i <= 20; i++ {
			f.nodes[0].emit("r", map[string]any{"seq": i})
		}
		f.nodes[1].refuse.Store(true)
		time.Sleep(50 * time.Millisecond)
		_ = c.connect(f.nodes[1].http.URL)
		time.Sleep(200 * time.Millisecond)
		c.mu.Lock()
		sentToRefused := c.preConnect
		c.mu.Unlock()
		t.Logf("%s: a refused client was sent %d of the 20 packets it missed", name, sentToRefused)
		if !lib && sentToRefused != 0 {
			t.Errorf("%s: a client whose token was refused was sent %d missed packets; want 0", name, sentToRefused)
		}
	}
}
