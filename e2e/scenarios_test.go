package e2e

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/e2e/checker"
	"github.com/herald-push/herald/e2e/faultproxy"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// reportOf returns the checker's line for subscriber id.
func reportOf(t *testing.T, rep checker.Report, id string) checker.SubscriberReport {
	t.Helper()
	for _, s := range rep.Subscribers {
		if s.Subscriber == id {
			return s
		}
	}
	t.Fatalf("no report for %s", id)
	return checker.SubscriberReport{}
}

// startReceiving starts a cluster with edges edges and the standard
// workload (SSE and WebSocket subscribers spread over the edges), and
// returns once every subscriber receives. Each setup function sees the
// run before its publishers start.
func startReceiving(t *testing.T, edges int, setup ...func(*run)) (*cluster, *run) {
	t.Helper()
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	for range edges {
		c.startEdge()
	}
	r := newRun(t, c)
	for _, f := range setup {
		f(r)
	}
	r.workload(0, feed, feed, other)
	r.spread(edges, "sse", "ws")
	r.begin()
	r.receiving(r.ph.warm, 20*time.Second)
	return c, r
}

// on returns the subscribers currently connected to edge e.
func (r *run) on(e *edgeProc) []*subscriber {
	var out []*subscriber
	for _, s := range r.subs {
		if s.currentEdge() == e.name {
			out = append(out, s)
		}
	}
	return out
}

// Scenario 1: kill -9 one edge mid-stream. Its clients reconnect to
// another edge with their last event id and miss nothing. Then SIGTERM a
// second edge: the same for a graceful drain.
func TestEdgeKilled(t *testing.T) {
	c, r := startReceiving(t, 3)

	victim := c.edges[0]
	moved := r.on(victim)
	if len(moved) == 0 {
		t.Fatal("no subscriber on the edge to kill")
	}
	r.mark("kill -9 %s (%d subscribers)", victim.name, len(moved))
	victim.kill(t)
	r.receiving(r.ph.after, 30*time.Second, moved...)
	r.mark("its subscribers receive again")

	// Then a graceful stop of another edge (a rolling restart): SIGTERM,
	// its clients get pode.close (SSE) or close 1012 (WebSocket), spread
	// over -drain-window, and resume elsewhere.
	drained := c.edges[1]
	drainedSubs := r.on(drained)
	r.mark("SIGTERM %s (%d subscribers)", drained.name, len(drainedSubs))
	if err := drained.proc.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	if drained.proc.err != nil {
		t.Errorf("%s did not exit cleanly on SIGTERM: %v\n%s", drained.name, drained.proc.err, drained.proc.tail(20))
	}
	r.receiving(r.ph.after, 30*time.Second, drainedSubs...)
	r.mark("its subscribers receive again")

	rep := r.finish("edge-kill-and-drain")
	assertClean(t, rep)
	assertMoved(t, rep, append(moved, drainedSubs...), "it was on a stopped edge")
}

// connectedNode returns the index of the NATS node edge e is connected to
// (the proxy with an open connection), or -1.
func connectedNode(e *edgeProc) int {
	node := -1
	for i, p := range e.proxies {
		if p.Stats().Active > 0 {
			if node >= 0 {
				return -1 // moving between nodes
			}
			node = i
		}
	}
	return node
}

// pinEdge moves edge e's NATS connection onto node i (refusing the others
// for a moment), so that a fault of that node hits the edge's link too.
func (c *cluster) pinEdge(e *edgeProc, node int) {
	c.t.Helper()
	for i, p := range e.proxies {
		if i != node {
			p.Cut()
		}
	}
	natstest.CheckFor(c.t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := connectedNode(e); n != node {
			return fmt.Errorf("%s on node %d, want %d", e.name, n, node)
		}
		return nil
	})
	e.setLink(func(p *faultproxy.Proxy) { p.Pass() })
}

// Scenario 2: kill -9 the NATS node leading the history stream (with an
// edge connected to it), keep it down, restart it.
func TestNATSNodeKilled(t *testing.T) {
	c, r := startReceiving(t, 2)

	js, err := jetstream.New(c.connect("e2e-admin"))
	if err != nil {
		t.Fatal(err)
	}
	leader := c.streamLeader(js, historyStream)
	// Move edge0 onto the leader's node, so that the kill hits an edge's
	// NATS connection too.
	e0 := c.edges[0]
	c.pinEdge(e0, leader)
	r.receiving(r.ph.warm, 30*time.Second)
	before := r.resyncs(e0, "")

	r.mark("kill -9 %s (stream leader, edge0's node)", c.nodes[leader].name)
	c.killNode(leader)
	r.receiving(r.ph.after, 30*time.Second)
	r.mark("receiving again with %s down", c.nodes[leader].name)
	hold(r.ph.fault) // the node stays down
	r.mark("restart %s", c.nodes[leader].name)
	c.restartNodes(leader)
	r.mark("%s healthy", c.nodes[leader].name)
	r.receiving(r.ph.after, 30*time.Second)

	rep := r.finish("nats-node-kill")
	assertClean(t, rep)
	if after := r.resyncs(e0, ""); after <= before {
		t.Errorf("edge0 lost its NATS node but counted no resync (%v -> %v)", before, after)
	}
}

// historyStream is the history stream's name with the default prefix.
const historyStream = "HERALD_EVENTS"

// resyncs reads an edge's herald_edge_resync_total for cause ("" for the
// sum over every cause).
func (r *run) resyncs(e *edgeProc, cause string) float64 {
	r.t.Helper()
	var labels []string
	if cause != "" {
		labels = append(labels, `cause="`+cause+`"`)
	}
	v, err := e.metric("herald_edge_resync_total", labels...)
	if err != nil {
		r.t.Fatalf("%s metrics: %v", e.name, err)
	}
	return v
}

// ready returns nil when the edge's /readyz answers 200.
func ready(e *edgeProc) error {
	resp, err := httpGet(e.url + "/readyz")
	if err != nil {
		return err
	}
	if resp.code != 200 {
		return fmt.Errorf("%s /readyz: %d %s", e.name, resp.code, strings.TrimSpace(resp.body))
	}
	return nil
}

// partition is one edge↔NATS fault and how long it lasts.
type partition struct {
	mode  faultproxy.Mode
	delay time.Duration // for Delay
	d     time.Duration
}

func (p partition) String() string {
	if p.mode == faultproxy.Delay {
		return fmt.Sprintf("delay %v for %v", p.delay, p.d)
	}
	return fmt.Sprintf("%v for %v", p.mode, p.d)
}

// Scenario 3: cut one edge's links to NATS (every node) for 5 s, then heal
// (with HERALD_E2E_LONG=1 also 30 s, a 30 s black hole and a delay). Its
// clients stay connected and receive everything after the heal.
func TestEdgeNATSPartition(t *testing.T) {
	c, r := startReceiving(t, 2)

	victim := c.edges[0]
	cut := r.on(victim)
	plan := []partition{{mode: faultproxy.Cut, d: 5 * time.Second}}
	if r.ph.longer {
		plan = []partition{
			{mode: faultproxy.Cut, d: 5 * time.Second},
			{mode: faultproxy.Blackhole, d: 30 * time.Second},
			{mode: faultproxy.Delay, delay: 100 * time.Millisecond, d: 10 * time.Second},
			{mode: faultproxy.Cut, d: 30 * time.Second},
		}
	}
	resyncsBefore := r.resyncs(victim, "")
	for i, p := range plan {
		// The last fault heals after the publishers stopped: nothing
		// newer reveals what the edge missed, only its own resync can.
		last := i == len(plan)-1
		r.mark("%s: %v%s", victim.name, p, map[bool]string{true: " (publishers stop during it)"}[last])
		victim.setLink(func(x *faultproxy.Proxy) {
			switch p.mode {
			case faultproxy.Cut:
				x.Cut()
			case faultproxy.Blackhole:
				x.Blackhole()
			case faultproxy.Delay:
				x.Delay(p.delay)
			}
		})
		if p.mode == faultproxy.Cut {
			// The edge notices: it reports not ready while NATS is away.
			natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if ready(victim) == nil {
					return errors.New("edge still ready with its NATS links cut")
				}
				return nil
			})
		}
		if last {
			hold(p.d / 2)
			r.stopPublishers()
			hold(p.d / 2)
		} else {
			hold(p.d)
		}
		victim.setLink(func(x *faultproxy.Proxy) { x.Pass() })
		// NATS reconnects within its reconnect wait (2 s plus jitter).
		natstest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error { return ready(victim) })
		r.mark("healed; %s ready", victim.name)
		if !last {
			r.receiving(r.ph.after, 60*time.Second, cut...)
		}
	}
	// The edge repaired its connections from history. (A reconnect while a
	// connection's replay is already running, retrying, adds no count: that
	// replay does the repair; so the check is on the total, by any cause.)
	if n := r.resyncs(victim, ""); n <= resyncsBefore {
		t.Errorf("%s counted no resync (%v before the faults, %v after)", victim.name, resyncsBefore, n)
	}
	rep := r.finish("edge-nats-partition")
	assertClean(t, rep)
}

// Scenario 4: a client that stops reading is closed as slow by the edge
// (256 KiB queue, 1 s write timeout) and recovers what it missed when it
// reconnects. The queue holds about a third of a second of this workload,
// so a reader of this test process that pauses briefly under CPU
// contention is not closed along with it.
func TestSlowClient(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	for range 2 {
		c.startEdge("-queue-bytes", "256KiB", "-write-timeout", "1s")
	}
	r := newRun(t, c)
	r.workload(4000, feed, feed, other) // ~4 KiB events fill socket buffers and the queue fast
	// The slow clients are alone on edge0, so that its slow-close counter
	// counts them only: under CPU contention a reader of this test process
	// may fall behind too, and the edge is right to close it as slow.
	slow := []*subscriber{r.subscribe("sse", 0, 4096), r.subscribe("ws", 0, 4096)}
	r.subscribe("sse", 1, 0)
	r.subscribe("ws", 1, 0)
	r.begin()
	r.receiving(r.ph.warm, 20*time.Second)

	victim := c.edges[0]
	r.mark("slow clients stop reading")
	for _, s := range slow {
		s.pause()
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		v, err := victim.metric("herald_edge_disconnects_total", `reason="slow"`)
		if err != nil {
			return err
		}
		if int(v) < len(slow) {
			return fmt.Errorf("%v slow disconnects, want %d", v, len(slow))
		}
		return nil
	})
	r.mark("edge closed them as slow; they read again")
	for _, s := range slow {
		s.resume()
	}
	r.receiving(r.ph.after, 30*time.Second, slow...)
	r.mark("slow clients caught up")

	rep := r.finish("slow-client")
	assertClean(t, rep)
	assertMoved(t, rep, slow, "it was closed as slow")
}

// Scenario 5: a client away longer than the retention (the stream keeps
// 50 events) gets an explicit herald.gap (reason expired) and continues
// live; malformed and foreign-epoch ids get herald.gap too.
func TestOfflineBeyondRetention(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	// The first edge creates the stream with the small limit; the second
	// uses it as it is.
	for range 2 {
		c.startEdge("-history-max-msgs", "50")
	}
	r := newRun(t, c)
	r.workload(0, feed, feed, other)
	r.spread(2, "sse", "ws")
	away := []*subscriber{r.subscribe("sse", 0, 0), r.subscribe("ws", 1, 0)}
	malformed := r.subscribeWithID("sse", 1, "not-a-herald-id")
	foreign := r.subscribeWithID("ws", 0, "zzzz:5")
	r.begin()
	r.receiving(r.ph.warm, 20*time.Second)

	for _, s := range away {
		s.goOffline()
	}
	_, from, _ := away[0].progress()
	natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if h := r.highWater(feed); h < from+200 {
			return fmt.Errorf("stream at %d, want %d (4 retentions past the offline clients)", h, from+200)
		}
		return nil
	})
	for _, s := range away {
		s.resume()
	}
	r.receiving(r.ph.after, 30*time.Second, away...)

	rep := r.finish("offline-beyond-retention")
	assertClean(t, rep, append(away, malformed, foreign)...)
	for _, s := range away {
		got := reportOf(t, rep, s.id)
		if got.GapReasons["expired"] < 1 || got.Explained == 0 {
			t.Errorf("%s came back after the retention without an expired herald.gap: %+v", s.id, got)
		}
	}
	for s, reason := range map[*subscriber]string{malformed: "malformed", foreign: "epoch"} {
		if got := reportOf(t, rep, s.id); got.GapReasons[reason] != 1 {
			t.Errorf("%s: gap reasons %v, want one %s", s.id, got.GapReasons, reason)
		}
	}
}

// The harness can fail: a subscriber that resumes from a position ahead of
// the last event it received (as a buggy edge would place it) is reported
// with lost events, while an honest one next to it is clean.
func TestCheckerCatchesLossyResume(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	c.startEdge()
	r := newRun(t, c)
	r.workload(0, feed, other)
	honest, liar := r.subscribe("sse", 0, 0), r.subscribe("sse", 0, 0)
	r.begin()
	r.receiving(r.ph.warm, 20*time.Second)
	const skip = 20
	liar.tamper(func(id string) string {
		p, err := broker.ParsePosition(id)
		if err != nil {
			t.Errorf("last id %q: %v", id, err)
			return id
		}
		return broker.FormatEventID(p.Epoch, p.Seq+skip, "")
	})
	for _, s := range []*subscriber{honest, liar} {
		s.goOffline()
	}
	_, from, _ := liar.progress()
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if h := r.highWater(feed); h < from+2*skip {
			return fmt.Errorf("stream at %d, want %d", h, from+2*skip)
		}
		return nil
	})
	for _, s := range []*subscriber{honest, liar} {
		s.resume()
	}
	r.receiving(r.ph.after, 20*time.Second)
	rep := r.finish("control-lossy-resume")
	if err := reportOf(t, rep, honest.id).Clean(); err != nil {
		t.Error(err)
	}
	got := reportOf(t, rep, liar.id)
	if got.Lost == 0 || got.Lost > skip || got.LostMiddle != got.Lost {
		t.Errorf("a resume that skipped %d positions: lost=%d lost-middle=%d, want 1..%d, all in the middle", skip, got.Lost, got.LostMiddle, skip)
	}
}

// Whole-cluster crash: kill -9 every NATS node at once, restart them. With
// sync_interval: always every acknowledged event is on disk before its
// acknowledgement, so nothing acknowledged may be lost. With the default
// (fsync every 2 minutes, asynchronous flush for replicated streams) the
// scenario documents what happens; it asserts the same properties only for
// events published after the restart.
func TestClusterKilled(t *testing.T) {
	skipUnlessEnabled(t)
	for _, tc := range []struct {
		name string
		sync bool
	}{{"sync_always", true}, {"sync_default", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.sync && testing.Short() {
				t.Skip("-short: the default-sync run documents behaviour; it asserts nothing about events acknowledged before the crash")
			}
			c := startCluster(t, clusterOptions{SyncAlways: tc.sync})
			for range 2 {
				c.startEdge()
			}
			r := newRun(t, c)
			r.workload(0, feed, feed, other)
			r.spread(2, "sse", "ws")
			r.begin()
			r.receiving(r.ph.warm, 20*time.Second)

			for _, n := range c.nodes {
				_ = syscall.Kill(-n.proc.pid(), syscall.SIGKILL)
			}
			for i := range c.nodes {
				c.killNode(i) // reaps
			}
			crashHigh := r.highWater(feed)
			hold(r.ph.fault / 2)
			c.restartNodes(0, 1, 2)
			r.receiving(r.ph.after, 60*time.Second)

			rep := r.finish("cluster-kill-" + tc.name)
			if tc.sync {
				assertClean(t, rep)
				return
			}
			t.Logf("highest acknowledged position at the crash: %d", crashHigh)
			for _, s := range rep.Subscribers {
				if s.Duplicated+s.Reordered+s.Unexpected != 0 {
					t.Errorf("%s: %v", s.Subscriber, s.Clean())
				}
				if s.Lost > 0 {
					t.Logf("%s lost %d acknowledged events (default sync): %v", s.Subscriber, s.Lost, s.Samples)
				}
			}
		})
	}
}
