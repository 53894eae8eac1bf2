package scale

import (
	"context"
	"fmt"
	"time"
)

// RestartResult is a node killed and started again while edges hold the
// interest: first the failover of the edges connected to it (nats.go
// reconnects to another node and sends every subscription again), then
// the node's rejoin (its peers send it the whole cluster's interest).
type RestartResult struct {
	Node string `json:"node"`
	// EdgeSubs is the subjects the failed-over edges held (and re-sent).
	EdgeSubs int `json:"edge_subs"`
	// Failover is from the kill until the edges reconnected and the
	// surviving nodes' tables were quiet; FailoverCPU the survivors' CPU.
	Failover      time.Duration   `json:"failover_ns"`
	FailoverCPU   []time.Duration `json:"failover_cpu_ns"`
	FailoverRoute RouteTraffic    `json:"failover_route"`
	// Rejoin is from the restart until the node was healthy with its
	// routes and every table quiet; RejoinSubs its subscription count
	// then (before the kill: SubsBefore). RejoinCPU is every node's CPU
	// (the restarted node's since its start).
	Rejoin      time.Duration   `json:"rejoin_ns"`
	SubsBefore  uint32          `json:"subs_before"`
	RejoinSubs  uint32          `json:"rejoin_subs"`
	RejoinCPU   []time.Duration `json:"rejoin_cpu_ns"`
	RejoinRoute RouteTraffic    `json:"rejoin_route"`
}

// restart kills the last node, waits for its edges to fail over, then
// starts it again.
func (r *runner) restart(ctx context.Context, c *Cluster, edges []*edgeProc) (*RestartResult, error) {
	if err := r.quiet(ctx, c); err != nil {
		return nil, err
	}
	victim := len(c.Nodes) - 1
	node := c.Nodes[victim]
	survivors := c.Nodes[:victim]
	var moved []*edgeProc
	for e, ed := range edges {
		if e%len(c.Nodes) == victim {
			moved = append(moved, ed)
		}
	}
	res := &RestartResult{Node: node.Name}
	before, err := c.Sample(false)
	if err != nil {
		return nil, err
	}
	res.SubsBefore = before.Nodes[victim].Subs
	beforeEdges, err := edgeCounters(ctx, moved)
	if err != nil {
		return nil, err
	}
	for _, ed := range moved {
		r, err := ed.do(ctx, request{Op: "counters"})
		if err != nil {
			return nil, err
		}
		res.EdgeSubs += r.Subs
	}

	start := time.Now()
	node.Kill()
	if err := poll(ctx, time.Minute, 20*time.Millisecond, func() error {
		got, err := edgeCounters(ctx, moved)
		if err != nil {
			return err
		}
		if n := got.Sub(beforeEdges).Reconnects; n < uint64(len(moved)) {
			return fmt.Errorf("%d of %d edges reconnected", n, len(moved))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if _, err := r.settleNodes(ctx, survivors, start); err != nil {
		return nil, err
	}
	res.Failover = time.Since(start) - r.cfg.Quiet
	mid, err := c.sampleNodes(survivors, false)
	if err != nil {
		return nil, err
	}
	for i := range mid.Nodes {
		res.FailoverCPU = append(res.FailoverCPU, mid.Nodes[i].CPU-before.Nodes[i].CPU)
	}
	res.FailoverRoute = mid.Routes.Sub(before.Routes)
	r.logf("restart: %s killed; %d edge subjects failed over to the survivors in %v, their CPU %v, %d RS+/RS- on routes",
		node.Name, res.EdgeSubs, res.Failover.Round(time.Millisecond), sumDur(res.FailoverCPU).Round(time.Millisecond), res.FailoverRoute.Interest().Ops)

	start = time.Now()
	if err := node.Restart(); err != nil {
		return nil, err
	}
	if err := poll(ctx, 2*time.Minute, 20*time.Millisecond, c.ready); err != nil {
		return nil, err
	}
	if _, err := r.settle(ctx, c, start); err != nil {
		return nil, err
	}
	res.Rejoin = time.Since(start) - r.cfg.Quiet
	after, err := c.Sample(false)
	if err != nil {
		return nil, err
	}
	res.RejoinSubs = after.Nodes[victim].Subs
	for i := range after.Nodes {
		d := after.Nodes[i].CPU
		if i < victim {
			d -= mid.Nodes[i].CPU
		}
		res.RejoinCPU = append(res.RejoinCPU, d)
	}
	res.RejoinRoute = after.Routes.Sub(mid.Routes)
	r.logf("restart: %s rejoined in %v with %d subscriptions (%d before), CPU %v, %d RS+ on routes (%s)",
		node.Name, res.Rejoin.Round(time.Millisecond), res.RejoinSubs, res.SubsBefore, durs(res.RejoinCPU), res.RejoinRoute.Interest().Ops, bytesStr(res.RejoinRoute.Interest().Bytes))
	return res, nil
}
