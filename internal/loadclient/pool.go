package loadclient

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turumba/realtime/internal/loadstats"
)

// ConnectResult is the outcome of connecting a layout's clients.
type ConnectResult struct {
	Clients  []*Client // the connected ones, in no particular order
	Failed   int
	FirstErr error
	Elapsed  time.Duration        // from the first dial to the last client ready
	Latency  *loadstats.Histogram // per client: dial to namespace connected (and joined, with join)
	PerSec   float64              // connected clients per second of Elapsed
	Attempts int
}

// ConnectAll connects clients from..to-1 of l, concurrency at a time; with
// join each also subscribes to its account and joins its conversation.
// Every connected client's read loop is running when it returns.
func ConnectAll(ctx context.Context, d *Dialer, o ConnectOptions, l Layout, rec *Recorder, tokens []string,
	from, to, concurrency int, join bool) ConnectResult {
	res := ConnectResult{Latency: loadstats.NewHistogram(), Attempts: to - from}
	var (
		mu     sync.Mutex
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	next.Store(int64(from))
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				t0 := time.Now()
				c, err := Connect(ctx, d, o, i, l, rec, tokens[i])
				if err == nil && join {
					if err = c.Join(ctx, o.Timeout); err != nil {
						_ = c.conn.Close()
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if res.FirstErr == nil {
						res.FirstErr = fmt.Errorf("client %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				res.Latency.Record(i, time.Since(t0))
				c.Start()
				mu.Lock()
				res.Clients = append(res.Clients, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Failed = int(failed.Load())
	if res.FirstErr == nil && ctx.Err() != nil && len(res.Clients)+res.Failed < res.Attempts {
		res.FirstErr = ctx.Err()
	}
	if res.Elapsed > 0 {
		res.PerSec = float64(len(res.Clients)) / res.Elapsed.Seconds()
	}
	return res
}

// CloseAll closes clients in parallel and waits for their read loops.
func CloseAll(clients []*Client) {
	var wg sync.WaitGroup
	const workers = 32
	ch := make(chan *Client)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ch {
				c.Close()
			}
		}()
	}
	for _, c := range clients {
		ch <- c
	}
	close(ch)
	wg.Wait()
}
