package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots draws the run's PNG plots into dir and returns their paths:
// the latency CDF of every message run (sweep: of a selection of rates),
// and for sweeps the sustainable rate against subscribers and p99 against
// the offered rate.
func writePlots(res *Result, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	save := func(p *plot.Plot, name string) error {
		path := filepath.Join(dir, res.Scenario+"-"+name+".png")
		if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
			return err
		}
		files = append(files, path)
		return nil
	}

	// Latency CDFs.
	type curve struct {
		name string
		run  *RunResult
	}
	var curves []curve
	for _, r := range res.Runs {
		curves = append(curves, curve{r.Label, r})
	}
	if s := res.Storm; s != nil {
		for _, r := range []*RunResult{s.Before, s.Resumed} {
			if r != nil {
				curves = append(curves, curve{r.Label, r})
			}
		}
	}
	for _, s := range res.Sweeps {
		for _, r := range pick(s.Steps, 8) {
			curves = append(curves, curve{fmt.Sprintf("%d subs, %s/s", s.Subscribers, rateH(r.Offered)), r})
		}
	}
	for _, e := range res.Edges {
		for _, r := range pick(e.Sweep.Steps, 4) {
			curves = append(curves, curve{fmt.Sprintf("%d edge(s), %s/s", e.Edges, rateH(r.Offered)), r})
		}
	}
	var lines []any
	for _, c := range curves {
		cdf := c.run.latencySnapshot.CDF()
		if len(cdf) == 0 {
			continue
		}
		xys := make(plotter.XYs, 0, len(cdf)+1)
		for _, pt := range cdf {
			xys = append(xys, plotter.XY{X: math.Max(ms(pt.Value), 0.01), Y: pt.Fraction})
		}
		lines = append(lines, c.name, xys)
	}
	if len(lines) > 0 {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("Herald %s: publish → receive latency CDF (%s)", res.Scenario, res.Date.Format("2006-01-02"))
		p.X.Label.Text = "latency (ms, log scale)"
		p.Y.Label.Text = "fraction of deliveries"
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = logTicks{}
		p.Y.Min, p.Y.Max = 0, 1
		p.Add(plotter.NewGrid())
		p.Legend.Top = false
		p.Legend.Left = false
		if err := plotutil.AddLines(p, lines...); err != nil {
			return files, err
		}
		if err := save(p, "latency-cdf"); err != nil {
			return files, err
		}
	}

	// Sweeps: sustainable rate against subscribers; p99 against offered rate.
	sweeps := res.Sweeps
	for _, e := range res.Edges {
		sweeps = append(sweeps, e.Sweep)
	}
	if len(res.Sweeps) > 0 {
		sorted := append([]*SweepResult(nil), res.Sweeps...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].Subscribers < sorted[j].Subscribers })
		var sus, full plotter.XYs
		for _, s := range sorted {
			sus = append(sus, plotter.XY{X: float64(s.Subscribers), Y: s.Sustainable})
			full = append(full, plotter.XY{X: float64(s.Subscribers), Y: s.FullDelivery})
		}
		p := plot.New()
		p.Title.Text = fmt.Sprintf("Herald: sustainable fan-out rate vs subscribers (%s)", res.Date.Format("2006-01-02"))
		p.X.Label.Text = "subscribers on one name"
		p.Y.Label.Text = "deliveries per second"
		if len(sorted) > 1 {
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = logTicks{}
		}
		p.Y.Min = 0
		p.Add(plotter.NewGrid())
		if err := plotutil.AddLinePoints(p, fmt.Sprintf("sustainable (complete, p99 ≤ %.0f ms)", sorted[0].SLOms), sus,
			"highest complete offered rate", full); err != nil {
			return files, err
		}
		p.Legend.Top = true
		if err := save(p, "rate-vs-subs"); err != nil {
			return files, err
		}
	}
	if len(sweeps) > 0 {
		var lines []any
		for i, s := range sweeps {
			var xys plotter.XYs
			for _, r := range s.Steps {
				if r.Latency.Count > 0 {
					xys = append(xys, plotter.XY{X: r.Offered, Y: math.Max(r.Latency.P99, 0.01)})
				}
			}
			if len(xys) == 0 {
				continue
			}
			name := fmt.Sprintf("%d subs", s.Subscribers)
			if i >= len(res.Sweeps) {
				name = fmt.Sprintf("%d edge(s), %d subs", res.Edges[i-len(res.Sweeps)].Edges, s.Subscribers)
			}
			lines = append(lines, name, xys)
		}
		if len(lines) > 0 {
			p := plot.New()
			p.Title.Text = fmt.Sprintf("Herald: p99 latency vs offered deliveries/s (%s)", res.Date.Format("2006-01-02"))
			p.X.Label.Text = "offered deliveries per second"
			p.Y.Label.Text = "p99 latency (ms, log scale)"
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = logTicks{}
			p.Add(plotter.NewGrid())
			slo := plotter.NewFunction(func(float64) float64 { return sweeps[0].SLOms })
			slo.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
			p.Add(slo)
			p.Legend.Add(fmt.Sprintf("p99 bound %.0f ms", sweeps[0].SLOms), slo)
			if err := plotutil.AddLinePoints(p, lines...); err != nil {
				return files, err
			}
			p.Y.Max = math.Max(p.Y.Max, sweeps[0].SLOms*2)
			p.Y.Min = math.Min(p.Y.Min, 0.5)
			p.Legend.Top = true
			p.Legend.Left = true
			if err := save(p, "p99-vs-rate"); err != nil {
				return files, err
			}
		}
	}
	if len(res.Edges) > 0 {
		// Saturation (the best achieved rate with everything delivered)
		// against linear scaling from one edge.
		var achieved, linear plotter.XYs
		for _, e := range res.Edges {
			achieved = append(achieved, plotter.XY{X: float64(e.Edges), Y: e.Sweep.BestAchieved})
			linear = append(linear, plotter.XY{X: float64(e.Edges), Y: float64(e.Edges) * res.Edges[0].Sweep.BestAchieved / float64(res.Edges[0].Edges)})
		}
		p := plot.New()
		p.Title.Text = "Herald: saturation rate vs edges (shared CPUs)"
		if b := res.Edges[0].CPUBudget; b > 0 {
			p.Title.Text = fmt.Sprintf("Herald: saturation rate vs edges (%.2g CPU per edge)", b)
		}
		p.X.Label.Text = "edges"
		p.Y.Label.Text = "deliveries per second, all delivered"
		p.Y.Min = 0
		p.Add(plotter.NewGrid())
		if err := plotutil.AddLinePoints(p, "measured", achieved, "linear from 1 edge", linear); err != nil {
			return files, err
		}
		p.Legend.Top, p.Legend.Left = true, true
		if err := save(p, "rate-vs-edges"); err != nil {
			return files, err
		}
	}
	return files, nil
}

// pick returns at most k runs spread evenly over rs, always keeping the last.
func pick(rs []*RunResult, k int) []*RunResult {
	if len(rs) <= k {
		return rs
	}
	out := make([]*RunResult, 0, k)
	for i := range k {
		out = append(out, rs[i*(len(rs)-1)/(k-1)])
	}
	return out
}

// logTicks labels a log axis at 1, 2 and 5 times powers of ten, so short
// ranges (within one decade) still get labels.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= 0 || hi < lo {
		return nil
	}
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		base := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := float64(m) * base
			if v < lo*0.999 || v > hi*1.001 {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
