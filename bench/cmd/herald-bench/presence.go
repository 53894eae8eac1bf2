package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/pkg/broker"
)

// The presence scenario measures Herald's cluster-wide presence with many
// connections and no sockets: a real nats-server process, and -edges
// worker processes that each run an edge's presence (broker.Presence, the
// code cmd/edge runs) over a registry of N/edges simulated connections.
//
//   - lookups (by clientId, hits and misses) and list pages over NATS
//     request/reply, answered by gathering from every edge: p50/p99, and
//     the rate at 16 requests in flight;
//   - the same lookups from a NATS key-value bucket holding one key per
//     connection (the design it was compared with);
//   - kill -9 of one edge: lookup latency while the others still wait for
//     it, and when its watchers publish the edge_lost disconnects;
//   - the cost of one connect plus one disconnect at -rate pairs per
//     second: lifecycle events (two watching edges mirroring them) against
//     one KV write per connect and per disconnect, in NATS server CPU.

// presenceEdgeEnv makes a herald-bench process a simulated edge: its value
// is the edge id; presenceArgsEnv holds "natsURL conns edges".
const (
	presenceEdgeEnv = "HERALD_BENCH_PRESENCE_EDGE"
	presenceArgsEnv = "HERALD_BENCH_PRESENCE_ARGS"
	presenceName    = "Pode.Web.Actions"
	presenceGroups  = 100
)

// PresenceResult is one connection count of the presence scenario.
type PresenceResult struct {
	Connections int `json:"connections"`
	Edges       int `json:"edges"`
	// ReadySeconds is how long the edges took to know each other and
	// mirror their watched neighbours (snapshots included).
	ReadySeconds float64 `json:"ready_seconds"`

	LookupHit     Latency `json:"lookup_hit"`
	LookupMiss    Latency `json:"lookup_miss"`
	ListPage      Latency `json:"list_page_100"`
	LookupsPerSec float64 `json:"lookups_per_second_16_in_flight"`

	KVGet        Latency `json:"kv_get"`
	KVLoadPerSec float64 `json:"kv_puts_per_second"`

	Kill *KillResult `json:"kill,omitempty"`
}

// KillResult is what followed the kill -9 of one edge.
type KillResult struct {
	Connections int     `json:"connections"` // the killed edge's
	LostEvents  int     `json:"edge_lost_events"`
	Duplicates  int     `json:"duplicates"`
	FirstMS     float64 `json:"first_event_ms"`
	LastMS      float64 `json:"last_event_ms"`
	// LookupWaiting: lookups while the others still waited for the dead
	// edge (its last heartbeat recent); LookupAfter: after.
	LookupWaiting Latency `json:"lookup_while_waiting"`
	LookupAfter   Latency `json:"lookup_after"`
	StaleAnswers  int     `json:"answers_with_its_connections"`
}

// WriteCost is the cost of connect+disconnect pairs in one design.
type WriteCost struct {
	Design        string  `json:"design"`
	Pairs         int     `json:"pairs"`
	Seconds       float64 `json:"seconds"`
	NATSMicros    float64 `json:"nats_cpu_us_per_pair"`
	ClientsMicros float64 `json:"clients_cpu_us_per_pair"` // the publishing edge and the watchers (this process)
}

// simSource is a simulated edge's registry: what broker.Presence reads.
type simSource struct {
	byID    map[string]broker.ConnInfo
	byGroup map[string][]broker.ConnInfo
	all     []broker.ConnInfo
}

func (s *simSource) Lookup(name, id string, fn func(broker.ConnInfo)) {
	if c, ok := s.byID[id]; ok && c.Name == name {
		fn(c)
	}
}

func (s *simSource) Range(name, group string, fn func(broker.ConnInfo)) {
	list := s.all
	if group != "" {
		list = s.byGroup[strings.ToLower(group)]
	}
	for _, c := range list {
		if name == "" || c.Name == name {
			fn(c)
		}
	}
}

func (s *simSource) Len() int { return len(s.all) }

func clientID(i int) string { return fmt.Sprintf("c%07d", i) }

// newSimSource holds the connections i ≡ part (mod of) of 0..n-1.
func newSimSource(edge string, n, part, of int) *simSource {
	s := &simSource{byID: map[string]broker.ConnInfo{}, byGroup: map[string][]broker.ConnInfo{}}
	since := time.Now()
	for i := part; i < n; i += of {
		c := broker.ConnInfo{Edge: edge, Conn: edge + "-" + strconv.Itoa(i), Name: presenceName,
			Group: "page_" + strconv.Itoa(i%presenceGroups), ClientID: clientID(i), Transport: "sse_h1", Since: since}
		s.byID[c.ClientID] = c
		s.byGroup[c.Group] = append(s.byGroup[c.Group], c)
		s.all = append(s.all, c)
	}
	return s
}

// servePresenceEdge is a simulated edge process: it prints "ready" once it
// knows the other edges and mirrors those it watches, then runs until its
// standard input closes.
func servePresenceEdge() error {
	edge := os.Getenv(presenceEdgeEnv)
	f := strings.Fields(os.Getenv(presenceArgsEnv))
	if len(f) != 4 {
		return errors.New("want natsURL conns part edges")
	}
	n, _ := strconv.Atoi(f[1])
	part, _ := strconv.Atoi(f[2])
	of, _ := strconv.Atoi(f[3])
	nc, err := nats.Connect(f[0], nats.Name(edge))
	if err != nil {
		return err
	}
	defer nc.Close()
	p, err := broker.StartPresence(nc, broker.PresenceOptions{Edge: edge, Source: newSimSource(edge, n, part, of)})
	if err != nil {
		return err
	}
	defer p.Stop()
	go func() {
		for range time.Tick(50 * time.Millisecond) {
			if len(p.Members()) == of-1 && len(p.Watched()) == min(broker.DefaultPresenceWatchers, of-1) {
				fmt.Println("ready")
				return
			}
		}
	}()
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return nil
}

// simEdge is a simulated edge process. It runs until ctx ends (its
// standard input is then closed) or it is killed.
type simEdge struct {
	id    string
	cmd   *exec.Cmd
	ready chan struct{}
	done  chan struct{}
}

func startSimEdge(ctx context.Context, id, natsURL string, n, part, of int) (*simEdge, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), presenceEdgeEnv+"="+id, fmt.Sprintf("%s=%s %d %d %d", presenceArgsEnv, natsURL, n, part, of))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e := &simEdge{id: id, cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(e.ready)
			}
		}
		_ = cmd.Wait()
		close(e.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-e.done:
		}
		_ = in.Close()
	}()
	return e, nil
}

func (e *simEdge) kill() {
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.done
}

// natsServer starts a nats-server process with JetStream on a free port.
func (b *bench) natsServer(ctx context.Context) (url string, pid int, stop func(), err error) {
	bin := filepath.Join(b.tmp, "nats-server")
	if _, err := os.Stat(bin); err != nil {
		root, err := load.FindModuleRoot(".")
		if err != nil {
			return "", 0, nil, err
		}
		b.logf("building nats-server")
		if err := load.Build(ctx, root, "github.com/nats-io/nats-server/v2", bin); err != nil {
			return "", 0, nil, err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp(b.tmp, "js-")
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir)
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	url = fmt.Sprintf("nats://127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return url, cmd.Process.Pid, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", 0, nil, errors.New("nats-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// presence runs the scenario for every -subs count, then the write costs.
func (b *bench) presence(ctx context.Context, res *Result) error {
	k := 3
	if len(b.cfg.Edges) == 1 && b.cfg.Edges[0] > 1 {
		k = b.cfg.Edges[0]
	}
	for _, n := range b.cfg.Subs {
		r, err := b.presenceRun(ctx, n, k)
		if r != nil {
			res.Presence = append(res.Presence, r)
		}
		if err != nil {
			return err
		}
	}
	rate := int(b.cfg.Rate)
	if rate < 100 {
		rate = 10000
	}
	for _, kv := range []bool{false, true} {
		w, err := b.writeCost(ctx, rate, b.cfg.StepTime, kv)
		if err != nil {
			return err
		}
		res.WriteCosts = append(res.WriteCosts, w)
	}
	return nil
}

func (b *bench) presenceRun(ctx context.Context, n, k int) (*PresenceResult, error) {
	url, _, stopNATS, err := b.natsServer(ctx)
	if err != nil {
		return nil, err
	}
	defer stopNATS()
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	var edges []*simEdge
	for i := range k {
		e, err := startSimEdge(ectx, fmt.Sprintf("edge%d", i), url, n, i, k)
		if err != nil {
			return nil, err
		}
		edges = append(edges, e)
	}
	defer func() {
		cancel()
		for _, e := range edges {
			<-e.done
		}
	}()
	for _, e := range edges {
		select {
		case <-e.ready:
		case <-e.done:
			return nil, fmt.Errorf("simulated %s exited", e.id)
		case <-time.After(3 * time.Minute):
			return nil, fmt.Errorf("simulated %s not ready", e.id)
		}
	}
	r := &PresenceResult{Connections: n, Edges: k, ReadySeconds: time.Since(started).Seconds()}
	b.logf("%d connections on %d edges: ready in %.1f s", n, k, r.ReadySeconds)

	nc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	pc, err := broker.NewPresenceClient(nc, "")
	if err != nil {
		return nil, err
	}
	lookups := max(b.cfg.Messages, 200)
	timed := func(h *load.Histogram, f func() error) error {
		t0 := time.Now()
		if err := f(); err != nil {
			return err
		}
		h.Record(time.Since(t0), 0)
		return nil
	}
	hit, miss, list := load.NewHistogram(1), load.NewHistogram(1), load.NewHistogram(1)
	for i := range lookups + 50 {
		h := hit
		if i < 50 {
			h = load.NewHistogram(1) // warm-up
		}
		if err := timed(h, func() error {
			got, err := pc.Lookup(ctx, broker.LookupRequest{Name: presenceName, ClientID: clientID(rand.N(n))})
			if err == nil && (!got.Connected || len(got.Missing) > 0) {
				err = fmt.Errorf("lookup: %+v", got)
			}
			return err
		}); err != nil {
			return r, err
		}
	}
	for range lookups / 4 {
		if err := timed(miss, func() error {
			got, err := pc.Lookup(ctx, broker.LookupRequest{Name: presenceName, ClientID: "absent-" + strconv.Itoa(rand.N(n))})
			if err == nil && got.Connected {
				err = errors.New("an absent client was found")
			}
			return err
		}); err != nil {
			return r, err
		}
	}
	for range max(lookups/10, 50) {
		g := rand.N(presenceGroups)
		inGroup := 0 // connections i with i % presenceGroups == g
		if g < n {
			inGroup = (n - g + presenceGroups - 1) / presenceGroups
		}
		if err := timed(list, func() error {
			got, err := pc.List(ctx, broker.ListRequest{Name: presenceName, Group: "page_" + strconv.Itoa(g), Limit: 100})
			if err == nil && len(got.Connections) != min(100, inGroup) {
				err = fmt.Errorf("list page of %d connections, want %d", len(got.Connections), min(100, inGroup))
			}
			return err
		}); err != nil {
			return r, err
		}
	}
	r.LookupHit, r.LookupMiss, r.ListPage = summarize(hit.Snapshot()), summarize(miss.Snapshot()), summarize(list.Snapshot())
	var done atomic.Int64
	var wg sync.WaitGroup
	until := time.Now().Add(3 * time.Second)
	for range 16 {
		wg.Go(func() {
			for time.Now().Before(until) {
				if _, err := pc.Lookup(ctx, broker.LookupRequest{Name: presenceName, ClientID: clientID(rand.N(n))}); err == nil {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	r.LookupsPerSec = float64(done.Load()) / 3
	b.logf("lookup p50 %.2f ms p99 %.2f ms; miss p99 %.2f ms; list p99 %.2f ms; %.0f lookups/s", r.LookupHit.P50, r.LookupHit.P99, r.LookupMiss.P99, r.ListPage.P99, r.LookupsPerSec)

	if err := b.kvLookups(ctx, nc, n, lookups, r); err != nil {
		return r, err
	}
	r.Kill, err = b.killOne(ctx, nc, pc, edges[0], n, k)
	return r, err
}

// kvLookups loads one key per connection into a KV bucket and times gets.
func (b *bench) kvLookups(ctx context.Context, nc *nats.Conn, n, lookups int, r *PresenceResult) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "PRESENCE_BENCH", History: 1})
	if err != nil {
		return err
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), "PRESENCE_BENCH") }()
	t0 := time.Now()
	var pending []jetstream.PubAckFuture
	for i := range n {
		f, err := js.PublishAsync("$KV.PRESENCE_BENCH."+clientID(i), []byte(`{"edge":"edge0","conn":"edge0-`+strconv.Itoa(i)+`","transport":"sse_h1"}`))
		if err != nil {
			return err
		}
		if pending = append(pending, f); len(pending) >= 4000 {
			if err := acked(pending); err != nil {
				return err
			}
			pending = pending[:0]
		}
	}
	if err := acked(pending); err != nil {
		return err
	}
	r.KVLoadPerSec = float64(n) / time.Since(t0).Seconds()
	h := load.NewHistogram(1)
	for range lookups {
		t := time.Now()
		if _, err := kv.Get(ctx, clientID(rand.N(n))); err != nil {
			return err
		}
		h.Record(time.Since(t), 0)
	}
	r.KVGet = summarize(h.Snapshot())
	b.logf("KV: %.0f puts/s; get p50 %.2f ms p99 %.2f ms", r.KVLoadPerSec, r.KVGet.P50, r.KVGet.P99)
	return nil
}

// killOne kills a simulated edge and watches what follows.
func (b *bench) killOne(ctx context.Context, nc *nats.Conn, pc *broker.PresenceClient, victim *simEdge, n, k int) (*KillResult, error) {
	kr := &KillResult{Connections: (n + k - 1) / k}
	var mu sync.Mutex
	seen := map[string]int{}
	var first, last time.Time
	sub, err := nc.Subscribe(broker.MustSubjects("").LifecycleOfEdge(victim.id), func(m *nats.Msg) {
		ev, err := broker.DecodeLifecycle(m)
		if err != nil || ev.Reason != broker.ReasonEdgeLost {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		seen[ev.Conn]++
		if first.IsZero() {
			first = time.Now()
		}
		last = time.Now()
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	victim.kill()
	killed := time.Now()
	waiting, after := load.NewHistogram(1), load.NewHistogram(1)
	for time.Since(killed) < broker.DefaultPresenceLostAfter+2*time.Second {
		id := rand.N(n)
		if id%k != 0 {
			continue
		}
		t := time.Now()
		got, err := pc.Lookup(ctx, broker.LookupRequest{Name: presenceName, ClientID: clientID(id)})
		if err != nil {
			return kr, err
		}
		h := after
		if t.Sub(killed) < broker.DefaultPresenceLostAfter/2 {
			h = waiting
		}
		h.Record(time.Since(t), 0)
		if got.Connected {
			kr.StaleAnswers++
		}
	}
	kr.LookupWaiting, kr.LookupAfter = summarize(waiting.Snapshot()), summarize(after.Snapshot())
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got >= kr.Connections || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(4 * broker.DefaultPresenceHeartbeat) // a second watcher would have published by now
	mu.Lock()
	defer mu.Unlock()
	for _, c := range seen {
		kr.LostEvents += c
		kr.Duplicates += c - 1
	}
	if !first.IsZero() {
		kr.FirstMS, kr.LastMS = ms(first.Sub(killed)), ms(last.Sub(killed))
	}
	b.logf("kill -9 of %s (%d connections): %d edge_lost events (%d duplicates) %.0f–%.0f ms after; lookups while waiting p50 %.0f ms, after p50 %.2f ms; %d answers with its connections",
		victim.id, kr.Connections, kr.LostEvents, kr.Duplicates, kr.FirstMS, kr.LastMS, kr.LookupWaiting.P50, kr.LookupAfter.P50, kr.StaleAnswers)
	return kr, nil
}

// writeCost publishes connect+disconnect pairs at rate for d: with
// lifecycle events (a Presence per edge, two watching edges mirroring the
// publisher), or with one KV write per connect and one per disconnect.
func (b *bench) writeCost(ctx context.Context, rate int, d time.Duration, kv bool) (*WriteCost, error) {
	url, pid, stop, err := b.natsServer(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	w := &WriteCost{Design: "lifecycle events, 2 watchers"}
	conns := make([]*nats.Conn, 3)
	for i := range conns {
		if conns[i], err = nats.Connect(url); err != nil {
			return nil, err
		}
		defer conns[i].Close()
	}
	var connect, disconnect func(c *broker.ConnInfo) error
	if kv {
		w.Design = "KV: one write per connect, one per disconnect"
		js, err := jetstream.New(conns[0])
		if err != nil {
			return nil, err
		}
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "PRESENCE_COST", History: 1}); err != nil {
			return nil, err
		}
		var pending []jetstream.PubAckFuture
		flush := func() error {
			err := acked(pending)
			pending = pending[:0]
			return err
		}
		put := func(m *nats.Msg) error {
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				return err
			}
			if pending = append(pending, f); len(pending) >= 2000 {
				return flush()
			}
			return nil
		}
		connect = func(c *broker.ConnInfo) error {
			return put(&nats.Msg{Subject: "$KV.PRESENCE_COST." + c.Edge + "." + c.Conn,
				Data: []byte(`{"name":"` + c.Name + `","group":"` + c.Group + `","clientId":"` + c.ClientID + `","transport":"sse_h1"}`)})
		}
		disconnect = func(c *broker.ConnInfo) error {
			return put(&nats.Msg{Subject: "$KV.PRESENCE_COST." + c.Edge + "." + c.Conn, Header: nats.Header{"KV-Operation": {"DEL"}}})
		}
		defer func() { _ = flush() }()
	} else {
		var ps []*broker.Presence
		for i, nc := range conns {
			p, err := broker.StartPresence(nc, broker.PresenceOptions{Edge: "edge" + strconv.Itoa(i), Source: &simSource{}})
			if err != nil {
				return nil, err
			}
			defer p.Stop()
			ps = append(ps, p)
		}
		for _, p := range ps[1:] {
			for deadline := time.Now().Add(30 * time.Second); len(p.Watched()) < 2; {
				if time.Now().After(deadline) {
					return nil, errors.New("the watchers did not start watching")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		connect = func(c *broker.ConnInfo) error { return ps[0].Connected(c) }
		disconnect = func(c *broker.ConnInfo) error { return ps[0].Disconnected(c, "gone", time.Now()) }
	}
	s0, _ := load.ReadUsage(pid)
	c0, _ := load.ReadUsage(0)
	t0 := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Since(t0) < d {
		<-tick.C
		due := int(time.Since(t0).Seconds()*float64(rate)) - w.Pairs
		for range due {
			c := broker.ConnInfo{Edge: "edge0", Conn: "edge0-" + strconv.Itoa(w.Pairs), Name: presenceName, Group: "page_1",
				ClientID: clientID(w.Pairs), Transport: "sse_h1", Since: time.Now()}
			if err := connect(&c); err != nil {
				return nil, err
			}
			if err := disconnect(&c); err != nil {
				return nil, err
			}
			w.Pairs++
		}
	}
	_ = conns[0].Flush()
	time.Sleep(200 * time.Millisecond) // the watchers' last events
	w.Seconds = time.Since(t0).Seconds()
	s1, _ := load.ReadUsage(pid)
	c1, _ := load.ReadUsage(0)
	w.NATSMicros = float64((s1.CPU - s0.CPU).Microseconds()) / float64(w.Pairs)
	w.ClientsMicros = float64((c1.CPU - c0.CPU).Microseconds()) / float64(w.Pairs)
	b.logf("%s: %d pairs in %.1f s: NATS %.1f µs CPU per pair, edges %.1f µs", w.Design, w.Pairs, w.Seconds, w.NATSMicros, w.ClientsMicros)
	return w, nil
}

// acked waits for the acknowledgement of every publish of pending.
func acked(pending []jetstream.PubAckFuture) error {
	for _, f := range pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		}
	}
	return nil
}
