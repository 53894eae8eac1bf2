package scale

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// InterestConfig is one run of the interest phase.
type InterestConfig struct {
	Design Design
	// Steps are the client counts at which memory is sampled, increasing.
	Steps []int
	// Storms are reconnect storms, in clients moved (each at most the
	// last step); the smallest is run once more with connection notices.
	Storms []int
	// HeapProfile, when set, receives node 0's heap profile at the last
	// step.
	HeapProfile string
}

// MemoryPoint is the cluster holding some clients.
type MemoryPoint struct {
	Clients int `json:"clients"`
	// EdgeSubs is the subjects the edges' Interests hold, summed.
	EdgeSubs int           `json:"edge_subs"`
	Nodes    []NodeSample  `json:"nodes"`
	Settle   time.Duration `json:"settle_ns"` // from the first SUB to a quiet cluster
}

// StormResult is one reconnect storm: Clients connections released on
// their edges and registered on the next edge (on another node).
type StormResult struct {
	Clients int  `json:"clients"`
	Notices bool `json:"notices"` // each new connection announced, as register does
	// EdgeOps is the SUB and UNSUB operations the edges sent (subjects
	// whose reference count crossed zero).
	EdgeOps int `json:"edge_ops"`
	// Send is the time the edges took to send everything (their last
	// flush answered); Settle is from the start to the last change of
	// any node's subscription table.
	Send   time.Duration `json:"send_ns"`
	Settle time.Duration `json:"settle_ns"`
	Delta
}

// InterestRun is the result of one interest run.
type InterestRun struct {
	Design   Design        `json:"design"`
	Edges    int           `json:"edges"`
	Baseline []NodeSample  `json:"baseline"`
	Memory   []MemoryPoint `json:"memory"`
	Storms   []StormResult `json:"storms"`
	// Restart is the last node killed and restarted (literal runs).
	Restart *RestartResult `json:"restart,omitempty"`
	// Fit is, per node, the least-squares slope of memory against the
	// node's subscription count over the memory points (literal design).
	Fit []MemoryFit `json:"fit,omitempty"`
}

// MemoryFit is bytes per subscription on one node.
type MemoryFit struct {
	Node         string  `json:"node"`
	HeapPerSub   float64 `json:"heap_bytes_per_sub"`
	RSSPerSub    float64 `json:"rss_bytes_per_sub"`
	HeapR2       float64 `json:"heap_r2"`
	SubsMeasured uint32  `json:"subs_at_last_point"`
}

// placement tracks which edge holds each client: client i is on edge
// (i + shift) mod edges, with shift constant over segments of clients.
type placement struct {
	edges int
	segs  []segment
}

type segment struct{ from, to, shift int }

// split returns the segments covering [from, to), splitting as needed.
func (p *placement) split(from, to int) []*segment {
	var out []segment
	for _, s := range p.segs {
		for _, cut := range []int{from, to} {
			if s.from < cut && cut < s.to {
				out = append(out, segment{s.from, cut, s.shift})
				s.from = cut
			}
		}
		out = append(out, s)
	}
	p.segs = out
	var in []*segment
	for i := range p.segs {
		if s := &p.segs[i]; s.from >= from && s.to <= to {
			in = append(in, s)
		}
	}
	return in
}

// spanOn returns the span of clients of seg held by edge e.
func (p *placement) spanOn(s *segment, e int) Span {
	return Span{From: s.from, To: s.to, Mod: p.edges, Rem: ((e-s.shift)%p.edges + p.edges) % p.edges}
}

// runInterest measures memory at every step, then the storms, on a fresh
// cluster with counting route proxies.
func (r *runner) runInterest(ctx context.Context, ic InterestConfig, tag string) (*InterestRun, error) {
	b, err := r.start(ctx, tag, true, r.cfg.Edges, false)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	c, edges := b.c, b.edges
	res := &InterestRun{Design: ic.Design, Edges: len(edges)}
	r.logf("%s: %s, %d edges, steps %v, storms %v", tag, ic.Design, len(edges), ic.Steps, ic.Storms)
	// A quiet moment lets JetStream's start-up traffic end before the
	// baseline.
	if err := r.quiet(ctx, c); err != nil {
		return nil, err
	}
	base, err := c.Sample(true)
	if err != nil {
		return nil, err
	}
	res.Baseline = base.Nodes
	pl := &placement{edges: len(edges)}
	held := 0
	for _, step := range ic.Steps {
		if step <= held {
			continue
		}
		pl.segs = append(pl.segs, segment{held, step, 0})
		start := time.Now()
		resps := make([]response, len(edges))
		if err := eachEdge(ctx, edges, func(e int, ed *edgeProc) error {
			var err error
			resps[e], err = ed.do(ctx, request{Op: "sub", Design: ic.Design, Clients: Span{From: held, To: step, Mod: len(edges), Rem: e}})
			return err
		}); err != nil {
			return nil, err
		}
		held = step
		settle, err := r.settle(ctx, c, start)
		if err != nil {
			return nil, err
		}
		s, err := c.Sample(true)
		if err != nil {
			return nil, err
		}
		mp := MemoryPoint{Clients: held, Nodes: s.Nodes, Settle: settle}
		for _, rs := range resps {
			mp.EdgeSubs += rs.Subs
		}
		res.Memory = append(res.Memory, mp)
		r.logf("%s: %d clients, %d edge subjects: %s (settled in %v)", tag, held, mp.EdgeSubs, memLine(s.Nodes), settle.Round(time.Millisecond))
	}
	if ic.HeapProfile != "" {
		if f, err := os.Create(ic.HeapProfile); err == nil {
			_ = c.Nodes[0].HeapProfile(f)
			f.Close()
		}
	}
	if ic.Design.Shards == 0 {
		res.Fit = fitMemory(res.Baseline, res.Memory)
	}
	// Every storm without connection notices, then the smallest once
	// more with them: the difference is the notices' cost.
	type stormSpec struct {
		clients int
		notices bool
	}
	var storms []stormSpec
	for _, k := range ic.Storms {
		storms = append(storms, stormSpec{min(k, held), false})
	}
	if len(ic.Storms) > 0 {
		storms = append(storms, stormSpec{min(slices.Min(ic.Storms), held), true})
	}
	for _, st := range storms {
		k, notices := st.clients, st.notices
		sr, err := r.storm(ctx, c, edges, pl, ic.Design, k, notices)
		if err != nil {
			return nil, err
		}
		res.Storms = append(res.Storms, *sr)
		r.logf("%s: storm of %d clients (notices %v): %d edge ops, %d RS+/RS- on routes (%d B), settled in %v, node CPU %v, edges received %d notices",
			tag, k, notices, sr.EdgeOps, sr.Route.Interest().Ops, sr.Route.Interest().Bytes, sr.Settle.Round(time.Millisecond), sumDur(sr.NodeCPU).Round(time.Millisecond), sr.Edges.Notices)
	}
	if ic.Design.Shards == 0 && !r.cfg.NoRestart {
		if res.Restart, err = r.restart(ctx, c, edges); err != nil {
			return nil, fmt.Errorf("restart: %w", err)
		}
	}
	return res, nil
}

// storm moves clients [0, k) to the next edge: every edge releases the
// clients it loses and registers the ones it gains, all edges at once.
func (r *runner) storm(ctx context.Context, c *Cluster, edges []*edgeProc, pl *placement, d Design, k int, notices bool) (*StormResult, error) {
	if err := r.quiet(ctx, c); err != nil {
		return nil, err
	}
	sr := &StormResult{Clients: k, Notices: notices}
	segs := pl.split(0, k)
	var err error
	sr.Delta, err = r.measure(ctx, c, edges, func(before mark) error {
		start := time.Now()
		err := eachEdge(ctx, edges, func(e int, ed *edgeProc) error {
			prev := (e - 1 + len(edges)) % len(edges)
			for _, s := range segs {
				// Release what this edge held; register what the
				// previous edge held.
				if _, err := ed.do(ctx, request{Op: "unsub", Design: d, Clients: pl.spanOn(s, e)}); err != nil {
					return err
				}
				if _, err := ed.do(ctx, request{Op: "sub", Design: d, Clients: pl.spanOn(s, prev), Notices: notices}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		sr.Send = time.Since(start)
		for _, s := range segs {
			s.shift++
		}
		if sr.Settle, err = r.settle(ctx, c, start); err != nil {
			return err
		}
		if !notices {
			return nil
		}
		// Connection notices are messages: wait until the edges have them all.
		return waitEdges(ctx, edges, before.edges, 30*time.Second, "received notices", func(got Counters) (uint64, uint64) {
			return got.Notices, uint64(k) * uint64(len(edges))
		})
	})
	if err != nil {
		return nil, err
	}
	sr.EdgeOps = int(sr.Edges.SubOps)
	return sr, nil
}

// settle waits until no node's subscription table has changed for a
// while and returns the time from start to the last change.
func (r *runner) settle(ctx context.Context, c *Cluster, start time.Time) (time.Duration, error) {
	return r.settleNodes(ctx, c.Nodes, start)
}

// settleNodes is settle over some of the nodes.
func (r *runner) settleNodes(ctx context.Context, nodes []*Node, start time.Time) (time.Duration, error) {
	quietFor := r.cfg.Quiet
	last := time.Now()
	var prev uint64
	first := true
	err := poll(ctx, 5*time.Minute, 20*time.Millisecond, func() error {
		var sum uint64
		for _, n := range nodes {
			s, err := n.Subsz()
			if err != nil {
				return err
			}
			sum += s.NumInserts + s.NumRemoves
		}
		now := time.Now()
		if first || sum != prev {
			prev, last, first = sum, now, false
			return fmt.Errorf("subscription tables still changing")
		}
		if now.Sub(last) < quietFor {
			return fmt.Errorf("quiet for %v only", now.Sub(last))
		}
		return nil
	})
	if last.Before(start) {
		last = start
	}
	return last.Sub(start), err
}

// quiet waits until the subscription tables are still (the cluster's own
// start-up interest, or the previous step's).
func (r *runner) quiet(ctx context.Context, c *Cluster) error {
	_, err := r.settle(ctx, c, time.Now())
	return err
}

// edgeCounters reads every edge's counters, summed.
func edgeCounters(ctx context.Context, edges []*edgeProc) (Counters, error) {
	var sum Counters
	for _, e := range edges {
		r, err := e.do(ctx, request{Op: "counters"})
		if err != nil {
			return sum, err
		}
		sum = sum.Add(r.Counters)
	}
	return sum, nil
}

func edgesCPU(edges []*edgeProc) time.Duration {
	var d time.Duration
	for _, e := range edges {
		d += e.usage()
	}
	return d
}

// fitMemory fits heap and RSS against the node's subscription count.
func fitMemory(base []NodeSample, pts []MemoryPoint) []MemoryFit {
	var out []MemoryFit
	for i, b := range base {
		xs, hs, rs := []float64{float64(b.Subs)}, []float64{heapOf(b)}, []float64{float64(b.RSS)}
		for _, p := range pts {
			n := p.Nodes[i]
			xs = append(xs, float64(n.Subs))
			hs = append(hs, heapOf(n))
			rs = append(rs, float64(n.RSS))
		}
		hSlope, hR2 := linfit(xs, hs)
		rSlope, _ := linfit(xs, rs)
		f := MemoryFit{Node: b.Node, HeapPerSub: hSlope, RSSPerSub: rSlope, HeapR2: hR2}
		if len(pts) > 0 {
			f.SubsMeasured = pts[len(pts)-1].Nodes[i].Subs
		}
		out = append(out, f)
	}
	return out
}

func heapOf(n NodeSample) float64 {
	if n.Heap == nil {
		return 0
	}
	return float64(n.Heap.HeapAlloc)
}

// linfit returns the least-squares slope of ys against xs and R².
func linfit(xs, ys []float64) (slope, r2 float64) {
	n := float64(len(xs))
	if n < 2 {
		return 0, 0
	}
	var sx, sy, sxx, sxy, syy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
		syy += ys[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0, 0
	}
	slope = (n*sxy - sx*sy) / den
	vy := n*syy - sy*sy
	if vy == 0 {
		return slope, 1
	}
	r := (n*sxy - sx*sy) / math.Sqrt(den*vy)
	return slope, r * r
}

func memLine(nodes []NodeSample) string {
	s := ""
	for _, n := range nodes {
		h := int64(0)
		if n.Heap != nil {
			h = n.Heap.HeapAlloc
		}
		s += fmt.Sprintf("%s subs %d heap %.1f MiB rss %.1f MiB; ", n.Node, n.Subs, mib(h), mib(n.RSS))
	}
	return s
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func sumDur(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// heapProfilePath is where a run's heap profile goes.
func heapProfilePath(dir, tag string) string { return filepath.Join(dir, tag+"-n0-heap.pprof") }
