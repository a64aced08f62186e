// Package loadstats holds the load tool's measurements: a concurrent latency
// histogram, per-stream sequence sets for missing and duplicate deliveries,
// and samples of a process's CPU time and resident memory from /proc.
package loadstats

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Log-linear buckets: values below 2*sub are exact; above, each power of two
// is split into sub buckets, so a bucket is at most 1/sub of its value wide.
const (
	subBits  = 6
	sub      = 1 << subBits
	maxShift = 40 - subBits - 1 // values are capped at 2^40 ns (about 18 minutes)
	nBuckets = 2*sub + maxShift*sub
	maxValue = int64(1)<<40 - 1
)

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v > maxValue {
		v = maxValue
	}
	if v < 2*sub {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1 // v>>shift is in [sub, 2*sub)
	return 2*sub + (shift-1)*sub + int(v>>shift) - sub
}

// bucketRange is the interval [lo, hi] of the values bucket i holds.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*sub {
		return int64(i), int64(i)
	}
	shift := (i-2*sub)/sub + 1
	m := int64((i-2*sub)%sub + sub)
	return m << shift, (m+1)<<shift - 1
}

// shards spread concurrent writers over separate counters.
const shards = 16

type shard struct {
	counts [nBuckets]atomic.Uint64
	max    atomic.Int64
	sum    atomic.Int64
	_      [64]byte // keep the next shard's hot words off this cache line
}

// Histogram records durations from many goroutines without locks. Its zero
// value is not usable; use NewHistogram.
type Histogram struct {
	s []shard
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{s: make([]shard, shards)} }

// Record adds one value; hint picks the shard (a connection number, say), so
// that writers running in parallel rarely share a cache line.
func (h *Histogram) Record(hint int, d time.Duration) {
	s := &h.s[uint(hint)%shards]
	v := int64(d)
	s.counts[bucketOf(v)].Add(1)
	s.sum.Add(v)
	for {
		m := s.max.Load()
		if v <= m || s.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Snapshot returns the merged counts so far.
func (h *Histogram) Snapshot() Snapshot {
	var out Snapshot
	out.counts = make([]uint64, nBuckets)
	for i := range h.s {
		s := &h.s[i]
		for b := range s.counts {
			c := s.counts[b].Load()
			out.counts[b] += c
			out.N += c
		}
		out.Sum += s.sum.Load()
		if m := s.max.Load(); m > out.Max {
			out.Max = m
		}
	}
	return out
}

// Snapshot is a histogram's content at one moment.
type Snapshot struct {
	N      uint64 // values recorded
	Sum    int64  // their sum, ns
	Max    int64  // the largest, ns (exact)
	counts []uint64
}

// Quantile returns the value below which a fraction q of the values lie,
// within the bucket width (under 1/64 of the value); 0 when empty.
func (s Snapshot) Quantile(q float64) time.Duration {
	if s.N == 0 {
		return 0
	}
	rank := uint64(q*float64(s.N) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > s.N {
		rank = s.N
	}
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			if v > s.Max {
				v = s.Max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(s.Max)
}

// Mean is the average value; 0 when empty.
func (s Snapshot) Mean() time.Duration {
	if s.N == 0 {
		return 0
	}
	return time.Duration(s.Sum / int64(s.N))
}

// Sub returns the values recorded between an earlier snapshot and s.
func (s Snapshot) Sub(earlier Snapshot) Snapshot {
	out := Snapshot{N: s.N - earlier.N, Sum: s.Sum - earlier.Sum, Max: s.Max, counts: make([]uint64, nBuckets)}
	var top int64
	for i := range s.counts {
		var e uint64
		if earlier.counts != nil {
			e = earlier.counts[i]
		}
		out.counts[i] = s.counts[i] - e
		if out.counts[i] > 0 {
			_, hi := bucketRange(i)
			top = hi
		}
	}
	if top < out.Max { // the max since earlier is only known to its bucket
		out.Max = top
	}
	return out
}
