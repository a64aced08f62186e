package realtime

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// countingPresence is a MemoryPresence that records the heartbeats it gets.
type countingPresence struct {
	*MemoryPresence
	mu    sync.Mutex
	beats [][]string
}

func (p *countingPresence) Heartbeat(ctx context.Context, conns []PresenceConn) ([]Presence, error) {
	ids := make([]string, len(conns))
	for i, c := range conns {
		ids[i] = c.ID
	}
	p.mu.Lock()
	p.beats = append(p.beats, ids)
	p.mu.Unlock()
	return p.MemoryPresence.Heartbeat(ctx, conns)
}

func (p *countingPresence) heartbeats() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]string(nil), p.beats...)
}

// TestHeartbeatLoop checks that live connections are refreshed every third of
// the TTL, in one call per tick, and that a socket the library already closed
// is released instead of being kept present.
func TestHeartbeatLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &countingPresence{MemoryPresence: NewMemoryPresence(3 * time.Second)}
		h, err := New(WithPresenceStore(store), WithPresenceTTL(3*time.Second), WithRecoveryWindow(0))
		if err != nil {
			t.Fatal(err)
		}
		live, dead := newFakeSocket("live"), newFakeSocket("dead")
		for _, fs := range []*fakeSocket{live, dead} {
			newConn(h, fs, Identity{Subject: "u-" + fs.sid, AccountIDs: []string{"acme"}}).start(false)
		}

		time.Sleep(time.Second + time.Millisecond)
		synctest.Wait()
		if got := store.heartbeats(); len(got) != 1 || len(got[0]) != 2 {
			t.Fatalf("after one interval: heartbeats %v, want one call with both connections", got)
		}

		dead.close() // the library closed it without telling the Hub
		time.Sleep(time.Second)
		synctest.Wait()
		got := store.heartbeats()
		if len(got) != 2 || len(got[1]) != 1 || got[1][0] != "live" {
			t.Fatalf("after the socket died: heartbeats %v, want only the live connection", got)
		}
		list, _ := store.List(context.Background(), "acme")
		if len(list) != 1 || list[0].UserID != "u-live" {
			t.Fatalf("presence after the dead socket was released: %+v", list)
		}

		// Past the TTL the live connection is still present: heartbeats kept it.
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if list, _ := store.List(context.Background(), "acme"); len(list) != 1 {
			t.Fatalf("live connection expired despite heartbeats: %+v", list)
		}
		if err := h.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
