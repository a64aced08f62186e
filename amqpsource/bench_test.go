package amqpsource

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turumba/realtime"
)

// cpuTime is the user and system CPU time this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkConsume measures the events per second a Source takes from a
// real broker through to a no-op handler: b.N events are published (with
// confirms, untimed), then the time to consume and acknowledge them all is
// measured from the moment Consume is called, connection setup included.
func BenchmarkConsume(b *testing.B) {
	for _, prefetch := range []int{1, 32, DefaultPrefetch, 1024} {
		b.Run(fmt.Sprintf("prefetch=%d", prefetch), func(b *testing.B) {
			br := newBroker(b)
			n := br.names()
			// Declare the topology first so that the untimed publish lands in the queue.
			declare, err := New(br.url, append(n.options(), WithLogger(slog.New(slog.DiscardHandler)))...)
			if err != nil {
				b.Fatal(err)
			}
			patterns := []string{"conversation.#"}
			run := startConsume(b, declare, patterns, func(context.Context, realtime.Event) error { return nil })
			waitConnected(b, declare)
			run.stop(b)
			if err := br.publisher(n.exchange).publishSeq(context.Background(), 0, b.N, 1000); err != nil {
				b.Fatal(err)
			}

			src, err := New(br.url, append(n.options(), WithPrefetch(prefetch), WithLogger(slog.New(slog.DiscardHandler)))...)
			if err != nil {
				b.Fatal(err)
			}
			var handled atomic.Int64
			done := make(chan struct{})
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime(b)
			run = startConsume(b, src, patterns, func(context.Context, realtime.Event) error {
				if handled.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			})
			select {
			case <-done:
			case <-time.After(5 * time.Minute):
				b.Fatalf("consumed %d of %d events in 5 minutes", handled.Load(), b.N)
			}
			elapsed, cpu := time.Since(start), cpuTime(b)-cpu0
			b.StopTimer()
			run.stop(b)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			// This process's CPU per event: the client's cost, which unlike
			// the rate does not depend on what else shares the machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
		})
	}
}
