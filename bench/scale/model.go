package scale

import (
	"math"
	"time"
)

// Target is the deployment the model extrapolates to.
type Target struct {
	// Connections in the whole cluster. Default 1M.
	Connections int `json:"connections"`
	// Edges holding them (each the same share). Default 50.
	Edges int `json:"edges"`
	// Nodes of the NATS cluster, full mesh. Default 3.
	Nodes int `json:"nodes"`
	// Storm is the reconnect storm, in clients. Default 100k.
	Storm int `json:"storm"`
	// ResumeFraction of the connections resume at once. Default 0.1.
	ResumeFraction float64 `json:"resume_fraction"`
	// Shards of the sharded design evaluated. Default: the largest
	// measured.
	Shards int `json:"shards"`
}

func (t Target) withDefaults() Target {
	if t.Connections == 0 {
		t.Connections = 1_000_000
	}
	if t.Edges == 0 {
		t.Edges = 50
	}
	if t.Nodes == 0 {
		t.Nodes = 3
	}
	if t.Storm == 0 {
		t.Storm = 100_000
	}
	if t.ResumeFraction == 0 {
		t.ResumeFraction = 0.1
	}
	return t
}

// Range is a measured figure: mean, lowest and highest over runs (and
// nodes, where it is per node).
type Range struct {
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	N    int     `json:"n"`
}

func rangeOf(xs []float64) Range {
	if len(xs) == 0 {
		return Range{}
	}
	r := Range{Min: math.Inf(1), Max: math.Inf(-1), N: len(xs)}
	for _, x := range xs {
		r.Mean += x
		r.Min = min(r.Min, x)
		r.Max = max(r.Max, x)
	}
	r.Mean /= float64(len(xs))
	return r
}

func (r Range) scale(f float64) Range {
	return Range{Mean: r.Mean * f, Min: r.Min * f, Max: r.Max * f, N: r.N}
}

// Units are the unit costs the model takes from the measurements.
type Units struct {
	// Per node, per subscription the node holds (literal design).
	HeapPerSub Range `json:"heap_bytes_per_sub"`
	RSSPerSub  Range `json:"rss_bytes_per_sub"`
	// Per client moved in a storm (literal, no notices): route interest
	// operations and bytes on the wire, and the nodes' CPU (summed).
	RouteOpsPerClient   Range `json:"route_ops_per_client"`
	RouteBytesPerClient Range `json:"route_bytes_per_client"`
	NodeCPUPerClient    Range `json:"node_cpu_ns_per_client"`
	// NodeCPUPerKSubOps is the nodes' CPU per 1000 SUB/UNSUB the edges
	// sent (the "per 1k churned subscriptions").
	NodeCPUPerKSubOps Range `json:"node_cpu_ns_per_1k_sub_ops"`
	// StormClientsPerSec is how fast the cluster absorbed the storm (all
	// processes on one 2-CPU machine).
	StormClientsPerSec Range `json:"storm_clients_per_s"`
	// Connection notices (literal and sharded alike): the nodes' and the
	// edges' CPU per notice an edge received, from a storm with notices
	// against the same storm without.
	NodeCPUPerNotice Range `json:"node_cpu_ns_per_notice_delivery"`
	EdgeCPUPerNotice Range `json:"edge_cpu_ns_per_notice"`
	// Sharded: route interest operations per client moved (0 expected).
	ShardedRouteOpsPerClient Range `json:"sharded_route_ops_per_client"`
	ShardedHeap              Range `json:"sharded_heap_growth_bytes"` // per node, baseline to last step
	// Fan-out: per targeted message, the nodes' CPU (summed) and the
	// edges' CPU; per extra delivery (a copy an edge drops).
	NodeCPUPerMsgLiteral  Range   `json:"node_cpu_ns_per_msg_literal"`
	EdgeCPUPerMsgLiteral  Range   `json:"edge_cpu_ns_per_msg_literal"`
	NodeCPUPerExtraCopy   Range   `json:"node_cpu_ns_per_extra_copy"`
	EdgeCPUPerDroppedCopy Range   `json:"edge_cpu_ns_per_dropped_copy"`
	CopiesPerMsgSharded   float64 `json:"copies_per_msg_sharded"`
	FanoutEdgesMeasured   int     `json:"fanout_edges"`
	RepublishBestRate     float64 `json:"republish_best_acked_per_s"`
	RepublishBestInFlight int     `json:"republish_best_in_flight"`
	RepublishP50          float64 `json:"republish_p50_ns"`
	RepublishP99          float64 `json:"republish_p99_ns"`
	RepublishLeaderCPU    float64 `json:"republish_leader_cpu_ns_per_msg"`
	RepublishFollowerCPU  float64 `json:"republish_follower_cpu_ns_per_msg"`
	RepublishEdgeCPU      float64 `json:"republish_edge_cpu_ns_per_msg"`
	// Rejoin: a restarted node's interest, per RS+ it received (route
	// bytes) and how fast it absorbed them (shared 2 CPUs).
	RejoinBytesPerOp Range `json:"rejoin_route_bytes_per_op"`
	RejoinOpsPerSec  Range `json:"rejoin_ops_per_s"`
	// Replay is, per replica count and filter set, the largest storm
	// against the largest stored window.
	Replay []ReplayUnit `json:"replay"`
}

// ReplayUnit is the cost of one replay in one configuration.
type ReplayUnit struct {
	Replicas     int     `json:"replicas"`
	Method       string  `json:"method"`
	Reader       string  `json:"reader"`
	Filters      string  `json:"filters"`
	Clients      int     `json:"clients"`
	Stored       uint64  `json:"stored"`
	Replays      int     `json:"replays"`
	Short        int     `json:"short"`
	Retries      int     `json:"retries"`
	Errors       int     `json:"errors"`
	NodeCPU      float64 `json:"node_cpu_ns"` // per replay, summed over nodes
	MaxNodeShare float64 `json:"max_node_share"`
	EdgeCPU      float64 `json:"edge_cpu_ns"`
}

// Estimate is the target deployment under one figure each.
type Estimate struct {
	PerClientSubs int `json:"per_client_subs"`
	// Literal design.
	SubsPerNode       float64 `json:"subs_per_node"`
	HeapPerNode       Range   `json:"heap_bytes_per_node"`
	RSSPerNode        Range   `json:"rss_bytes_per_node"`
	StormRouteOps     float64 `json:"storm_route_ops"`
	StormRouteBytes   Range   `json:"storm_route_bytes"`
	StormNodeCPU      Range   `json:"storm_node_cpu_ns"` // summed over nodes
	StormNotices      float64 `json:"storm_notice_deliveries"`
	StormNoticeCPU    float64 `json:"storm_notice_node_cpu_ns"`
	StormNoticeEdge   float64 `json:"storm_notice_edge_cpu_ns_per_edge"`
	NodeResyncRouteOp float64 `json:"node_restart_route_ops"` // interest a restarted node receives
	NodeResyncBytes   float64 `json:"node_restart_route_bytes"`
	NodeResyncSec     float64 `json:"node_restart_s"` // at the measured absorption rate
	StormSec          float64 `json:"storm_s"`        // at the measured absorption rate
	// NoticeCrossoverEdges is the edge count above which a literal
	// notice subscription per connection would cost a reconnect less CPU
	// than the per-name wildcard (which sends every notice to every edge
	// of the name).
	NoticeCrossoverEdges float64 `json:"notice_crossover_edges"`
	// RepublishEventsPerConn is the leader capacity shared by every
	// connection: events per connection per minute.
	RepublishEventsPerConnMin float64 `json:"republish_events_per_conn_min"`
	// Sharded design.
	Amplification       float64 `json:"sharded_copies_per_targeted_msg"`
	ExtraCPUPerMsg      float64 `json:"sharded_extra_cpu_ns_per_targeted_msg"` // nodes and edges
	CrossoverMsgsPerRec float64 `json:"crossover_targeted_msgs_per_reconnect"`
	// Republish and replay.
	RepublishLeaderCap float64 `json:"republish_leader_msgs_per_core_s"`
	Resumes            int     `json:"resumes"`
}

// Model is the unit costs and the estimate.
type Model struct {
	Target   Target   `json:"target"`
	Units    Units    `json:"units"`
	Estimate Estimate `json:"estimate"`
}

// BuildModel derives the unit costs from a report and extrapolates.
func BuildModel(rep *Report) *Model {
	t := rep.Config.Target
	m := &Model{Target: t}
	u := &m.Units
	pop := Population{Groups: max(rep.Config.Groups, 0)}
	var heap, rss, ops, bytes, cpu, cpuK, rate, noticeNode, noticeEdge, shOps, shHeap []float64
	for _, run := range rep.Interest {
		if run.Design.Shards == 0 {
			for _, f := range run.Fit {
				heap = append(heap, f.HeapPerSub)
				rss = append(rss, f.RSSPerSub)
			}
		} else if len(run.Memory) > 0 {
			last := run.Memory[len(run.Memory)-1]
			for i, n := range last.Nodes {
				shHeap = append(shHeap, heapOf(n)-heapOf(run.Baseline[i]))
			}
		}
		for i := range run.Storms {
			s := &run.Storms[i]
			k := float64(s.Clients)
			if s.Notices {
				// Against the storm of the same size without notices.
				for _, p := range run.Storms {
					if !p.Notices && p.Clients == s.Clients && s.Edges.Notices > 0 {
						n := float64(s.Edges.Notices)
						noticeNode = append(noticeNode, float64(sumDur(s.NodeCPU)-sumDur(p.NodeCPU))/n)
						noticeEdge = append(noticeEdge, float64(s.EdgeCPU-p.EdgeCPU)/n)
					}
				}
				continue
			}
			if run.Design.Shards > 0 {
				shOps = append(shOps, float64(s.Route.Interest().Ops)/k)
				continue
			}
			ops = append(ops, float64(s.Route.Interest().Ops)/k)
			bytes = append(bytes, float64(s.Route.Interest().Bytes)/k)
			cpu = append(cpu, float64(sumDur(s.NodeCPU))/k)
			if s.EdgeOps > 0 {
				cpuK = append(cpuK, float64(sumDur(s.NodeCPU))/float64(s.EdgeOps)*1000)
			}
			if s.Settle > 0 {
				rate = append(rate, k/s.Settle.Seconds())
			}
		}
	}
	u.HeapPerSub, u.RSSPerSub = rangeOf(heap), rangeOf(rss)
	u.RouteOpsPerClient, u.RouteBytesPerClient, u.NodeCPUPerClient = rangeOf(ops), rangeOf(bytes), rangeOf(cpu)
	u.NodeCPUPerKSubOps, u.StormClientsPerSec = rangeOf(cpuK), rangeOf(rate)
	u.NodeCPUPerNotice, u.EdgeCPUPerNotice = rangeOf(noticeNode), rangeOf(noticeEdge)
	u.ShardedRouteOpsPerClient, u.ShardedHeap = rangeOf(shOps), rangeOf(shHeap)
	var rjBytes, rjRate []float64
	for _, run := range rep.Interest {
		if x := run.Restart; x != nil && x.RejoinRoute.Interest().Ops > 0 && x.Rejoin > 0 {
			in := x.RejoinRoute.Interest()
			rjBytes = append(rjBytes, float64(in.Bytes)/float64(in.Ops))
			rjRate = append(rjRate, float64(in.Ops)/x.Rejoin.Seconds())
		}
	}
	u.RejoinBytesPerOp, u.RejoinOpsPerSec = rangeOf(rjBytes), rangeOf(rjRate)

	// Fan-out: each sharded run against the literal run just before it
	// (same cluster, same load, minutes apart).
	var litNode, litEdge, extraNode, extraEdge, copies []float64
	var lit *FanoutRun
	for i := range rep.Fanout {
		f := &rep.Fanout[i]
		n := float64(f.Messages)
		if n == 0 {
			continue
		}
		node, edge := float64(sumDur(f.NodeCPU))/n, float64(f.EdgeCPU)/n
		if f.Design.Shards == 0 {
			lit = f
			litNode, litEdge = append(litNode, node), append(litEdge, edge)
			u.FanoutEdgesMeasured = f.EdgeCount
			continue
		}
		copies = append(copies, float64(f.Edges.Received)/n)
		if lit == nil {
			continue
		}
		ln := float64(lit.Messages)
		extra := float64(f.Edges.Received)/n - float64(lit.Edges.Received)/ln
		if extra > 0 {
			extraNode = append(extraNode, (node-float64(sumDur(lit.NodeCPU))/ln)/extra)
			extraEdge = append(extraEdge, (edge-float64(lit.EdgeCPU)/ln)/extra)
		}
	}
	u.NodeCPUPerMsgLiteral, u.EdgeCPUPerMsgLiteral = rangeOf(litNode), rangeOf(litEdge)
	u.NodeCPUPerExtraCopy, u.EdgeCPUPerDroppedCopy = rangeOf(extraNode), rangeOf(extraEdge)
	u.CopiesPerMsgSharded = rangeOf(copies).Mean
	// Republish: the literal design's best rate.
	for _, r := range rep.Republish {
		if r.Design.Shards != 0 || r.Rate <= u.RepublishBestRate {
			continue
		}
		u.RepublishBestRate, u.RepublishBestInFlight = r.Rate, r.Concurrency
		u.RepublishP50, u.RepublishP99 = float64(r.Latency.Quantile(0.5)), float64(r.Latency.Quantile(0.99))
		var leader, others float64
		for i, name := range r.Nodes {
			if name == r.Leader {
				leader = float64(r.NodeCPU[i])
			} else {
				others += float64(r.NodeCPU[i])
			}
		}
		if r.Acked > 0 {
			u.RepublishLeaderCPU = leader / float64(r.Acked)
			u.RepublishFollowerCPU = others / float64(max(len(r.Nodes)-1, 1)) / float64(r.Acked)
			u.RepublishEdgeCPU = float64(r.EdgeCPU) / float64(r.Acked)
		}
	}
	// Replay: per (replicas, method, filters), the largest storm against
	// the largest stored window (its short and failed replays reported
	// with it).
	better := func(r *ReplayRun, than ReplayUnit) bool {
		if r.Stored != than.Stored {
			return r.Stored > than.Stored
		}
		return r.Clients > than.Clients
	}
	for i := range rep.Replay {
		r := &rep.Replay[i]
		if r.Result.Replays == 0 {
			continue
		}
		k := -1
		for j, ru := range u.Replay {
			if ru.Replicas == r.Replicas && ru.Method == r.Method && ru.Filters == r.Filters {
				k = j
			}
		}
		if k >= 0 && !better(r, u.Replay[k]) {
			continue
		}
		n := float64(r.Result.Replays)
		ru := ReplayUnit{Replicas: r.Replicas, Method: r.Method, Reader: r.Reader, Filters: r.Filters, Clients: r.Clients, Stored: r.Stored,
			Replays: r.Result.Replays, Short: r.Result.Short, Retries: r.Result.Retries, Errors: r.Result.Errors,
			NodeCPU: float64(sumDur(r.NodeCPU)) / n, EdgeCPU: float64(r.EdgeCPU) / n}
		var top time.Duration
		for _, c := range r.NodeCPU {
			top = max(top, c)
		}
		if s := sumDur(r.NodeCPU); s > 0 {
			ru.MaxNodeShare = float64(top) / float64(s)
		}
		if k >= 0 {
			u.Replay[k] = ru
		} else {
			u.Replay = append(u.Replay, ru)
		}
	}

	// The estimate.
	e := &m.Estimate
	e.PerClientSubs = pop.PerClient()
	// Every node holds every client's subscriptions: locally for the
	// edges connected to it, as remote interest for the others.
	e.SubsPerNode = float64(t.Connections * e.PerClientSubs)
	e.HeapPerNode, e.RSSPerNode = u.HeapPerSub.scale(e.SubsPerNode), u.RSSPerSub.scale(e.SubsPerNode)
	storm := float64(t.Storm)
	// A moved client: its subjects are released on one node and taken on
	// another, and each change goes to every other node.
	e.StormRouteOps = storm * float64(e.PerClientSubs) * 2 * float64(t.Nodes-1)
	e.StormRouteBytes = u.RouteBytesPerClient.scale(storm * float64(t.Nodes-1) / 2) // measured on 3 nodes: 2 peers per change
	e.StormNodeCPU = u.NodeCPUPerClient.scale(storm)
	e.StormNotices = storm * float64(t.Edges)
	e.StormNoticeCPU = u.NodeCPUPerNotice.Mean * e.StormNotices
	e.StormNoticeEdge = u.EdgeCPUPerNotice.Mean * storm
	e.NodeResyncRouteOp = e.SubsPerNode
	e.NodeResyncBytes = e.SubsPerNode * u.RejoinBytesPerOp.Mean
	if u.RejoinOpsPerSec.Mean > 0 {
		e.NodeResyncSec = e.SubsPerNode / u.RejoinOpsPerSec.Mean
	}
	if u.StormClientsPerSec.Mean > 0 {
		e.StormSec = storm / u.StormClientsPerSec.Mean
	}
	if perNotice := u.NodeCPUPerNotice.Mean + u.EdgeCPUPerNotice.Mean; perNotice > 0 && e.PerClientSubs > 0 {
		e.NoticeCrossoverEdges = 1 + u.NodeCPUPerClient.Mean/float64(e.PerClientSubs)/perNotice
	}
	// Sharded: a targeted event reaches every edge holding a client of
	// its shard.
	shards := t.Shards
	if shards == 0 {
		for _, run := range rep.Interest {
			shards = max(shards, run.Design.Shards)
		}
	}
	if shards > 0 {
		m.Target.Shards = shards
		perEdge := float64(t.Connections) / float64(t.Edges)
		e.Amplification = float64(t.Edges) * (1 - math.Pow(1-1/float64(shards), perEdge))
		e.ExtraCPUPerMsg = (e.Amplification - 1) * (u.NodeCPUPerExtraCopy.Mean + u.EdgeCPUPerDroppedCopy.Mean)
		if e.ExtraCPUPerMsg > 0 {
			e.CrossoverMsgsPerRec = u.NodeCPUPerClient.Mean / e.ExtraCPUPerMsg
		}
	}
	if u.RepublishLeaderCPU > 0 {
		e.RepublishLeaderCap = float64(time.Second) / u.RepublishLeaderCPU
		e.RepublishEventsPerConnMin = e.RepublishLeaderCap * 60 / float64(t.Connections)
	}
	e.Resumes = int(float64(t.Connections) * t.ResumeFraction)
	return m
}
