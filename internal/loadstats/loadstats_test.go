package loadstats

import (
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < nBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d is [%d,%d] after %d", i, lo, hi, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d: bucketOf(%d)=%d bucketOf(%d)=%d", i, lo, bucketOf(lo), hi, bucketOf(hi))
		}
		if lo >= 2*sub && float64(hi-lo+1)/float64(lo) > 1.0/sub+1e-9 {
			t.Fatalf("bucket %d [%d,%d] is wider than 1/%d of its value", i, lo, hi, sub)
		}
		prevHi = hi
	}
	if prevHi != maxValue {
		t.Fatalf("buckets end at %d, want %d", prevHi, maxValue)
	}
	if bucketOf(-5) != 0 || bucketOf(1<<50) != nBuckets-1 {
		t.Fatal("out-of-range values are not clamped")
	}
}

// Quantiles agree with the exact ones of a sorted sample within the bucket
// precision.
func TestQuantiles(t *testing.T) {
	h := NewHistogram()
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100000)
	for i := range vals {
		// Log-normal-ish latencies from 50 us to a few hundred ms.
		v := int64(50_000 * (1 + rng.ExpFloat64()*rng.ExpFloat64()*20))
		vals[i] = v
		h.Record(i, time.Duration(v))
	}
	slices.Sort(vals)
	s := h.Snapshot()
	if s.N != uint64(len(vals)) || s.Max != vals[len(vals)-1] {
		t.Fatalf("N %d max %d, want %d %d", s.N, s.Max, len(vals), vals[len(vals)-1])
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[max(0, int(q*float64(len(vals))+0.5)-1)]
		got := int64(s.Quantile(q))
		if d := float64(got-exact) / float64(exact); d > 1.0/sub || d < -1.0/sub {
			t.Errorf("q%.3f: got %d, exact %d (%.2f%%)", q, got, exact, d*100)
		}
	}
	var sum int64
	for _, v := range vals {
		sum += v
	}
	if s.Mean() != time.Duration(sum/int64(len(vals))) {
		t.Errorf("mean %v", s.Mean())
	}
}

func TestQuantileSmallAndEmpty(t *testing.T) {
	h := NewHistogram()
	if s := h.Snapshot(); s.Quantile(0.99) != 0 || s.Mean() != 0 {
		t.Fatal("empty histogram")
	}
	for _, v := range []time.Duration{1, 2, 3, 4, 100} {
		h.Record(0, v)
	}
	s := h.Snapshot()
	if s.Quantile(0.5) != 3 || s.Quantile(0.99) != 100 || s.Quantile(0) != 1 {
		t.Fatalf("p0 %v p50 %v p99 %v", s.Quantile(0), s.Quantile(0.5), s.Quantile(0.99))
	}
}

func TestSnapshotSub(t *testing.T) {
	h := NewHistogram()
	for i := 0; i < 100; i++ {
		h.Record(i, time.Second)
	}
	before := h.Snapshot()
	for i := 0; i < 100; i++ {
		h.Record(i, time.Millisecond)
	}
	d := h.Snapshot().Sub(before)
	if d.N != 100 || d.Quantile(0.99) < 980*time.Microsecond || d.Quantile(0.99) > 1020*time.Microsecond {
		t.Fatalf("N %d p99 %v", d.N, d.Quantile(0.99))
	}
	if d.Max > 1020*time.Microsecond.Nanoseconds() {
		t.Fatalf("max %d leaks from before", d.Max)
	}
}

func TestConcurrentRecord(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				h.Record(g, time.Duration(i))
			}
		}()
	}
	wg.Wait()
	if s := h.Snapshot(); s.N != 80000 || s.Max != 9999 {
		t.Fatalf("N %d max %d", s.N, s.Max)
	}
}

// Missing and duplicate counting: a client that saw some events twice and
// missed others, against what the injector sent.
func TestSeqSetMissingAndDuplicates(t *testing.T) {
	var sent, seen SeqSet
	for seq := uint64(1); seq <= 1000; seq++ {
		if seq == 500 {
			continue // the injector's publish of 500 failed
		}
		sent.Add(seq)
	}
	dups := 0
	for seq := uint64(1); seq <= 1000; seq++ {
		if seq%100 == 7 {
			continue // lost: 10 of them
		}
		if dup, ok := seen.Add(seq); dup || !ok {
			t.Fatalf("first add of %d: dup %v ok %v", seq, dup, ok)
		}
		if seq%250 == 0 {
			if dup, _ := seen.Add(seq); dup {
				dups++
			}
		}
	}
	if dups != 4 {
		t.Fatalf("%d duplicates, want 4", dups)
	}
	if got := seen.MissingOf(&sent); got != 10 {
		t.Errorf("missing %d, want 10", got)
	}
	if got := seen.ExtraOf(&sent); got != 1 { // 500 arrived although its publish "failed"
		t.Errorf("extra %d, want 1", got)
	}
	if seen.Distinct() != 990 || !seen.Has(1000) || seen.Has(107) || seen.Has(5000) {
		t.Errorf("distinct %d", seen.Distinct())
	}
	for _, bad := range []uint64{0, MaxSeq + 1} {
		if _, ok := seen.Add(bad); ok {
			t.Errorf("Add(%d) accepted", bad)
		}
	}
	var empty SeqSet
	if empty.MissingOf(&sent) != 999 || sent.MissingOf(&empty) != 0 {
		t.Error("empty sets")
	}
}

func TestParseProc(t *testing.T) {
	stat := []byte("1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 200000 3000 18446744073709551615\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3*time.Second {
		t.Fatalf("cpu %v err %v", cpu, err)
	}
	rss, threads, err := parseStatus([]byte("Name:\tx\nThreads:\t9\nVmRSS:\t  20480 kB\n"))
	if err != nil || rss != 20480*1024 || threads != 9 {
		t.Fatalf("rss %d threads %d err %v", rss, threads, err)
	}
	if _, _, err := parseStatus([]byte("Name:\tx\n")); err == nil {
		t.Fatal("status without VmRSS")
	}
	busy, err := parseMachineCPU([]byte("cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 1 2 3\n"))
	if err != nil || busy != 161*clockTick {
		t.Fatalf("machine busy %v err %v", busy, err)
	}
	if _, err := MachineCPU(); err != nil {
		t.Fatal(err)
	}
	self, err := ReadProc(os.Getpid())
	if err != nil || self.RSS <= 0 || self.Threads <= 0 {
		t.Fatalf("self: %+v %v", self, err)
	}
}
