package loadclient

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/turumba/realtime/internal/loadstats"
)

// Recorder collects what the clients receive, phase by phase. A delivery
// counts in the phase during which its event was sent (by the timestamp the
// event carries), so a late delivery is still charged to its own phase.
type Recorder struct {
	cur atomic.Pointer[Phase]

	Received    atomic.Uint64 // every message the clients read, measured or not
	Other       atomic.Uint64 // events that are not measured (presence, ...)
	Stale       atomic.Uint64 // measured events sent before the first phase
	BadEvents   atomic.Uint64 // measured events without a usable seq or timestamp
	Disconnects atomic.Uint64 // connections the server closed or lost

	firstDisconnect atomic.Pointer[string] // why the first of them ended, as the client saw it
}

// FirstDisconnect is what the client saw when the first connection the
// server closed or lost ended ("" if none did).
func (r *Recorder) FirstDisconnect() string {
	if p := r.firstDisconnect.Load(); p != nil {
		return *p
	}
	return ""
}

func (r *Recorder) disconnected(n int, err error) {
	r.Disconnects.Add(1)
	why := fmt.Sprintf("client %d at %s: %v", n, time.Now().Format("15:04:05.000"), err)
	r.firstDisconnect.CompareAndSwap(nil, &why)
}

// Phase is one measured interval: the deliveries of the events sent in it.
type Phase struct {
	Name  string
	Start time.Time
	prev  *Phase
	start int64

	Latency  *loadstats.Histogram // delivery latency: receive time minus the event's timestamp
	Lag      *loadstats.Histogram // how late the injector sent each event against its schedule
	Distinct atomic.Uint64        // deliveries, duplicates excluded
	Dups     atomic.Uint64        // deliveries of an event the client had already received

	Sent     atomic.Uint64 // events published
	Failed   atomic.Uint64 // events whose publish failed
	Expected atomic.Uint64 // deliveries the published events owe: their recipients
}

// Begin starts a phase: events sent from now on count in it.
func (r *Recorder) Begin(name string) *Phase {
	now := time.Now()
	p := &Phase{Name: name, Start: now, start: now.UnixNano(), prev: r.cur.Load(),
		Latency: loadstats.NewHistogram(), Lag: loadstats.NewHistogram()}
	r.cur.Store(p)
	return p
}

// phaseFor finds the phase an event sent at sent (Unix ns) belongs to.
func (r *Recorder) phaseFor(sent int64) *Phase {
	p := r.cur.Load()
	for p != nil && sent < p.start {
		p = p.prev
	}
	return p
}

// Missing is the number of deliveries owed and not (yet) received.
func (p *Phase) Missing() uint64 {
	e, d := p.Expected.Load(), p.Distinct.Load()
	if d >= e {
		return 0
	}
	return e - d
}
