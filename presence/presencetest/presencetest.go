// Package presencetest is the conformance suite every realtime.PresenceStore
// must pass, so that the in-memory and Redis stores (and any future one)
// behave the same way for the Hub.
package presencetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/turumba/realtime"
)

// Backend is one fresh, empty presence backend for one test case.
type Backend struct {
	// TTL is the heartbeat TTL the stores were built with.
	TTL time.Duration
	// Instance returns a store as another Hub instance sees the backend;
	// stores of one Backend share their state.
	Instance func() realtime.PresenceStore
	// Advance moves the backend's clock forward by d.
	Advance func(d time.Duration)
	// Lose makes the backend forget everything, as a Redis restarted without
	// persistence does.
	Lose func()
}

// Harness describes the stores under test.
type Harness struct {
	// Setup returns a fresh Backend for one case; it may register cleanups.
	Setup func(t *testing.T) Backend
	// Wrap runs one case, for example inside testing/synctest's bubble so
	// that Advance can be time.Sleep; nil runs it directly.
	Wrap func(t *testing.T, f func(t *testing.T))
}

// Run runs the conformance suite against h, one subtest per case.
func Run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, b Backend)
	}{
		{"TwoTabsCloseOneStillOnline", testTwoTabsCloseOne},
		{"CloseBothOffline", testCloseBoth},
		{"AwaySurvivesNewTab", testAwaySurvivesNewTab},
		{"SetStatusTransitions", testSetStatusTransitions},
		{"DisconnectUnknown", testDisconnectUnknown},
		{"InvalidConn", testInvalidConn},
		{"ExpireOnceAcrossInstances", testExpireOnce},
		{"OtherInstanceKeepsUserOnline", testOtherInstanceKeepsOnline},
		{"HeartbeatKeepsAlive", testHeartbeatKeepsAlive},
		{"HeartbeatAfterExpireReregisters", testHeartbeatAfterExpire},
		{"HeartbeatAfterLoss", testHeartbeatAfterLoss},
		{"LapsedTabForgottenOnConnect", testLapsedTabForgotten},
		{"ListFirstPaint", testList},
		{"ListSkipsLapsed", testListSkipsLapsed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := func(t *testing.T) { tc.run(t, h.Setup(t)) }
			if h.Wrap != nil {
				h.Wrap(t, run)
				return
			}
			run(t)
		})
	}
}

// Conn returns connection id of user uid listing accounts.
func Conn(uid, id string, accounts ...string) realtime.PresenceConn {
	return realtime.PresenceConn{ID: id, UserID: uid, AccountIDs: accounts}
}

// want is the part of a Presence the suite checks; LastSeen is checked for
// being set, not for its value, since stores keep it at different precisions.
type want struct {
	user     string
	status   realtime.Status
	changed  bool
	accounts []string
}

func check(t *testing.T, op string, p realtime.Presence, changed bool, err error, w want) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	got := want{p.UserID, p.Status, changed, sorted(p.AccountIDs)}
	w.accounts = sorted(w.accounts)
	if got.user != w.user || got.status != w.status || got.changed != w.changed || !slices.Equal(got.accounts, w.accounts) {
		t.Fatalf("%s = %+v, want %+v", op, got, w)
	}
	if p.LastSeen.IsZero() {
		t.Fatalf("%s: LastSeen is zero", op)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	if s == nil {
		s = []string{}
	}
	return s
}

func connect(t *testing.T, s realtime.PresenceStore, c realtime.PresenceConn, w want) {
	t.Helper()
	p, changed, err := s.Connect(context.Background(), c)
	check(t, "Connect "+c.ID, p, changed, err, w)
}

func disconnect(t *testing.T, s realtime.PresenceStore, c realtime.PresenceConn, w want) {
	t.Helper()
	p, changed, err := s.Disconnect(context.Background(), c)
	check(t, "Disconnect "+c.ID, p, changed, err, w)
}

func setStatus(t *testing.T, s realtime.PresenceStore, c realtime.PresenceConn, st realtime.Status, w want) {
	t.Helper()
	p, changed, err := s.SetStatus(context.Background(), c, st)
	check(t, fmt.Sprintf("SetStatus %s %s", c.ID, st), p, changed, err, w)
}

// changes summarises presences as "user=status[accounts]" for comparison.
func changes(ps []realtime.Presence) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s=%s%v", p.UserID, p.Status, sorted(p.AccountIDs)))
	}
	slices.Sort(out)
	return out
}

func expectChanges(t *testing.T, op string, ps []realtime.Presence, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	got := changes(ps)
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", op, got, want)
	}
	for _, p := range ps {
		if p.LastSeen.IsZero() {
			t.Fatalf("%s: %s has zero LastSeen", op, p.UserID)
		}
	}
}

func heartbeat(t *testing.T, s realtime.PresenceStore, conns []realtime.PresenceConn, want ...string) {
	t.Helper()
	ps, err := s.Heartbeat(context.Background(), conns)
	expectChanges(t, "Heartbeat", ps, err, want...)
}

func expire(t *testing.T, s realtime.PresenceStore, want ...string) {
	t.Helper()
	ps, err := s.Expire(context.Background())
	expectChanges(t, "Expire", ps, err, want...)
}

func list(t *testing.T, s realtime.PresenceStore, account string, want ...string) {
	t.Helper()
	ps, err := s.List(context.Background(), account)
	expectChanges(t, "List "+account, ps, err, want...)
}

func testTwoTabsCloseOne(t *testing.T, b Backend) {
	s := b.Instance()
	tab1, tab2 := Conn("u1", "c1", "a1"), Conn("u1", "c2", "a1", "a2")
	connect(t, s, tab1, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
	connect(t, s, tab2, want{"u1", realtime.StatusOnline, false, []string{"a1", "a2"}})
	disconnect(t, s, tab1, want{"u1", realtime.StatusOnline, false, []string{"a1", "a2"}})
	list(t, s, "a1", "u1=online[a1 a2]")
	list(t, s, "a2", "u1=online[a1 a2]")
}

func testCloseBoth(t *testing.T, b Backend) {
	s := b.Instance()
	tab1, tab2 := Conn("u1", "c1", "a1"), Conn("u1", "c2", "a2")
	connect(t, s, tab1, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
	connect(t, s, tab2, want{"u1", realtime.StatusOnline, false, []string{"a1", "a2"}})
	disconnect(t, s, tab2, want{"u1", realtime.StatusOnline, false, []string{"a1"}})
	// The offline change names the accounts the user had, so that the
	// broadcast reaches their rooms (flaw 4 of the card).
	disconnect(t, s, tab1, want{"u1", realtime.StatusOffline, true, []string{"a1"}})
	list(t, s, "a1")
	list(t, s, "a2")
	// A disconnect delivered twice changes nothing.
	disconnect(t, s, tab1, want{"u1", realtime.StatusOffline, false, nil})
}

func testAwaySurvivesNewTab(t *testing.T, b Backend) {
	s := b.Instance()
	tab1, tab2, tab3 := Conn("u1", "c1", "a1"), Conn("u1", "c2", "a1"), Conn("u1", "c3", "a1")
	connect(t, s, tab1, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
	setStatus(t, s, tab1, realtime.StatusAway, want{"u1", realtime.StatusAway, true, []string{"a1"}})
	connect(t, s, tab2, want{"u1", realtime.StatusAway, false, []string{"a1"}})
	list(t, s, "a1", "u1=away[a1]")
	disconnect(t, s, tab1, want{"u1", realtime.StatusAway, false, []string{"a1"}})
	disconnect(t, s, tab2, want{"u1", realtime.StatusOffline, true, []string{"a1"}})
	// The choice is forgotten with the last connection.
	connect(t, s, tab3, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
}

func testSetStatusTransitions(t *testing.T, b Backend) {
	s := b.Instance()
	c := Conn("u1", "c1", "a1")
	connect(t, s, c, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
	steps := []struct {
		set     realtime.Status
		changed bool
		listed  []string
	}{
		{realtime.StatusOnline, false, []string{"u1=online[a1]"}},
		{realtime.StatusAway, true, []string{"u1=away[a1]"}},
		{realtime.StatusAway, false, []string{"u1=away[a1]"}},
		// offline while connected is "invisible": others see offline.
		{realtime.StatusOffline, true, nil},
		{realtime.StatusOffline, false, nil},
		{realtime.StatusOnline, true, []string{"u1=online[a1]"}},
	}
	for _, st := range steps {
		setStatus(t, s, c, st.set, want{"u1", st.set, st.changed, []string{"a1"}})
		list(t, s, "a1", st.listed...)
	}
	if _, _, err := s.SetStatus(context.Background(), c, "busy"); err == nil {
		t.Fatal("SetStatus busy: no error")
	}
	// An invisible user's new tab stays invisible.
	setStatus(t, s, c, realtime.StatusOffline, want{"u1", realtime.StatusOffline, true, []string{"a1"}})
	connect(t, s, Conn("u1", "c2", "a2"), want{"u1", realtime.StatusOffline, false, []string{"a1", "a2"}})
	list(t, s, "a2")
}

func testDisconnectUnknown(t *testing.T, b Backend) {
	s := b.Instance()
	disconnect(t, s, Conn("ghost", "c9", "a1"), want{"ghost", realtime.StatusOffline, false, nil})
	list(t, s, "a1")
}

func testInvalidConn(t *testing.T, b Backend) {
	s := b.Instance()
	ctx := context.Background()
	bad := []realtime.PresenceConn{
		Conn("", "c1", "a1"),
		Conn("u1", "", "a1"),
		Conn("u\x001", "c1", "a1"),
		Conn("u1", "c\x001", "a1"),
		Conn("u1", "c1", "a\x001"),
	}
	for _, c := range bad {
		if _, _, err := s.Connect(ctx, c); err == nil {
			t.Errorf("Connect(%q): no error", c)
		}
		if _, _, err := s.Disconnect(ctx, c); err == nil {
			t.Errorf("Disconnect(%q): no error", c)
		}
		if _, _, err := s.SetStatus(ctx, c, realtime.StatusAway); err == nil {
			t.Errorf("SetStatus(%q): no error", c)
		}
		if _, err := s.Heartbeat(ctx, []realtime.PresenceConn{Conn("u2", "c2"), c}); err == nil {
			t.Errorf("Heartbeat(%q): no error", c)
		}
	}
	// Nothing of a rejected batch was stored.
	list(t, s, "a1")
	disconnect(t, s, Conn("u2", "c2"), want{"u2", realtime.StatusOffline, false, nil})
}

// testExpireOnce is a crashed instance: its connections lapse, and of two
// surviving instances expiring at the same moment exactly one reports it.
func testExpireOnce(t *testing.T, b Backend) {
	crashed, alive1, alive2 := b.Instance(), b.Instance(), b.Instance()
	connect(t, crashed, Conn("u1", "c1", "a1", "a2"), want{"u1", realtime.StatusOnline, true, []string{"a1", "a2"}})
	setStatus(t, crashed, Conn("u1", "c1", "a1", "a2"), realtime.StatusAway, want{"u1", realtime.StatusAway, true, []string{"a1", "a2"}})
	connect(t, crashed, Conn("u3", "c4", "a1"), want{"u3", realtime.StatusOnline, true, []string{"a1"}})
	live := Conn("u2", "c2", "a1")
	connect(t, alive1, live, want{"u2", realtime.StatusOnline, true, []string{"a1"}})

	b.Advance(b.TTL / 2)
	heartbeat(t, alive1, []realtime.PresenceConn{live})
	expire(t, alive2) // nothing has lapsed yet
	b.Advance(b.TTL/2 + b.TTL/4)

	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all []realtime.Presence
	)
	for _, s := range []realtime.PresenceStore{alive1, alive2, alive1, alive2} {
		wg.Go(func() {
			ps, err := s.Expire(context.Background())
			if err != nil {
				t.Errorf("Expire: %v", err)
			}
			mu.Lock()
			all = append(all, ps...)
			mu.Unlock()
		})
	}
	wg.Wait()
	expectChanges(t, "concurrent Expire", all, nil, "u1=offline[a1 a2]", "u3=offline[a1]")
	expire(t, alive1)
	list(t, alive2, "a1", "u2=online[a1]")
	// The lapsed connection's late disconnect changes nothing.
	disconnect(t, alive1, Conn("u1", "c1", "a1", "a2"), want{"u1", realtime.StatusOffline, false, nil})
}

// testOtherInstanceKeepsOnline is a user on two instances, one of which dies.
func testOtherInstanceKeepsOnline(t *testing.T, b Backend) {
	dead, alive := b.Instance(), b.Instance()
	onDead, onAlive := Conn("u1", "c1", "a1", "a2"), Conn("u1", "c2", "a1")
	connect(t, dead, onDead, want{"u1", realtime.StatusOnline, true, []string{"a1", "a2"}})
	connect(t, alive, onAlive, want{"u1", realtime.StatusOnline, false, []string{"a1", "a2"}})
	b.Advance(b.TTL / 2)
	heartbeat(t, alive, []realtime.PresenceConn{onAlive})
	b.Advance(b.TTL/2 + b.TTL/4)
	expire(t, alive)
	list(t, alive, "a1", "u1=online[a1]")
	list(t, alive, "a2")
	disconnect(t, alive, onAlive, want{"u1", realtime.StatusOffline, true, []string{"a1"}})
}

func testHeartbeatKeepsAlive(t *testing.T, b Backend) {
	s := b.Instance()
	conns := []realtime.PresenceConn{Conn("u1", "c1", "a1"), Conn("u1", "c2", "a1"), Conn("u2", "c3", "a1")}
	for _, c := range conns {
		if _, _, err := s.Connect(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		b.Advance(b.TTL / 2)
		heartbeat(t, s, conns)
		expire(t, s)
	}
	list(t, s, "a1", "u1=online[a1]", "u2=online[a1]")
	heartbeat(t, s, nil)
}

// testHeartbeatAfterExpire is an instance that stalled past the TTL: another
// one expired its connections, and its next heartbeat brings them back.
func testHeartbeatAfterExpire(t *testing.T, b Backend) {
	stalled, other := b.Instance(), b.Instance()
	c := Conn("u1", "c1", "a1")
	connect(t, stalled, c, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
	b.Advance(b.TTL + b.TTL/4)
	expire(t, other, "u1=offline[a1]")
	heartbeat(t, stalled, []realtime.PresenceConn{c}, "u1=online[a1]")
	heartbeat(t, stalled, []realtime.PresenceConn{c})
	list(t, other, "a1", "u1=online[a1]")
}

// testHeartbeatAfterLoss is Redis restarting empty: the next heartbeat of
// each instance re-registers its connections and reports who came back.
func testHeartbeatAfterLoss(t *testing.T, b Backend) {
	s := b.Instance()
	conns := []realtime.PresenceConn{Conn("u1", "c1", "a1"), Conn("u1", "c2", "a2"), Conn("u2", "c3", "a1")}
	for _, c := range conns {
		if _, _, err := s.Connect(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	b.Lose()
	list(t, s, "a1")
	heartbeat(t, s, conns, "u1=online[a1 a2]", "u2=online[a1]")
	heartbeat(t, s, conns)
	list(t, s, "a1", "u1=online[a1 a2]", "u2=online[a1]")
	// A status set before the next heartbeat re-registers its connection too.
	b.Lose()
	setStatus(t, s, conns[2], realtime.StatusAway, want{"u2", realtime.StatusAway, true, []string{"a1"}})
	heartbeat(t, s, conns, "u1=online[a1 a2]")
	list(t, s, "a1", "u1=online[a1 a2]", "u2=away[a1]")
}

// testLapsedTabForgotten is a user whose only connection lapsed (its
// instance crashed) opening a new one before anyone ran Expire: the lapsed
// connection is gone, and so is the status chosen on it.
func testLapsedTabForgotten(t *testing.T, b Backend) {
	crashed, alive := b.Instance(), b.Instance()
	old, fresh := Conn("u1", "c1", "a1", "a2"), Conn("u1", "c2", "a1")
	connect(t, crashed, old, want{"u1", realtime.StatusOnline, true, []string{"a1", "a2"}})
	setStatus(t, crashed, old, realtime.StatusAway, want{"u1", realtime.StatusAway, true, []string{"a1", "a2"}})
	b.Advance(b.TTL + b.TTL/4)
	connect(t, alive, fresh, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
	expire(t, alive)
	list(t, alive, "a2")
	list(t, alive, "a1", "u1=online[a1]")
}

func testList(t *testing.T, b Backend) {
	s := b.Instance()
	for _, c := range []realtime.PresenceConn{
		Conn("online", "c1", "a1"),
		Conn("away", "c2", "a1", "a2"),
		Conn("invisible", "c3", "a1"),
		Conn("gone", "c4", "a1"),
		Conn("elsewhere", "c5", "a2"),
	} {
		if _, _, err := s.Connect(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(t, s, Conn("away", "c2", "a1", "a2"), realtime.StatusAway, want{"away", realtime.StatusAway, true, []string{"a1", "a2"}})
	setStatus(t, s, Conn("invisible", "c3", "a1"), realtime.StatusOffline, want{"invisible", realtime.StatusOffline, true, []string{"a1"}})
	disconnect(t, s, Conn("gone", "c4", "a1"), want{"gone", realtime.StatusOffline, true, []string{"a1"}})
	list(t, s, "a1", "away=away[a1 a2]", "online=online[a1]")
	list(t, s, "a2", "away=away[a1 a2]", "elsewhere=online[a2]")
	list(t, s, "a3")
}

// testListSkipsLapsed lists no user whose connections lapsed, even before
// anyone ran Expire.
func testListSkipsLapsed(t *testing.T, b Backend) {
	s := b.Instance()
	kept, lapsed := Conn("u1", "c1", "a1"), Conn("u2", "c2", "a1")
	connect(t, s, kept, want{"u1", realtime.StatusOnline, true, []string{"a1"}})
	connect(t, s, lapsed, want{"u2", realtime.StatusOnline, true, []string{"a1"}})
	b.Advance(b.TTL / 2)
	heartbeat(t, s, []realtime.PresenceConn{kept})
	b.Advance(b.TTL/2 + b.TTL/4)
	list(t, s, "a1", "u1=online[a1]")
	expire(t, s, "u2=offline[a1]")
}
