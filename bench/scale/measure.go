package scale

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// mark is the cluster, the edges and the machine at one moment; a phase
// takes one before and one after what it measures.
type mark struct {
	cluster ClusterSample
	edges   Counters
	edgeCPU time.Duration
	machine load.CPUStat
}

func (r *runner) mark(ctx context.Context, c *Cluster, edges []*edgeProc) (mark, error) {
	var m mark
	var err error
	if m.cluster, err = c.Sample(false); err != nil {
		return m, err
	}
	if m.edges, err = edgeCounters(ctx, edges); err != nil {
		return m, err
	}
	m.edgeCPU = edgesCPU(edges)
	m.machine, _ = load.ReadCPUStat()
	return m, nil
}

// Delta is what changed between two marks.
type Delta struct {
	Nodes   []string        `json:"nodes"`
	NodeCPU []time.Duration `json:"node_cpu_ns"`
	EdgeCPU time.Duration   `json:"edge_cpu_ns"`
	// Edges is what the edge workers received and sent.
	Edges Counters `json:"edges"`
	// Route is the route traffic on the wire (when counted by proxies);
	// RouteMsgs and RouteBytes the nodes' /routez counters (sent), and
	// ClientMsgs the messages they sent to clients (/varz minus routes).
	Route      RouteTraffic `json:"route_wire"`
	RouteMsgs  int64        `json:"route_msgs"`
	RouteBytes int64        `json:"route_bytes"`
	ClientMsgs int64        `json:"client_msgs"`
	// Inserts and Removes are subscription table changes, summed over
	// nodes (/subsz).
	Inserts uint64 `json:"inserts"`
	Removes uint64 `json:"removes"`
	// Machine is how busy the whole machine was.
	Machine load.MachineLoad `json:"machine"`
}

// since returns what changed from m to now.
func (m mark) since(now mark) Delta {
	d := Delta{EdgeCPU: now.edgeCPU - m.edgeCPU, Edges: now.edges.Sub(m.edges),
		Route: now.cluster.Routes.Sub(m.cluster.Routes), Machine: now.machine.Since(m.machine)}
	for i := range now.cluster.Nodes {
		a, b := now.cluster.Nodes[i], m.cluster.Nodes[i]
		d.Nodes = append(d.Nodes, a.Node)
		d.NodeCPU = append(d.NodeCPU, a.CPU-b.CPU)
		d.RouteMsgs += a.RouteOutMsgs - b.RouteOutMsgs
		d.RouteBytes += a.RouteOutBytes - b.RouteOutBytes
		d.ClientMsgs += (a.OutMsgs - b.OutMsgs) - (a.RouteOutMsgs - b.RouteOutMsgs)
		d.Inserts += a.Subsz.NumInserts - b.Subsz.NumInserts
		d.Removes += a.Subsz.NumRemoves - b.Subsz.NumRemoves
	}
	return d
}

// measure runs fn between two marks.
func (r *runner) measure(ctx context.Context, c *Cluster, edges []*edgeProc, fn func(before mark) error) (Delta, error) {
	before, err := r.mark(ctx, c, edges)
	if err != nil {
		return Delta{}, err
	}
	if err := fn(before); err != nil {
		return Delta{}, err
	}
	after, err := r.mark(ctx, c, edges)
	if err != nil {
		return Delta{}, err
	}
	return before.since(after), nil
}

// waitEdges polls until the edges' counters since before satisfy ok.
func waitEdges(ctx context.Context, edges []*edgeProc, before Counters, timeout time.Duration, what string, ok func(Counters) (got, want uint64)) error {
	return poll(ctx, timeout, 20*time.Millisecond, func() error {
		now, err := edgeCounters(ctx, edges)
		if err != nil {
			return err
		}
		if got, want := ok(now.Sub(before)); got < want {
			return fmt.Errorf("edges %s %d of %d", what, got, want)
		}
		return nil
	})
}

// payload is n bytes of event data.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	return b
}
