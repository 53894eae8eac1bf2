package load

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsRoundTrip(t *testing.T) {
	prevHi := int64(-1)
	for i := range histBuckets {
		lo, hi := bucketRange(i)
		if int64(lo) != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d: [%d,%d] maps to %d,%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= histSub && float64(hi-lo+1)/float64(lo) > 1.0/histHalf+1e-12 {
			t.Fatalf("bucket %d too wide: [%d,%d]", i, lo, hi)
		}
		prevHi = int64(hi)
		if hi == math.MaxUint64 {
			break
		}
	}
}

// TestQuantilesMatchSortedSamples compares the histogram's quantiles
// with exact ones from sorted samples.
func TestQuantilesMatchSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	h := NewHistogram(4)
	var samples []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			local := make([]time.Duration, 0, 25000)
			for range 25000 {
				mu.Lock()
				v := time.Duration(rng.ExpFloat64() * float64(3*time.Millisecond))
				mu.Unlock()
				h.Record(v, w)
				local = append(local, v)
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(samples)
	s := h.Snapshot()
	if s.Count != uint64(len(samples)) {
		t.Fatalf("count %d, want %d", s.Count, len(samples))
	}
	if time.Duration(s.MaxNS) != samples[len(samples)-1] || time.Duration(s.MinNS) != samples[0] {
		t.Fatalf("min/max %d/%d, want %v/%v", s.MinNS, s.MaxNS, samples[0], samples[len(samples)-1])
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := samples[int(math.Ceil(q*float64(len(samples))))-1]
		got := s.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/histHalf+1 {
			t.Errorf("q%.3f = %v, exact %v", q, got, exact)
		}
	}
	// Splitting the samples over two histograms and merging gives the same.
	a, b := NewHistogram(1), NewHistogram(1)
	for i, v := range samples {
		if i%2 == 0 {
			a.Record(v, 0)
		} else {
			b.Record(v, 0)
		}
	}
	m := a.Snapshot().Merge(b.Snapshot())
	for _, q := range []float64{0.5, 0.99} {
		if m.Quantile(q) != s.Quantile(q) {
			t.Errorf("merged q%.2f = %v, want %v", q, m.Quantile(q), s.Quantile(q))
		}
	}
	cdf := s.CDF()
	if len(cdf) == 0 || cdf[len(cdf)-1].Fraction != 1 {
		t.Fatalf("CDF does not end at 1: %v", cdf[len(cdf)-1])
	}
}

func TestEmptySnapshot(t *testing.T) {
	s := NewHistogram(2).Snapshot()
	if s.Quantile(0.99) != 0 || s.Mean() != 0 || s.CDF() != nil || s.MinNS != 0 {
		t.Fatalf("empty snapshot: %+v", s)
	}
	if got := s.Merge(s); got.Count != 0 {
		t.Fatalf("merge of empties: %+v", got)
	}
}
