package realtime

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type typingRecorder struct {
	mu     sync.Mutex
	events []string
}

func (r *typingRecorder) emit(room string, s typingState, typing bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	state := "stop"
	if typing {
		state = "start"
	}
	r.events = append(r.events, room+" "+s.userID+" "+state)
}

func (r *typingRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func TestTypingExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &typingRecorder{}
		tr := newTypingTracker(5*time.Second, rec.emit)
		k := typingKey{room: "conv:a:c", sid: "s1"}
		tr.start(k, typingState{conversationID: "c", userID: "alice"})
		if got := rec.take(); !slices.Equal(got, []string{"conv:a:c alice start"}) {
			t.Fatalf("start relayed %v", got)
		}
		time.Sleep(4 * time.Second)
		// A repeated start while typing re-arms the expiry without relaying again.
		tr.start(k, typingState{conversationID: "c", userID: "alice"})
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if got := rec.take(); len(got) != 0 {
			t.Fatalf("re-armed indicator expired early or was relayed twice: %v", got)
		}
		time.Sleep(1*time.Second + time.Millisecond)
		synctest.Wait()
		if got := rec.take(); !slices.Equal(got, []string{"conv:a:c alice stop"}) {
			t.Fatalf("expiry relayed %v", got)
		}
		// A stop after expiry relays nothing more.
		tr.stop(k)
		if got := rec.take(); len(got) != 0 {
			t.Fatalf("stop after expiry relayed %v", got)
		}
	})
}

func TestTypingStopAndDisconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &typingRecorder{}
		tr := newTypingTracker(5*time.Second, rec.emit)
		tr.start(typingKey{room: "conv:a:1", sid: "s1"}, typingState{userID: "alice"})
		tr.start(typingKey{room: "conv:a:2", sid: "s1"}, typingState{userID: "alice"})
		tr.start(typingKey{room: "conv:a:1", sid: "s2"}, typingState{userID: "bob"})
		rec.take()
		tr.stop(typingKey{room: "conv:a:1", sid: "s2"})
		if got := rec.take(); !slices.Equal(got, []string{"conv:a:1 bob stop"}) {
			t.Fatalf("stop relayed %v", got)
		}
		tr.stopConn("s1")
		got := rec.take()
		slices.Sort(got)
		if !slices.Equal(got, []string{"conv:a:1 alice stop", "conv:a:2 alice stop"}) {
			t.Fatalf("disconnect relayed %v", got)
		}
		// Nothing is left to expire.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := rec.take(); len(got) != 0 {
			t.Fatalf("timers fired after stop: %v", got)
		}
	})
}

func TestTypingStopAllCancelsTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &typingRecorder{}
		tr := newTypingTracker(time.Second, rec.emit)
		tr.start(typingKey{room: "conv:a:1", sid: "s1"}, typingState{userID: "alice"})
		rec.take()
		tr.stopAll()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := rec.take(); len(got) != 0 {
			t.Fatalf("stopAll left timers running: %v", got)
		}
	})
}
