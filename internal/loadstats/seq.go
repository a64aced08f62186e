package loadstats

import "math/bits"

// SeqSet is the set of sequence numbers one client received on one stream
// (an account's or a conversation's events, numbered from 1 by the
// injector). It is owned by one goroutine.
type SeqSet struct {
	words    []uint64
	distinct uint64
}

// MaxSeq bounds the sequence numbers a SeqSet accepts (8 MiB of bits).
const MaxSeq = 1 << 26

// Add records seq and reports whether it had been recorded before (a
// duplicate delivery). Numbers of 0 or beyond MaxSeq are refused: ok is false.
func (s *SeqSet) Add(seq uint64) (dup, ok bool) {
	if seq == 0 || seq > MaxSeq {
		return false, false
	}
	w, b := seq/64, seq%64
	if w >= uint64(len(s.words)) {
		n := max(2*len(s.words), int(w)+1, 4)
		nw := make([]uint64, n)
		copy(nw, s.words)
		s.words = nw
	}
	if s.words[w]&(1<<b) != 0 {
		return true, true
	}
	s.words[w] |= 1 << b
	s.distinct++
	return false, true
}

// Has reports whether seq was recorded.
func (s *SeqSet) Has(seq uint64) bool {
	w := seq / 64
	return w < uint64(len(s.words)) && s.words[w]&(1<<(seq%64)) != 0
}

// Distinct is the number of different sequence numbers recorded.
func (s *SeqSet) Distinct() uint64 { return s.distinct }

// MissingOf counts the members of sent that s lacks: the deliveries this
// client should have had and did not.
func (s *SeqSet) MissingOf(sent *SeqSet) uint64 {
	var n uint64
	for i, w := range sent.words {
		var have uint64
		if i < len(s.words) {
			have = s.words[i]
		}
		n += uint64(bits.OnesCount64(w &^ have))
	}
	return n
}

// ExtraOf counts the members of s that sent lacks: deliveries of events the
// injector does not count as sent (a publish it saw fail, for instance).
func (s *SeqSet) ExtraOf(sent *SeqSet) uint64 { return sent.MissingOf(s) }
