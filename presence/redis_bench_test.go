package presence

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/presence/presencetest"
)

// BenchmarkRedisConnectDisconnect measures one tab opening and closing on the
// real Redis, and counts the round trips of each call.
func BenchmarkRedisConnectDisconnect(b *testing.B) {
	e := newRealEnv(b)
	s, _, rt := e.counted(b)
	ctx := context.Background()
	// Another tab of each user is open, as with most agents; the benchmark's
	// tab is the second one.
	const users = 1000
	for u := range users {
		if _, _, err := s.Connect(ctx, presencetest.Conn(fmt.Sprint("u", u), "first", "a1", "a2")); err != nil {
			b.Fatal(err)
		}
	}
	// Load the disconnect script too, so the loop sees the steady state.
	if _, _, err := s.Disconnect(ctx, presencetest.Conn("nobody", "none")); err != nil {
		b.Fatal(err)
	}
	var connects, disconnects, ops int64
	for i := 0; b.Loop(); i++ {
		c := presencetest.Conn(fmt.Sprint("u", i%users), fmt.Sprint("c", i), "a1", "a2", "a3")
		n0 := rt.n.Load()
		if _, _, err := s.Connect(ctx, c); err != nil {
			b.Fatal(err)
		}
		n1 := rt.n.Load()
		if _, _, err := s.Disconnect(ctx, c); err != nil {
			b.Fatal(err)
		}
		connects += n1 - n0
		disconnects += rt.n.Load() - n1
		ops++
	}
	b.ReportMetric(float64(connects)/float64(ops), "roundtrips/connect")
	b.ReportMetric(float64(disconnects)/float64(ops), "roundtrips/disconnect")
}

// BenchmarkRedisHeartbeat10k measures one heartbeat tick of an instance with
// 10,000 connections (5,000 users with two tabs, three accounts each) on the
// real Redis: "refresh" is the steady state, "reregister" the tick after
// Redis restarted empty, when every connection is registered again.
func BenchmarkRedisHeartbeat10k(b *testing.B) {
	const n = 10000
	conns := make([]realtime.PresenceConn, n)
	for i := range conns {
		u := i / 2
		conns[i] = presencetest.Conn(fmt.Sprint("user-", u), fmt.Sprint("conn-", i),
			fmt.Sprint("acct-", u%50), fmt.Sprint("acct-", (u+1)%50), fmt.Sprint("acct-", (u+2)%50))
	}
	b.Run("refresh", func(b *testing.B) {
		e := newRealEnv(b)
		s, _, rt := e.counted(b)
		ctx := context.Background()
		if _, err := s.Heartbeat(ctx, conns); err != nil {
			b.Fatal(err)
		}
		n0 := rt.n.Load()
		for b.Loop() {
			if _, err := s.Heartbeat(ctx, conns); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rt.n.Load()-n0)/float64(b.N), "roundtrips/heartbeat")
	})
	b.Run("reregister", func(b *testing.B) {
		e := newRealEnv(b)
		s, _, rt := e.counted(b)
		ctx := context.Background()
		if err := s.Check(ctx); err != nil { // dial outside the count
			b.Fatal(err)
		}
		var trips int64
		for b.Loop() {
			b.StopTimer()
			e.lose()
			b.StartTimer()
			n0 := rt.n.Load()
			ps, err := s.Heartbeat(ctx, conns)
			if err != nil || len(ps) != n/2 {
				b.Fatalf("Heartbeat: %d users back, %v; want %d", len(ps), err, n/2)
			}
			trips += rt.n.Load() - n0
		}
		b.ReportMetric(float64(trips)/float64(b.N), "roundtrips/heartbeat")
	})
}

// BenchmarkRedisExpire10k measures a surviving instance expiring all 10,000
// connections of a crashed one (5,000 users going offline) on the real Redis.
func BenchmarkRedisExpire10k(b *testing.B) {
	const n = 10000
	conns := make([]realtime.PresenceConn, n)
	for i := range conns {
		u := i / 2
		conns[i] = presencetest.Conn(fmt.Sprint("user-", u), fmt.Sprint("conn-", i), fmt.Sprint("acct-", u%50))
	}
	e := newRealEnv(b)
	e.ttl = time.Millisecond // the crashed instance's connections lapse at once
	crashed := e.store(b)
	s, _, rt := e.counted(b)
	ctx := context.Background()
	if _, err := s.Expire(ctx); err != nil { // load the script outside the count
		b.Fatal(err)
	}
	var trips int64
	for b.Loop() {
		b.StopTimer()
		if _, err := crashed.Heartbeat(ctx, conns); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
		b.StartTimer()
		n0 := rt.n.Load()
		ps, err := s.Expire(ctx)
		if err != nil || len(ps) != n/2 {
			b.Fatalf("Expire: %d users offline, %v; want %d", len(ps), err, n/2)
		}
		trips += rt.n.Load() - n0
	}
	b.ReportMetric(float64(trips)/float64(b.N), "roundtrips/expire")
}
