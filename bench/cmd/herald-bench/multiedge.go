package main

import (
	"context"
	"fmt"

	"github.com/herald-push/herald/bench/load"
)

// multiEdge sweeps the same subscribers against 1, 2, ... edges on one
// NATS server: a cmd/embedded process is the NATS host (its own edge
// takes no clients) and each edge is a cmd/edge process; clients are
// spread round robin over the edges and messages are published to NATS.
// Edge CPU is measured per edge process, so the per-delivery cost can be
// compared across edge counts even when the machine has fewer CPUs than
// the edges would need (see bench/README.md).
func (b *bench) multiEdge(ctx context.Context, res *Result) error {
	host, err := b.startHerald(ctx, false, "", "", nil)
	if err != nil {
		return err
	}
	defer func() { _ = (&target{servers: []*load.Server{host}}).stop() }()
	n := b.cfg.Subs[0]
	for _, k := range b.cfg.Edges {
		if ctx.Err() != nil {
			break
		}
		er, err := b.edgesRun(ctx, host, k, n, res)
		if er != nil {
			res.Edges = append(res.Edges, er)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// edgesRun sweeps n subscribers spread over k fresh edge processes.
func (b *bench) edgesRun(ctx context.Context, host *load.Server, k, n int, res *Result) (*EdgesResult, error) {
	t := &target{label: fmt.Sprintf("%d edge(s)", k), nats: host}
	var cpus []string
	for i := range k {
		cpu := ""
		if i < len(b.cfg.EdgeCPU) {
			cpu = b.cfg.EdgeCPU[i]
			cpus = append(cpus, cpu)
		}
		s, err := b.startHerald(ctx, true, host.NATS, cpu, b.cfg.EdgeEnv)
		if err != nil {
			_ = t.stop()
			return nil, err
		}
		if b.cfg.EdgeBudget > 0 {
			cg, err := load.LimitCPU(s.PID, b.cfg.EdgeBudget, fmt.Sprintf("edge%d", i))
			if err != nil {
				_ = s.Stop(ctx)
				_ = t.stop()
				return nil, err
			}
			defer cg.Release() // after t.stop: the edge has exited
		}
		t.servers = append(t.servers, s)
		t.edges = append(t.edges, s)
		if s.PprofURL != "" {
			t.pprofURLs = append(t.pprofURLs, s.PprofURL)
		}
	}
	var urls []string
	for _, s := range t.servers {
		ep, name := b.heraldEndpoint(s.URL)
		urls = append(urls, ep.URL)
		t.endpoint, t.pubName = ep, name
	}
	t.endpoint.URLs = urls
	t.newPub = b.heraldPublisher(host.NATS, t.servers[0].URL, t.servers[0].Token)

	h0, _ := host.Usage()
	e0, _ := t.usage()
	s, err := b.sweep(ctx, t, n)
	h1, _ := host.Usage()
	e1, _ := t.usage()
	if cerr := t.crashed(); cerr != nil && err == nil {
		err = cerr
	}
	_ = t.stop()
	if s == nil {
		return nil, err
	}
	er := &EdgesResult{Edges: k, Subscribers: n, Sweep: s, Pinned: cpus, CPUBudget: b.cfg.EdgeBudget}
	// Edge CPU per delivery at the highest complete rate (the busiest
	// the edges were while keeping up); NATS over the whole sweep.
	var delivered int64
	var best *RunResult
	for _, r := range s.Steps {
		delivered += r.Delivered
		if r.Duplicates > 0 || r.OutOfOrder > 0 {
			res.OK = false
		}
		if r.Complete && (best == nil || r.Offered > best.Offered) {
			best = r
		}
	}
	if best != nil && best.ServerCPUPerM > 0 {
		er.EdgeCPUPerM = best.ServerCPUPerM
		er.PerCoreCapacity = 1e6 / er.EdgeCPUPerM
	}
	if delivered > 0 {
		er.NATSCPUPerM = (h1.CPU - h0.CPU).Seconds() / float64(delivered) * 1e6
		b.vlogf("%d edge(s): edge CPU over the sweep %.2f s", k, (e1.CPU - e0.CPU).Seconds())
	}
	return er, err
}
