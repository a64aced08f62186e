package loadclient

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/turumba/realtime/internal/sio"
)

// fakePoster accepts every publish, or refuses them while fail is set.
type fakePoster struct{ fail bool }

func (p *fakePoster) Publish(context.Context, string, []byte) error {
	if p.fail {
		return errors.New("refused")
	}
	return nil
}
func (p *fakePoster) Close() error { return nil }

// A client that joins late is owed only what was published after its
// watermark, and a client that leaves only what was accepted before it left;
// a publish that failed is owed to nobody.
func TestOwedWindow(t *testing.T) {
	rec := &Recorder{}
	ph := rec.Begin("p")
	l := Layout{Clients: 2, Accounts: 1, ConvSize: 5}
	early := &Client{N: 0, rec: rec}
	late := &Client{N: 1, rec: rec}
	fp := &fakePoster{}
	d := NewDriver(l, KindAccount, []Poster{fp}, []*Client{early, late})
	ctx := context.Background()
	for range 3 {
		d.publish(ctx, fp, ph, nil) // 1..3
	}
	from := d.Watermark(late)
	if from != 3 || d.Watermark(early) != 3 {
		t.Fatalf("watermark %d", from)
	}
	time.Sleep(time.Millisecond)
	between := time.Now()
	time.Sleep(time.Millisecond)
	for range 3 {
		d.publish(ctx, fp, ph, nil) // 4..6
	}
	fp.fail = true
	d.publish(ctx, fp, ph, nil) // 7, refused
	stamp := string(sio.AppendTime(nil, time.Now()))[1:31]
	for _, seq := range []int{2, 4, 6} {
		deliver(t, late, EventAccount, map[string]any{"contact_identifier": strconv.Itoa(seq), "created_at": stamp})
	}
	if owed, missing := d.Owed(late, from, time.Now()); owed != 3 || missing != 1 {
		t.Errorf("late client: owed %d missing %d, want 3 and 1 (seq 5)", owed, missing)
	}
	if owed, missing := d.Owed(late, from, between); owed != 0 || missing != 0 {
		t.Errorf("late client, left before the second batch: owed %d missing %d", owed, missing)
	}
	if owed, missing := d.Owed(early, 0, time.Now()); owed != 6 || missing != 6 {
		t.Errorf("early client that received nothing: owed %d missing %d, want 6 and 6", owed, missing)
	}
}
