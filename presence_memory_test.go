package realtime_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/turumba/realtime"
	"github.com/turumba/realtime/presence/presencetest"
)

func TestMemoryPresenceConformance(t *testing.T) {
	presencetest.Run(t, presencetest.Harness{
		// In the bubble time.Now is fake, so sleeping moves the store's clock.
		Wrap: synctest.Test,
		Setup: func(t *testing.T) presencetest.Backend {
			s := &restartable{}
			s.cur.Store(realtime.NewMemoryPresence(time.Minute))
			return presencetest.Backend{
				TTL:      time.Minute,
				Instance: func() realtime.PresenceStore { return s },
				Advance:  time.Sleep,
				// A restart of the process that holds it: empty again.
				Lose: func() { s.cur.Store(realtime.NewMemoryPresence(time.Minute)) },
			}
		},
	})
}

// restartable is a MemoryPresence that the test can replace with an empty
// one under the stores it handed out.
type restartable struct {
	cur atomic.Pointer[realtime.MemoryPresence]
}

func (r *restartable) Connect(ctx context.Context, c realtime.PresenceConn) (realtime.Presence, bool, error) {
	return r.cur.Load().Connect(ctx, c)
}
func (r *restartable) Disconnect(ctx context.Context, c realtime.PresenceConn) (realtime.Presence, bool, error) {
	return r.cur.Load().Disconnect(ctx, c)
}
func (r *restartable) SetStatus(ctx context.Context, c realtime.PresenceConn, st realtime.Status) (realtime.Presence, bool, error) {
	return r.cur.Load().SetStatus(ctx, c, st)
}
func (r *restartable) Heartbeat(ctx context.Context, conns []realtime.PresenceConn) ([]realtime.Presence, error) {
	return r.cur.Load().Heartbeat(ctx, conns)
}
func (r *restartable) Expire(ctx context.Context) ([]realtime.Presence, error) {
	return r.cur.Load().Expire(ctx)
}
func (r *restartable) List(ctx context.Context, accountID string) ([]realtime.Presence, error) {
	return r.cur.Load().List(ctx, accountID)
}

func TestMemoryPresenceDefaultTTL(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		if got := realtime.NewMemoryPresence(ttl).TTL(); got != 60*time.Second {
			t.Errorf("NewMemoryPresence(%v).TTL() = %v, want 60s", ttl, got)
		}
	}
}

// heartbeatLoop is what each Hub instance runs: every TTL/3 it heartbeats its
// own connections and expires lapsed ones, recording the changes it reports.
type heartbeatLoop struct {
	store realtime.PresenceStore
	conns []realtime.PresenceConn
	ttl   time.Duration

	mu      sync.Mutex
	changes []change
}

// change is a presence change a loop reported, and when.
type change struct {
	realtime.Presence
	at time.Duration
}

func (l *heartbeatLoop) run(ctx context.Context, start time.Time) {
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		back, err := l.store.Heartbeat(ctx, l.conns)
		if err != nil {
			panic(err)
		}
		gone, err := l.store.Expire(ctx)
		if err != nil {
			panic(err)
		}
		l.mu.Lock()
		for _, p := range append(back, gone...) {
			l.changes = append(l.changes, change{p, time.Since(start)})
		}
		l.mu.Unlock()
	}
}

// TestMemoryPresenceCrashedInstanceExpires runs two instances' heartbeat
// loops on fake time: when one dies without cleaning up, its user goes
// offline within TTL plus one heartbeat interval, reported once, while a
// user with a tab on the surviving instance stays online.
func TestMemoryPresenceCrashedInstanceExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 60 * time.Second
		ctx := context.Background()
		store := realtime.NewMemoryPresence(ttl)
		onlyDead := realtime.PresenceConn{ID: "c1", UserID: "alice", AccountIDs: []string{"a1"}}
		bothDead := realtime.PresenceConn{ID: "c2", UserID: "bob", AccountIDs: []string{"a1"}}
		bothAlive := realtime.PresenceConn{ID: "c3", UserID: "bob", AccountIDs: []string{"a1"}}
		for _, c := range []realtime.PresenceConn{onlyDead, bothDead, bothAlive} {
			if _, _, err := store.Connect(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		deadCtx, crash := context.WithCancel(ctx)
		aliveCtx, stop := context.WithCancel(ctx)
		dead := &heartbeatLoop{store: store, conns: []realtime.PresenceConn{onlyDead, bothDead}, ttl: ttl}
		alive := &heartbeatLoop{store: store, conns: []realtime.PresenceConn{bothAlive}, ttl: ttl}
		var wg sync.WaitGroup
		wg.Go(func() { dead.run(deadCtx, start) })
		wg.Go(func() { alive.run(aliveCtx, start) })

		time.Sleep(5 * time.Minute)
		synctest.Wait()
		crash() // the dead instance stops without a word
		crashedAt := time.Now()
		time.Sleep(ttl + ttl/3)
		synctest.Wait()

		ps, err := store.List(ctx, "a1")
		if err != nil || len(ps) != 1 || ps[0].UserID != "bob" || ps[0].Status != realtime.StatusOnline {
			t.Fatalf("List after the crash = %+v, %v; want bob online", ps, err)
		}
		stop()
		wg.Wait()
		if len(dead.changes) != 0 {
			t.Errorf("crashed instance reported %+v", dead.changes)
		}
		if len(alive.changes) != 1 {
			t.Fatalf("surviving instance reported %+v, want alice offline once", alive.changes)
		}
		// The offline change came within TTL plus one interval of the last
		// heartbeat, which was at most one interval before the crash.
		deadline := crashedAt.Sub(start) + ttl + ttl/3
		if c := alive.changes[0]; c.UserID != "alice" || c.Status != realtime.StatusOffline || c.at > deadline {
			t.Fatalf("change %+v, want alice offline by %v", c, deadline)
		}
	})
}
