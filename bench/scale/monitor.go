package scale

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// monitorClient reads a node's monitoring and profiling endpoints.
type monitorClient struct {
	mon, prof string
	hc        *http.Client
}

func newMonitorClient(monPort, profPort int) *monitorClient {
	return &monitorClient{
		mon:  fmt.Sprintf("http://127.0.0.1:%d", monPort),
		prof: fmt.Sprintf("http://127.0.0.1:%d", profPort),
		hc:   &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}},
	}
}

func (m *monitorClient) close() { m.hc.CloseIdleConnections() }

func (m *monitorClient) get(url string) ([]byte, int, error) {
	resp, err := m.hc.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

func (m *monitorClient) getJSON(path string, v any) error {
	b, code, err := m.get(m.mon + path)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: %d %s", path, code, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

func (m *monitorClient) healthy() error {
	b, code, err := m.get(m.mon + "/healthz")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("/healthz: %d %s", code, bytes.TrimSpace(b))
	}
	return nil
}

// Varz is the part of /varz this package reads.
type Varz struct {
	Mem           int64   `json:"mem"`
	CPU           float64 `json:"cpu"`
	Subscriptions uint32  `json:"subscriptions"`
	InMsgs        int64   `json:"in_msgs"`
	OutMsgs       int64   `json:"out_msgs"`
	InBytes       int64   `json:"in_bytes"`
	OutBytes      int64   `json:"out_bytes"`
}

// Subsz is the part of /subsz this package reads.
type Subsz struct {
	NumSubs    uint32 `json:"num_subscriptions"`
	NumCache   uint32 `json:"num_cache"`
	NumInserts uint64 `json:"num_inserts"`
	NumRemoves uint64 `json:"num_removes"`
	NumMatches uint64 `json:"num_matches"`
}

// Routez is the part of /routez this package reads.
type Routez struct {
	Routes []struct {
		RemoteName string `json:"remote_name"`
		InMsgs     int64  `json:"in_msgs"`
		OutMsgs    int64  `json:"out_msgs"`
		InBytes    int64  `json:"in_bytes"`
		OutBytes   int64  `json:"out_bytes"`
		NumSubs    uint32 `json:"subscriptions"`
	} `json:"routes"`
}

// Varz reads /varz.
func (n *Node) Varz() (Varz, error) {
	var v Varz
	return v, n.monitorC.getJSON("/varz", &v)
}

// Subsz reads /subsz.
func (n *Node) Subsz() (Subsz, error) {
	var s Subsz
	return s, n.monitorC.getJSON("/subsz", &s)
}

// Routez reads /routez.
func (n *Node) Routez() (Routez, error) {
	var r Routez
	return r, n.monitorC.getJSON("/routez", &r)
}

// HeapStats are the Go runtime's figures of a node after a forced
// collection: HeapAlloc is then the live heap.
type HeapStats struct {
	HeapAlloc int64 `json:"heap_alloc"`
	HeapInuse int64 `json:"heap_inuse"`
	Sys       int64 `json:"sys"`
}

// Heap forces a garbage collection in the node (net/http/pprof's heap
// handler with gc=1) and reads the runtime's memory statistics.
func (n *Node) Heap() (HeapStats, error) {
	b, code, err := n.monitorC.get(n.monitorC.prof + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return HeapStats{}, err
	}
	if code != http.StatusOK {
		return HeapStats{}, fmt.Errorf("%s heap profile: %d", n.Name, code)
	}
	var h HeapStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		for _, f := range []struct {
			key string
			v   *int64
		}{{"# HeapAlloc = ", &h.HeapAlloc}, {"# HeapInuse = ", &h.HeapInuse}, {"# Sys = ", &h.Sys}} {
			if rest, ok := bytes.CutPrefix(line, []byte(f.key)); ok {
				*f.v, _ = strconv.ParseInt(string(rest), 10, 64)
			}
		}
	}
	if h.HeapAlloc == 0 {
		return h, fmt.Errorf("%s heap profile has no memory statistics", n.Name)
	}
	return h, nil
}

// HeapProfile saves the node's heap profile (after a collection) to w.
func (n *Node) HeapProfile(w io.Writer) error {
	resp, err := n.monitorC.hc.Get(n.monitorC.prof + "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// NodeSample is one node at one moment.
type NodeSample struct {
	Node string `json:"node"`
	// RSS and CPU come from /proc/<pid>; CPU is user+system since start.
	RSS   int64         `json:"rss_bytes"`
	CPU   time.Duration `json:"cpu_ns"`
	Heap  *HeapStats    `json:"heap,omitempty"` // only when asked (it forces a collection)
	Subs  uint32        `json:"subscriptions"`  // /varz: local and remote interest
	Subsz Subsz         `json:"subsz"`
	// Message counters of /routez, summed over the node's routes.
	RouteInMsgs   int64 `json:"route_in_msgs"`
	RouteOutMsgs  int64 `json:"route_out_msgs"`
	RouteInBytes  int64 `json:"route_in_bytes"`
	RouteOutBytes int64 `json:"route_out_bytes"`
	// Every connection's message counters (/varz).
	InMsgs   int64 `json:"in_msgs"`
	OutMsgs  int64 `json:"out_msgs"`
	InBytes  int64 `json:"in_bytes"`
	OutBytes int64 `json:"out_bytes"`
}

// Sample reads the node; with heap, after a forced collection.
func (n *Node) Sample(heap bool) (NodeSample, error) {
	s := NodeSample{Node: n.Name}
	if heap {
		h, err := n.Heap()
		if err != nil {
			return s, err
		}
		s.Heap = &h
	}
	u, err := load.ReadUsage(n.PID())
	if err != nil {
		return s, err
	}
	s.RSS, s.CPU = u.RSS, u.CPU
	v, err := n.Varz()
	if err != nil {
		return s, err
	}
	s.Subs, s.InMsgs, s.OutMsgs, s.InBytes, s.OutBytes = v.Subscriptions, v.InMsgs, v.OutMsgs, v.InBytes, v.OutBytes
	if s.Subsz, err = n.Subsz(); err != nil {
		return s, err
	}
	rz, err := n.Routez()
	if err != nil {
		return s, err
	}
	for _, r := range rz.Routes {
		s.RouteInMsgs += r.InMsgs
		s.RouteOutMsgs += r.OutMsgs
		s.RouteInBytes += r.InBytes
		s.RouteOutBytes += r.OutBytes
	}
	return s, nil
}

// ClusterSample is every node at one moment, plus the route proxies' counts.
type ClusterSample struct {
	At     time.Time    `json:"at"`
	Nodes  []NodeSample `json:"nodes"`
	Routes RouteTraffic `json:"route_wire"`
}

// Sample reads every node.
func (c *Cluster) Sample(heap bool) (ClusterSample, error) { return c.sampleNodes(c.Nodes, heap) }

// sampleNodes reads some of the nodes.
func (c *Cluster) sampleNodes(nodes []*Node, heap bool) (ClusterSample, error) {
	cs := ClusterSample{At: time.Now()}
	for _, n := range nodes {
		s, err := n.Sample(heap)
		if err != nil {
			return cs, fmt.Errorf("%s: %w", n.Name, err)
		}
		cs.Nodes = append(cs.Nodes, s)
	}
	cs.Routes = c.RouteTraffic()
	return cs, nil
}

// CPU is the nodes' CPU time summed.
func (cs ClusterSample) CPU() time.Duration {
	var d time.Duration
	for _, n := range cs.Nodes {
		d += n.CPU
	}
	return d
}
