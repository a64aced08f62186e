package realtime

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// memDefaultTTL is the contract's PRESENCE_TTL_SECONDS default.
const memDefaultTTL = 60 * time.Second

// MemoryPresence is the in-process PresenceStore: correct for one instance,
// with the same semantics as the Redis store so that tests and the default
// Hub behave like production. It is safe for concurrent use.
//
// It lives in the root package so that New can default to it without
// importing presence (which imports this package); presence.MemoryStore is
// the same type under its layout name.
type MemoryPresence struct {
	ttl time.Duration

	mu    sync.Mutex
	users map[string]*memUser
	// byAccount indexes users by the accounts their connections list, for List.
	byAccount map[string]map[string]struct{}
}

// memUser is one user who has connections or a published status.
type memUser struct {
	conns map[string]memConn
	// chosen is the status set with SetStatus; "" means the default, online.
	chosen Status
	// shown is what other agents see: online or away, or offline (unpublished).
	shown Status
	// lastSeen is when shown was last written, like the card's last_seen.
	lastSeen time.Time
	// accounts is the sorted union of the account ids of conns.
	accounts []string
}

type memConn struct {
	accounts []string
	expires  time.Time
}

var _ PresenceStore = (*MemoryPresence)(nil)

// NewMemoryPresence returns an empty in-process store whose connections
// expire ttl after their last Connect, SetStatus or Heartbeat; ttl <= 0 means
// the contract's default, 60 seconds.
func NewMemoryPresence(ttl time.Duration) *MemoryPresence {
	if ttl <= 0 {
		ttl = memDefaultTTL
	}
	return &MemoryPresence{
		ttl:       ttl,
		users:     make(map[string]*memUser),
		byAccount: make(map[string]map[string]struct{}),
	}
}

// TTL returns how long a connection lives without a heartbeat.
func (m *MemoryPresence) TTL() time.Duration { return m.ttl }

// Connect records a live connection; the user's chosen status survives it.
func (m *MemoryPresence) Connect(ctx context.Context, c PresenceConn) (Presence, bool, error) {
	return m.update(ctx, "connect", c, true, func(u *memUser, now time.Time) {
		m.register(u, c, now)
	})
}

// Disconnect forgets a connection; the user goes offline with their last one.
func (m *MemoryPresence) Disconnect(ctx context.Context, c PresenceConn) (Presence, bool, error) {
	return m.update(ctx, "disconnect", c, false, func(u *memUser, _ time.Time) {
		delete(u.conns, c.ID)
	})
}

// SetStatus records the status the user chose (offline means invisible); it
// also registers c if the store had lost it, since only a live connection
// can set a status.
func (m *MemoryPresence) SetStatus(ctx context.Context, c PresenceConn, s Status) (Presence, bool, error) {
	if !s.Valid() {
		return Presence{}, false, fmt.Errorf("presence: set status %s: invalid status %q", c.UserID, s)
	}
	return m.update(ctx, "set status", c, true, func(u *memUser, now time.Time) {
		m.register(u, c, now)
		u.chosen = s
	})
}

// update applies one call's change to c's user, after dropping the user's
// lapsed connections, and settles what others see. touch is settle's.
func (m *MemoryPresence) update(ctx context.Context, op string, c PresenceConn, touch bool, apply func(u *memUser, now time.Time)) (Presence, bool, error) {
	if err := memCheck(ctx, op, c); err != nil {
		return Presence{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	u := m.user(c.UserID)
	before := u.shown
	m.purge(u, now)
	apply(u, now)
	p, changed := m.settle(c.UserID, u, before, now, touch)
	return p, changed, nil
}

// Heartbeat keeps conns alive for another TTL and re-registers those the
// store no longer knows (expired while this instance stalled); it returns the
// users who came back because of that.
func (m *MemoryPresence) Heartbeat(ctx context.Context, conns []PresenceConn) ([]Presence, error) {
	for _, c := range conns {
		if err := memCheck(ctx, "heartbeat", c); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	before := make(map[string]Status)
	for _, c := range conns {
		u := m.user(c.UserID)
		if cn, ok := u.conns[c.ID]; ok {
			cn.expires = now.Add(m.ttl)
			u.conns[c.ID] = cn
			continue
		}
		if _, seen := before[c.UserID]; !seen {
			before[c.UserID] = u.shown
		}
		m.register(u, c, now)
	}
	var out []Presence
	for uid, b := range before {
		if p, changed := m.settle(uid, m.users[uid], b, now, false); changed {
			out = append(out, p)
		}
	}
	memSortPresences(out)
	return out, nil
}

// Expire removes the connections whose heartbeat lapsed and returns the
// users whose presence changed because of it (they went offline).
func (m *MemoryPresence) Expire(ctx context.Context) ([]Presence, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("presence: expire: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var out []Presence
	for uid, u := range m.users {
		before := u.shown
		if !m.purge(u, now) {
			continue
		}
		if p, changed := m.settle(uid, u, before, now, false); changed {
			out = append(out, p)
		}
	}
	memSortPresences(out)
	return out, nil
}

// List returns the users who are not offline and have a live connection
// listing accountID, sorted by user id.
func (m *MemoryPresence) List(ctx context.Context, accountID string) ([]Presence, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("presence: list %s: %w", accountID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var out []Presence
	for uid := range m.byAccount[accountID] {
		u := m.users[uid]
		if u.shown == StatusOffline || !u.liveIn(accountID, now) {
			continue
		}
		out = append(out, Presence{UserID: uid, Status: u.shown, LastSeen: u.lastSeen, AccountIDs: slices.Clone(u.accounts)})
	}
	memSortPresences(out)
	return out, nil
}

// user returns uid's state, creating an offline one.
func (m *MemoryPresence) user(uid string) *memUser {
	u := m.users[uid]
	if u == nil {
		u = &memUser{conns: make(map[string]memConn), shown: StatusOffline}
		m.users[uid] = u
	}
	return u
}

// register adds or refreshes connection c of u.
func (m *MemoryPresence) register(u *memUser, c PresenceConn, now time.Time) {
	u.conns[c.ID] = memConn{accounts: memNormalizeIDs(c.AccountIDs), expires: now.Add(m.ttl)}
}

// purge drops u's expired connections and reports whether there were any;
// with the last one goes the status the user chose.
func (m *MemoryPresence) purge(u *memUser, now time.Time) bool {
	n := len(u.conns)
	for id, c := range u.conns {
		if !now.Before(c.expires) {
			delete(u.conns, id)
		}
	}
	if len(u.conns) == 0 {
		u.chosen = ""
	}
	return len(u.conns) != n
}

// settle recomputes what others see of uid after its connections or chosen
// status changed, and reports whether that differs from before. touch
// rewrites last_seen even without a change, as the card did on connect and
// on agent:status.
func (m *MemoryPresence) settle(uid string, u *memUser, before Status, now time.Time, touch bool) (Presence, bool) {
	old := u.accounts
	var union []string
	for _, c := range u.conns {
		union = append(union, c.accounts...)
	}
	union = memNormalizeIDs(union)
	after := StatusOffline
	if len(u.conns) > 0 {
		after = u.chosen
		if after == "" {
			after = StatusOnline
		}
	} else {
		u.chosen = ""
	}
	for _, a := range old {
		if _, keep := slices.BinarySearch(union, a); !keep {
			delete(m.byAccount[a], uid)
			if len(m.byAccount[a]) == 0 {
				delete(m.byAccount, a)
			}
		}
	}
	for _, a := range union {
		if m.byAccount[a] == nil {
			m.byAccount[a] = make(map[string]struct{})
		}
		m.byAccount[a][uid] = struct{}{}
	}
	u.accounts = union
	changed := before != after
	rooms := union
	if after == StatusOffline {
		u.lastSeen = now
		if len(union) == 0 {
			rooms = old
		}
	} else if changed || touch {
		u.lastSeen = now
	}
	u.shown = after
	if len(u.conns) == 0 {
		delete(m.users, uid)
	}
	return Presence{UserID: uid, Status: after, LastSeen: u.lastSeen, AccountIDs: slices.Clone(rooms)}, changed
}

// liveIn reports whether u has an unexpired connection listing accountID.
func (u *memUser) liveIn(accountID string, now time.Time) bool {
	for _, c := range u.conns {
		if _, ok := slices.BinarySearch(c.accounts, accountID); ok && now.Before(c.expires) {
			return true
		}
	}
	return false
}

// memCheck rejects a cancelled call or a connection no store can key.
func memCheck(ctx context.Context, op string, c PresenceConn) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("presence: %s %s: %w", op, c.UserID, err)
	}
	if err := ValidatePresenceConn(c); err != nil {
		return fmt.Errorf("presence: %s: %w", op, err)
	}
	return nil
}

// ValidatePresenceConn checks that c can be stored: non-empty user and
// connection ids, and no NUL byte in any id, since stores use it as a
// separator. Every PresenceStore rejects what it rejects.
func ValidatePresenceConn(c PresenceConn) error {
	if c.UserID == "" || c.ID == "" {
		return fmt.Errorf("connection %q of user %q: empty id", c.ID, c.UserID)
	}
	if strings.ContainsRune(c.UserID, 0) || strings.ContainsRune(c.ID, 0) {
		return fmt.Errorf("connection %q of user %q: NUL byte in id", c.ID, c.UserID)
	}
	for _, a := range c.AccountIDs {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("connection %q of user %q: NUL byte in account id", c.ID, c.UserID)
		}
	}
	return nil
}

// memNormalizeIDs returns ids sorted, without duplicates or empty strings.
func memNormalizeIDs(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func memSortPresences(ps []Presence) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].UserID < ps[j].UserID })
}
