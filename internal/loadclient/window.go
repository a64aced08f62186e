package loadclient

import "time"

// Books of clients that come and go: a connection is owed only the events
// published while it was in its rooms. Watermark, taken once the client has
// joined, bounds that span from below; the time the connection was closed (less
// a grace for deliveries in flight) bounds it from above.

// Watermark is the last sequence number taken on client c's numbered stream
// (its account's, or with conversation events its conversation's): every
// event numbered above it is taken, and so published, after this call.
func (d *Driver) Watermark(c *Client) uint64 {
	s := d.streamOf(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Owed compares what client c received on its numbered stream with the
// events numbered above from whose publish was accepted no later than until:
// owed is how many such events there were, missing how many of them c lacks.
// Call it once c's read loop has ended, or accept a count that races with
// deliveries still arriving.
func (d *Driver) Owed(c *Client, from uint64, until time.Time) (owed, missing uint64) {
	s := d.streamOf(c)
	seen := &c.acctSeen
	if d.Kind == KindConversation {
		seen = &c.convSeen
	}
	limit := until.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for seq := from + 1; seq < uint64(len(s.at)); seq++ {
		if at := s.at[seq]; at == 0 || at > limit {
			continue
		}
		owed++
		if !seen.Has(seq) {
			missing++
		}
	}
	return owed, missing
}

// streamOf is client c's numbered stream.
func (d *Driver) streamOf(c *Client) *stream {
	if d.Kind == KindConversation {
		return &d.conv[c.Account][c.Conv]
	}
	return &d.acct[c.Account]
}
