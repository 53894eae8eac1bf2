package load

import (
	"math"
	"math/bits"
	"sort"
	"sync/atomic"
	"time"
)

// Histogram is a concurrent latency histogram in the style of HdrHistogram:
// log-linear buckets with 64 sub-buckets per power of two, so a recorded
// value is known within 1/64 (1.6 %) over the whole range of int64
// nanoseconds, in constant memory. Recording is one atomic add on a shard
// chosen by the caller, so thousands of receiving goroutines do not fight
// over one cache line. The zero value is not usable; use NewHistogram.
type Histogram struct {
	shards []histShard
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // values below are exact
	histHalf    = histSub / 2
	histBuckets = (64-histSubBits)*histHalf + histSub
)

type histShard struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
	min    atomic.Uint64 // stored as ^v so that the zero value means "none"
	_      [64]byte
}

// NewHistogram returns a histogram with shards shards (at least 1).
func NewHistogram(shards int) *Histogram {
	return &Histogram{shards: make([]histShard, max(shards, 1))}
}

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	k := bits.Len64(v) - histSubBits
	return k*histHalf + int(v>>k)
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < histSub {
		return uint64(i), uint64(i)
	}
	k := (i - histHalf) / histHalf
	m := uint64(i - k*histHalf)
	lo = m << k
	return lo, lo + (1 << k) - 1
}

// Record adds one value; shard spreads concurrent writers (any int).
// Negative values count as 0.
func (h *Histogram) Record(d time.Duration, shard int) {
	v := uint64(max(d, 0))
	s := &h.shards[uint(shard)%uint(len(h.shards))]
	s.counts[bucketOf(v)].Add(1)
	s.n.Add(1)
	s.sum.Add(v)
	for {
		cur := s.max.Load()
		if v <= cur || s.max.CompareAndSwap(cur, v) {
			break
		}
	}
	for {
		cur := s.min.Load()
		if (cur != 0 && v >= ^cur) || s.min.CompareAndSwap(cur, ^v) {
			break
		}
	}
}

// Snapshot returns the recorded values so far, merged over shards.
func (h *Histogram) Snapshot() Snapshot {
	var counts [histBuckets]uint64
	var s Snapshot
	min := uint64(math.MaxUint64)
	for i := range h.shards {
		sh := &h.shards[i]
		for b := range counts {
			counts[b] += sh.counts[b].Load()
		}
		s.Count += sh.n.Load()
		s.SumNS += sh.sum.Load()
		s.MaxNS = max(s.MaxNS, sh.max.Load())
		if m := sh.min.Load(); m != 0 {
			min = minU(min, ^m)
		}
	}
	if s.Count > 0 {
		s.MinNS = min
	}
	for b, c := range counts {
		if c > 0 {
			s.Buckets = append(s.Buckets, [2]uint64{uint64(b), c})
		}
	}
	return s
}

func minU(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

// Snapshot is a histogram's content: sparse buckets (index, count) in
// increasing order, plus exact count, sum, min and max. It is what worker
// processes send back, and it merges.
type Snapshot struct {
	Count   uint64      `json:"count"`
	SumNS   uint64      `json:"sum_ns"`
	MinNS   uint64      `json:"min_ns"`
	MaxNS   uint64      `json:"max_ns"`
	Buckets [][2]uint64 `json:"buckets,omitempty"`
}

// Merge returns s and o combined.
func (s Snapshot) Merge(o Snapshot) Snapshot {
	if o.Count == 0 {
		return s
	}
	if s.Count == 0 {
		return o
	}
	m := map[uint64]uint64{}
	for _, b := range s.Buckets {
		m[b[0]] += b[1]
	}
	for _, b := range o.Buckets {
		m[b[0]] += b[1]
	}
	out := Snapshot{Count: s.Count + o.Count, SumNS: s.SumNS + o.SumNS, MinNS: minU(s.MinNS, o.MinNS), MaxNS: max(s.MaxNS, o.MaxNS)}
	for k, v := range m {
		out.Buckets = append(out.Buckets, [2]uint64{k, v})
	}
	sort.Slice(out.Buckets, func(i, j int) bool { return out.Buckets[i][0] < out.Buckets[j][0] })
	return out
}

// Quantile returns the value at quantile q (0..1): the highest value of
// the bucket holding it, clamped to the exact minimum and maximum.
func (s Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	rank = max(rank, 1)
	var cum uint64
	for _, b := range s.Buckets {
		cum += b[1]
		if cum >= rank {
			_, hi := bucketRange(int(b[0]))
			hi = max(min(hi, s.MaxNS), s.MinNS)
			return time.Duration(hi)
		}
	}
	return time.Duration(s.MaxNS)
}

// Mean returns the average value.
func (s Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return time.Duration(s.SumNS / s.Count)
}

// CDFPoint is one step of a cumulative distribution.
type CDFPoint struct {
	Value    time.Duration
	Fraction float64 // of recorded values ≤ Value
}

// CDF returns the cumulative distribution, one point per non-empty bucket.
func (s Snapshot) CDF() []CDFPoint {
	if s.Count == 0 {
		return nil
	}
	out := make([]CDFPoint, 0, len(s.Buckets))
	var cum uint64
	for _, b := range s.Buckets {
		cum += b[1]
		_, hi := bucketRange(int(b[0]))
		hi = max(min(hi, s.MaxNS), s.MinNS)
		out = append(out, CDFPoint{Value: time.Duration(hi), Fraction: float64(cum) / float64(s.Count)})
	}
	return out
}
