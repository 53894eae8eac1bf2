package scale

import (
	"fmt"
	"strings"
	"time"
)

// Summary renders a report as Markdown tables: what bench/README.md's
// "Scale model" section quotes.
func Summary(rep *Report) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	h := rep.Host
	p("# Scale run %s\n\n", rep.Started.Format("2006-01-02 15:04"))
	p("%d CPUs, %s, %s; machine busy %.0f %% before the run; %v in all.\n\n", h.CPUs, h.Go, h.NATSServer, 100*h.Before.Busy, rep.Elapsed.Round(time.Second))

	if len(rep.Interest) > 0 {
		p("## Interest: memory\n\n")
		p("| run | clients | per-client subs | subs n0/n1/n2 | live heap MiB n0/n1/n2 | RSS MiB n0/n1/n2 | settle |\n|---|---|---|---|---|---|---|\n")
		for i, run := range rep.Interest {
			name := runName(rep, i)
			p("| %s | 0 | 0 | %s | %s | %s | |\n", name, subsOf(run.Baseline), heapsOf(run.Baseline), rssOf(run.Baseline))
			for _, m := range run.Memory {
				per := m.Clients * Population{Groups: max(rep.Config.Groups, 0)}.PerClient()
				if run.Design.Shards > 0 {
					per = 0
				}
				p("| %s | %d | %d | %s | %s | %s | %v |\n", name, m.Clients, per, subsOf(m.Nodes), heapsOf(m.Nodes), rssOf(m.Nodes), m.Settle.Round(time.Millisecond))
			}
		}
		p("\n| run | node | live heap B/sub | RSS B/sub | heap fit R² |\n|---|---|---|---|---|\n")
		for i, run := range rep.Interest {
			for _, f := range run.Fit {
				p("| %s | %s | %.0f | %.0f | %.4f |\n", runName(rep, i), f.Node, f.HeapPerSub, f.RSSPerSub, f.HeapR2)
			}
		}
		p("\n## Interest: reconnect storms\n\n")
		p("| run | clients | notices | edge SUB+UNSUB | route RS+/RS- | their bytes | B/op | routez msgs | send | settle | node CPU n0/n1/n2 | CPU per 1k sub ops | notices at edges | machine busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for i, run := range rep.Interest {
			for _, s := range run.Storms {
				in := s.Route.Interest()
				bpo, perK := "–", "–"
				if in.Ops > 0 {
					bpo = fmt.Sprintf("%.1f", float64(in.Bytes)/float64(in.Ops))
				}
				if s.EdgeOps > 0 {
					perK = fmt.Sprintf("%.1f ms", float64(sumDur(s.NodeCPU))/float64(s.EdgeOps)*1000/1e6)
				}
				p("| %s | %d | %v | %d | %d | %s | %s | %d | %v | %v | %s | %s | %d | %.0f %% |\n", runName(rep, i), s.Clients, s.Notices, s.EdgeOps, in.Ops,
					bytesStr(in.Bytes), bpo, s.RouteMsgs, s.Send.Round(time.Millisecond), s.Settle.Round(time.Millisecond), durs(s.NodeCPU), perK, s.Edges.Notices, 100*s.Machine.Busy)
			}
		}
		p("\n")
		var restarts []string
		for i, run := range rep.Interest {
			if x := run.Restart; x != nil {
				restarts = append(restarts, fmt.Sprintf("| %s | %s | %d | %v | %s | %d | %d / %d | %v | %s | %d | %s |\n", runName(rep, i), x.Node, x.EdgeSubs,
					x.Failover.Round(time.Millisecond), durs(x.FailoverCPU), x.FailoverRoute.Interest().Ops, x.SubsBefore, x.RejoinSubs,
					x.Rejoin.Round(time.Millisecond), durs(x.RejoinCPU), x.RejoinRoute.Interest().Ops, bytesStr(x.RejoinRoute.Interest().Bytes)))
			}
		}
		if len(restarts) > 0 {
			p("## Interest: a node killed and restarted\n\n")
			p("| run | node | edge subjects failed over | failover | survivors' CPU | route RS+/RS- | node subs before / after | rejoin | node CPU n0/n1/n2 | route RS+/RS- | their bytes |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
			p("%s\n", strings.Join(restarts, ""))
		}
	}
	if len(rep.Fanout) > 0 {
		p("## Fan-out of targeted events\n\n")
		p("| design | edges | clients | messages | copies per msg | delivered | dropped | slow | node CPU µs/msg | edge CPU µs/msg | route msgs/msg | node CPU n0/n1/n2 | drain | machine busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, f := range rep.Fanout {
			n := float64(f.Messages)
			p("| %s | %d | %d | %d | %.2f | %d | %d | %d | %.2f | %.2f | %.2f | %s | %v | %.0f %% |\n", f.Design, f.EdgeCount, f.Clients, f.Messages,
				float64(f.Edges.Received)/n, f.Edges.Delivered, f.Edges.Dropped, f.Edges.Slow,
				float64(sumDur(f.NodeCPU))/n/1e3, float64(f.EdgeCPU)/n/1e3, float64(f.RouteMsgs)/n, durs(f.NodeCPU), f.Drain.Round(time.Millisecond), 100*f.Machine.Busy)
		}
		p("\n")
	}
	if len(rep.Republish) > 0 {
		p("## History republish at R3\n\n")
		p("| design | in flight | acked | acked/s | failed | p50 | p99 | all delivered | leader | node CPU n0/n1/n2 | node CPU µs/msg | edge CPU µs/msg | machine busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range rep.Republish {
			n := float64(max(r.Acked, 1))
			p("| %s | %d | %d | %.0f | %d | %v | %v | %v | %s | %s | %.1f | %.1f | %.0f %% |\n", r.Design, r.Concurrency, r.Acked, r.Rate, r.Failed,
				r.Latency.Quantile(0.5).Round(10*time.Microsecond), r.Latency.Quantile(0.99).Round(10*time.Microsecond), r.Complete, r.Leader, durs(r.NodeCPU),
				float64(sumDur(r.NodeCPU))/n/1e3, float64(r.EdgeCPU)/n/1e3, 100*r.Machine.Busy)
		}
		p("\n")
	}
	if len(rep.Replay) > 0 {
		p("## Resume storms (replays)\n\n")
		p("| replicas | reader | filters | clients | stored | replays | events | short | retried / failed | storm time | wait p50 / p99 | one replay p50 / p99 | node CPU n0/n1/n2 | node CPU ms/replay | edge CPU ms/replay | machine busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range rep.Replay {
			res := r.Result
			n := float64(max(res.Replays, 1))
			p("| R%d (leader %s) | %s | %s | %d | %d | %d | %d | %d | %d / %d | %v | %v / %v | %v / %v | %s | %.2f | %.2f | %.0f %% |\n", r.Replicas, r.Leader, r.Reader, r.Filters, r.Clients, r.Stored,
				res.Replays, res.Messages, res.Short, res.Retries, res.Errors, res.Elapsed.Round(time.Millisecond),
				res.Wait.Quantile(0.5).Round(time.Millisecond), res.Wait.Quantile(0.99).Round(time.Millisecond),
				res.Run.Quantile(0.5).Round(100*time.Microsecond), res.Run.Quantile(0.99).Round(100*time.Microsecond),
				durs(r.NodeCPU), float64(sumDur(r.NodeCPU))/n/1e6, float64(r.EdgeCPU)/n/1e6, 100*r.Machine.Busy)
		}
		p("\n")
		for _, r := range rep.Replay {
			for f, k := range r.Result.Failures {
				p("- R%d %s, %s filters, %d clients: %d attempts failed with %q\n", r.Replicas, r.Reader, r.Filters, r.Clients, k, f)
			}
		}
		p("\n")
	}
	if m := rep.Model; m != nil {
		u, e, t := m.Units, m.Estimate, m.Target
		p("## Model: unit costs\n\n| unit | mean | min–max (n) |\n|---|---|---|\n")
		row := func(name string, r Range, unit string, f float64) {
			if r.N == 0 {
				return
			}
			p("| %s | %.3g %s | %.3g–%.3g (%d) |\n", name, r.Mean*f, unit, r.Min*f, r.Max*f, r.N)
		}
		row("live heap per subscription, per node", u.HeapPerSub, "B", 1)
		row("RSS per subscription, per node", u.RSSPerSub, "B", 1)
		row("route RS+/RS- per client moved", u.RouteOpsPerClient, "", 1)
		row("route bytes per client moved", u.RouteBytesPerClient, "B", 1)
		row("node CPU per client moved (all nodes)", u.NodeCPUPerClient, "µs", 1e-3)
		row("node CPU per 1k SUB/UNSUB from edges", u.NodeCPUPerKSubOps, "ms", 1e-6)
		row("storm absorbed (clients/s, shared 2 CPUs)", u.StormClientsPerSec, "/s", 1)
		row("node CPU per notice delivered to an edge", u.NodeCPUPerNotice, "µs", 1e-3)
		row("edge CPU per notice received", u.EdgeCPUPerNotice, "µs", 1e-3)
		row("restarted node: route bytes per RS+ received", u.RejoinBytesPerOp, "B", 1)
		row("restarted node: RS+ absorbed per second (shared 2 CPUs)", u.RejoinOpsPerSec, "/s", 1)
		row("sharded: route RS+/RS- per client moved", u.ShardedRouteOpsPerClient, "", 1)
		row("sharded: heap growth per node, 0 → last step", u.ShardedHeap, "KiB", 1.0/1024)
		row(fmt.Sprintf("fan-out, literal, %d edges: node CPU per targeted msg", u.FanoutEdgesMeasured), u.NodeCPUPerMsgLiteral, "µs", 1e-3)
		row("fan-out, literal: edge CPU per targeted msg", u.EdgeCPUPerMsgLiteral, "µs", 1e-3)
		p("| fan-out, sharded: copies per targeted msg | %.2f | |\n", u.CopiesPerMsgSharded)
		row("node CPU per extra copy (sharded)", u.NodeCPUPerExtraCopy, "µs", 1e-3)
		row("edge CPU per dropped copy (sharded)", u.EdgeCPUPerDroppedCopy, "µs", 1e-3)
		p("| republish R3: best acked rate | %.0f /s | %d in flight, p50 %v, p99 %v |\n", u.RepublishBestRate, u.RepublishBestInFlight,
			time.Duration(u.RepublishP50).Round(10*time.Microsecond), time.Duration(u.RepublishP99).Round(10*time.Microsecond))
		p("| republish R3: CPU per msg, leader / each follower / edges | %.1f / %.1f / %.1f µs | |\n", u.RepublishLeaderCPU/1e3, u.RepublishFollowerCPU/1e3, u.RepublishEdgeCPU/1e3)
		for _, ru := range u.Replay {
			p("| replay R%d (%s, %s filters, %d stored): node CPU per replay | %.2f ms | busiest node %.0f %%; edge %.2f ms; %d short, %d retried, %d failed of %d |\n", ru.Replicas, ru.Reader, ru.Filters, ru.Stored,
				ru.NodeCPU/1e6, 100*ru.MaxNodeShare, ru.EdgeCPU/1e6, ru.Short, ru.Retries, ru.Errors, ru.Replays)
		}
		p("\n## Model: %d connections, %d edges, %d nodes\n\n| quantity | estimate |\n|---|---|\n", t.Connections, t.Edges, t.Nodes)
		p("| per-client subscriptions on every node | %.3g (%d per connection) |\n", e.SubsPerNode, e.PerClientSubs)
		p("| live heap per node for them | %.2f GiB (%.2f–%.2f) |\n", e.HeapPerNode.Mean/(1<<30), e.HeapPerNode.Min/(1<<30), e.HeapPerNode.Max/(1<<30))
		p("| RSS per node for them | %.2f GiB (%.2f–%.2f) |\n", e.RSSPerNode.Mean/(1<<30), e.RSSPerNode.Min/(1<<30), e.RSSPerNode.Max/(1<<30))
		p("| %d-client storm: route RS+/RS- | %.3g ops, %.0f MiB |\n", t.Storm, e.StormRouteOps, e.StormRouteBytes.Mean/(1<<20))
		p("| %d-client storm: node CPU (all nodes) | %.1f s (%.1f–%.1f); settled in ≈ %.1f s at the measured rate |\n", t.Storm, e.StormNodeCPU.Mean/1e9, e.StormNodeCPU.Min/1e9, e.StormNodeCPU.Max/1e9, e.StormSec)
		p("| %d-client storm: connection notices | %.3g deliveries, node CPU %.1f s, %.2f s CPU per edge |\n", t.Storm, e.StormNotices, e.StormNoticeCPU/1e9, e.StormNoticeEdge/1e9)
		p("| a restarted node receives | %.3g RS+, %.0f MiB, ≈ %.0f s at the measured rate |\n", e.NodeResyncRouteOp, e.NodeResyncBytes/(1<<20), e.NodeResyncSec)
		p("| notices: a literal subscription per connection costs less CPU per reconnect above | %.1f edges per name |\n", e.NoticeCrossoverEdges)
		if t.Shards > 0 {
			p("| sharded-%d: copies per targeted event | %.1f |\n", t.Shards, e.Amplification)
			p("| sharded-%d: extra CPU per targeted event | %.1f µs |\n", t.Shards, e.ExtraCPUPerMsg/1e3)
			p("| crossover: targeted events per reconnect | %.2f |\n", e.CrossoverMsgsPerRec)
		}
		p("| republish R3: leader capacity | %.0f events/s per leader core (%.2f events per connection per minute) |\n", e.RepublishLeaderCap, e.RepublishEventsPerConnMin)
		for _, ru := range u.Replay {
			p("| %d resumes, R%d %s, %s filters (window as measured: %d stored) | node CPU %.0f s, busiest node %.0f s; %.0f %% of replays short when measured |\n", e.Resumes, ru.Replicas, ru.Reader, ru.Filters, ru.Stored,
				ru.NodeCPU*float64(e.Resumes)/1e9, ru.NodeCPU*ru.MaxNodeShare*float64(e.Resumes)/1e9, 100*float64(ru.Short)/float64(max(ru.Replays, 1)))
		}
		p("\n")
	}
	return b.String()
}

func runName(rep *Report, i int) string {
	run := rep.Interest[i]
	if run.Design.Shards > 0 {
		return run.Design.String()
	}
	k := 0
	for j := 0; j <= i; j++ {
		if rep.Interest[j].Design.Shards == 0 {
			k++
		}
	}
	return fmt.Sprintf("literal #%d", k)
}

func subsOf(ns []NodeSample) string {
	var s []string
	for _, n := range ns {
		s = append(s, fmt.Sprint(n.Subs))
	}
	return strings.Join(s, " / ")
}

func heapsOf(ns []NodeSample) string {
	var s []string
	for _, n := range ns {
		s = append(s, fmt.Sprintf("%.1f", heapOf(n)/(1<<20)))
	}
	return strings.Join(s, " / ")
}

func rssOf(ns []NodeSample) string {
	var s []string
	for _, n := range ns {
		s = append(s, fmt.Sprintf("%.1f", mib(n.RSS)))
	}
	return strings.Join(s, " / ")
}

func durs(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%.2f", d.Seconds()))
	}
	return strings.Join(s, " / ") + " s"
}

func bytesStr(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
