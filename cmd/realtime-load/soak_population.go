package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turumba/realtime/internal/loadclient"
	"github.com/turumba/realtime/internal/loadstats"
)

// population keeps N clients connected while a random subset of them is
// disconnected and replaced at a steady rate: slot i is always client i of
// the layout (the same agent, account and conversation), reconnecting with a
// fresh token. A client the server disconnects is replaced too, and counted.
type population struct {
	s       *session
	opts    loadclient.ConnectOptions
	perSec  float64       // planned replacements per second
	grace   time.Duration // deliveries in flight when a connection closes are not owed
	workers int

	mu     sync.Mutex
	slots  []*member // nil while the slot's client is being replaced
	paused bool      // no planned replacements (unexpected disconnects are still replaced)
	firstF string    // the first connect failure

	jobs chan replacement
	stop chan struct{}
	wg   sync.WaitGroup

	replaced   atomic.Uint64 // planned replacements completed
	failures   atomic.Uint64 // connect attempts that failed (each is retried)
	unexpected atomic.Uint64 // clients found disconnected by the server and replaced
	owed       atomic.Uint64 // deliveries owed to closed connections (see loadclient.Driver.Owed)
	missing    atomic.Uint64 // of those, not received
	connectLat *loadstats.Histogram
}

// member is a connected client and its books' lower bound.
type member struct {
	c    *loadclient.Client
	from uint64 // the driver's watermark once it had joined
}

// replacement is a slot to reconnect, and the client it held (nil if none).
type replacement struct {
	slot    int
	old     *member
	until   time.Time // the old client is owed what was accepted up to then
	planned bool      // churn, not a disconnect by the server
}

// newPopulation takes over the session's connected clients.
func newPopulation(s *session, perSec float64, grace time.Duration) *population {
	p := &population{s: s, perSec: perSec, grace: grace, workers: min(max(s.cfg.concurrency, 1), 16),
		opts:  loadclient.ConnectOptions{Addr: s.t.addr, ReadBuffer: s.cfg.readBuffer, Timeout: 15 * time.Second},
		slots: make([]*member, s.cfg.clients), jobs: make(chan replacement, s.cfg.clients), stop: make(chan struct{}),
		connectLat: loadstats.NewHistogram()}
	for _, c := range s.clients {
		p.slots[c.N] = &member{c: c, from: s.driver.Watermark(c)}
	}
	// Slots whose first connect failed are connected by the workers.
	for i, m := range p.slots {
		if m == nil {
			p.jobs <- replacement{slot: i}
		}
	}
	s.clients = nil // the population closes them
	return p
}

// start runs the churn and the workers that reconnect.
func (p *population) start(ctx context.Context) {
	for range p.workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-p.stop:
					return
				case r := <-p.jobs:
					p.replace(ctx, r)
				}
			}
		}()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.churn(ctx)
	}()
}

// churn picks the clients to replace, every 100 ms, and hands to the
// workers those the server disconnected.
func (p *population) churn(ctx context.Context) {
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	var budget float64
	last, lastDisc := time.Now(), p.s.rec.Disconnects.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case now := <-t.C:
			if d := p.s.rec.Disconnects.Load(); d != lastDisc {
				lastDisc = d
				p.collectDead(now)
			}
			p.mu.Lock()
			if p.paused {
				budget = 0
			} else {
				budget += p.perSec * now.Sub(last).Seconds()
			}
			var picked []replacement
			for ; budget >= 1; budget-- {
				// A few tries find a connected slot: only a small share is being replaced.
				for try := 0; try < 8; try++ {
					i := rand.IntN(len(p.slots))
					if m := p.slots[i]; m != nil {
						p.slots[i] = nil
						picked = append(picked, replacement{slot: i, old: m, until: now.Add(-p.grace), planned: true})
						break
					}
				}
			}
			p.mu.Unlock()
			for _, r := range picked {
				p.jobs <- r
			}
			last = now
		}
	}
}

// collectDead hands the clients whose connection ended by itself to the workers.
func (p *population) collectDead(now time.Time) {
	var dead []replacement
	p.mu.Lock()
	for i, m := range p.slots {
		if m == nil {
			continue
		}
		select {
		case <-m.c.Done():
			p.slots[i] = nil
			dead = append(dead, replacement{slot: i, old: m, until: now.Add(-p.grace)})
		default:
		}
	}
	p.mu.Unlock()
	p.unexpected.Add(uint64(len(dead)))
	for _, r := range dead {
		p.jobs <- r
	}
}

// replace closes the slot's old client, settles its books and connects the
// slot again, retrying until it succeeds or the population stops.
func (p *population) replace(ctx context.Context, r replacement) {
	if r.old != nil {
		r.old.c.Close()
		p.settleBooks(r.old, r.until)
		if r.planned {
			p.replaced.Add(1)
		}
	}
	for {
		err := p.connect(ctx, r.slot)
		if err == nil {
			return
		}
		p.failures.Add(1)
		p.mu.Lock()
		if p.firstF == "" {
			p.firstF = fmt.Sprintf("client %d at %s: %v", r.slot, time.Now().Format("15:04:05.000"), err)
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// connect gives slot i a new client: a fresh token, connect, subscribe and join.
func (p *population) connect(ctx context.Context, i int) error {
	t0 := time.Now()
	l := p.s.cfg.layout()
	token, err := loadclient.DevToken(ctx, p.s.hc, p.s.t.base, l, i, 2*time.Hour)
	if err != nil {
		return err
	}
	c, err := loadclient.Connect(ctx, p.s.dialer, p.opts, i, l, p.s.rec, token)
	if err != nil {
		return err
	}
	if err := c.Join(ctx, p.opts.Timeout); err != nil {
		c.Close()
		return err
	}
	c.Start()
	p.connectLat.Record(i, time.Since(t0))
	m := &member{c: c, from: p.s.driver.Watermark(c)}
	p.mu.Lock()
	p.slots[i] = m
	p.mu.Unlock()
	return nil
}

// settleBooks counts what a closed client was owed and lacked.
func (p *population) settleBooks(m *member, until time.Time) {
	owed, missing := p.s.driver.Owed(m.c, m.from, until)
	p.owed.Add(owed)
	p.missing.Add(missing)
}

// connected is the number of slots holding a client.
func (p *population) connected() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.slots {
		if m != nil {
			n++
		}
	}
	return n
}

func (p *population) setPaused(paused bool) {
	p.mu.Lock()
	p.paused = paused
	p.mu.Unlock()
}

// restore waits until every slot holds a client again (planned replacements
// paused), at most within.
func (p *population) restore(ctx context.Context, within time.Duration) error {
	p.setPaused(true)
	deadline := time.Now().Add(within)
	for {
		n := p.connected()
		if n == len(p.slots) && len(p.jobs) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("population not restored: %d of %d clients connected after %s (first connect failure: %s)",
				n, len(p.slots), within, p.firstFailure())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *population) firstFailure() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstF
}

// close stops the churn and the workers, closes every client and settles
// their books up to until.
func (p *population) close(until time.Time) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
	var left []replacement
	for len(p.jobs) > 0 { // left behind when the soak ended early
		if r := <-p.jobs; r.old != nil {
			left = append(left, r)
		}
	}
	p.mu.Lock()
	for i, m := range p.slots {
		if m != nil {
			left = append(left, replacement{slot: i, old: m, until: until})
			p.slots[i] = nil
		}
	}
	p.mu.Unlock()
	clients := make([]*loadclient.Client, len(left))
	for i, r := range left {
		clients[i] = r.old.c
	}
	loadclient.CloseAll(clients)
	for _, r := range left {
		p.settleBooks(r.old, r.until)
	}
}
