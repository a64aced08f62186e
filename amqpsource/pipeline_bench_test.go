package amqpsource

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/internal/testredis"
	"github.com/turumba/realtime/redisadapter"
)

// countingSource wraps an EventSource and signals when n events went
// through the Hub's handler (routed and handed to the Socket.IO adapter).
type countingSource struct {
	realtime.EventSource
	n    int64
	seen atomic.Int64
	done chan struct{}
}

func (c *countingSource) Consume(ctx context.Context, patterns []string, handle realtime.EventHandler) error {
	return c.EventSource.Consume(ctx, patterns, func(ctx context.Context, e realtime.Event) error {
		err := handle(ctx, e)
		if c.seen.Add(1) == c.n {
			close(c.done)
		}
		return err
	})
}

// pipelinedCountingSource is countingSource for a PipelinedEventSource: the
// Hub consumes with ConsumePipelined, and an event counts once its done
// has been called.
type pipelinedCountingSource struct {
	*countingSource
	src realtime.PipelinedEventSource
}

func (c *pipelinedCountingSource) ConsumePipelined(ctx context.Context, patterns []string, handle realtime.AsyncEventHandler) error {
	return c.src.ConsumePipelined(ctx, patterns, func(ctx context.Context, e realtime.Event, done func(error)) {
		handle(ctx, e, func(err error) {
			done(err)
			if c.seen.Add(1) == c.n {
				close(c.done)
			}
		})
	})
}

// memorySource replays n events as fast as the handler takes them: the
// pipeline with the broker taken out.
type memorySource struct{ n int }

func (m memorySource) Consume(ctx context.Context, _ []string, handle realtime.EventHandler) error {
	for i := 0; i < m.n && ctx.Err() == nil; i++ {
		if err := handle(ctx, realtime.Event{RoutingKey: "conversation.message.created", Body: seqEvent(i)}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

// runPipeline runs a Hub over src until b.N events went through it and
// reports events/s.
func runPipeline(b *testing.B, src realtime.EventSource, opts ...realtime.Option) {
	cs := &countingSource{EventSource: src, n: int64(b.N), done: make(chan struct{})}
	var counted realtime.EventSource = cs
	if ps, ok := src.(realtime.PipelinedEventSource); ok {
		counted = &pipelinedCountingSource{countingSource: cs, src: ps}
	}
	hub, err := realtime.New(append([]realtime.Option{realtime.WithEventSource(counted),
		realtime.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.ResetTimer()
	start := time.Now()
	ran := make(chan error, 1)
	go func() { ran <- hub.Run(ctx) }()
	select {
	case <-cs.done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d events went through in 2 minutes", cs.seen.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.StopTimer()
	cancel()
	if err := <-ran; err != nil {
		b.Fatal(err)
	}
	_ = hub.Shutdown(context.Background())
}

// BenchmarkPipeline measures consume -> route -> emit through a Hub: events
// from the real broker (published beforehand, untimed), consumed with
// Consume (sequential) and ConsumePipelined, with the in-memory adapter and
// with the Redis streams adapter (on the real Redis), and from memory.
func BenchmarkPipeline(b *testing.B) {
	broker := func(b *testing.B, pipelined bool, opts ...realtime.Option) {
		br := newBroker(b)
		n := br.names()
		declare, err := New(br.url, append(n.options(), WithLogger(slog.New(slog.DiscardHandler)))...)
		if err != nil {
			b.Fatal(err)
		}
		run := startConsume(b, declare, []string{"conversation.#"}, func(context.Context, realtime.Event) error { return nil })
		waitConnected(b, declare)
		run.stop(b)
		if err := br.publisher(n.exchange).publishSeq(context.Background(), 0, b.N, 1000); err != nil {
			b.Fatal(err)
		}
		src, err := New(br.url, append(n.options(), WithLogger(slog.New(slog.DiscardHandler)))...)
		if err != nil {
			b.Fatal(err)
		}
		runPipeline(b, src, append(opts, realtime.WithPipelinedConsume(pipelined))...)
	}
	b.Run("broker", func(b *testing.B) { broker(b, false) })
	b.Run("broker-pipelined", func(b *testing.B) { broker(b, true) })
	b.Run("broker+redis", func(b *testing.B) { broker(b, false, realtime.WithAdapter(benchRedisAdapter(b))) })
	b.Run("broker+redis-pipelined", func(b *testing.B) { broker(b, true, realtime.WithAdapter(benchRedisAdapter(b))) })
	b.Run("memory", func(b *testing.B) {
		runPipeline(b, memorySource{n: b.N})
	})
}

// benchRedisAdapter is the Redis streams adapter on the real Redis, under a
// key prefix of its own.
func benchRedisAdapter(b *testing.B) *redisadapter.Adapter {
	b.Helper()
	rdb, prefix := testredis.Client(b, "amqpsource-bench")
	ad, err := redisadapter.New(rdb, redisadapter.WithKeyPrefix(prefix), redisadapter.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ad.Close() })
	return ad
}
