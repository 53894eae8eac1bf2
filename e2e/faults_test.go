package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/e2e/checker"
	"github.com/herald-push/herald/internal/natstest"
)

// Rows of the fault matrix (RELIABILITY.md §10.3) beyond the first
// scenarios: a NATS majority down, a rolling restart of every edge, the
// stream leader paused, the history stream purged, deleted or recreated.
// The connect flood (F10) is in flood_test.go.

// streamEras numbers the incarnations of the history stream in a run that
// deletes it: publishers note the era around each acknowledged publish,
// and the checker judges positions by the epoch of that era.
type streamEras struct {
	v     atomic.Int64 // 2×era while one stream exists; odd while it is being replaced
	mu    sync.Mutex
	epoch []string // guarded by mu; the epoch of each era ("" until known)
}

func newStreamEras(first string) *streamEras { return &streamEras{epoch: []string{first}} }

// now is the value to pass to since after an acknowledgement.
func (e *streamEras) now() int64 {
	if e == nil {
		return 0
	}
	return e.v.Load()
}

// since returns the era of an acknowledgement received after now returned
// before; false when the stream was being replaced meanwhile.
func (e *streamEras) since(before int64) (int, bool) {
	if e == nil {
		return 0, true
	}
	if after := e.v.Load(); after != before || before%2 == 1 {
		return 0, false
	}
	return int(before / 2), true
}

// replacing starts the change: acknowledgements from now on, until
// replaced, belong to no known era.
func (e *streamEras) replacing() { e.v.Add(1) }

// replaced ends the change: the old stream no longer exists, so every
// acknowledgement from now on comes from the next one, whose epoch is
// given later with named.
func (e *streamEras) replaced() {
	e.mu.Lock()
	e.epoch = append(e.epoch, "")
	e.mu.Unlock()
	e.v.Add(1)
}

// named sets the epoch of the newest era.
func (e *streamEras) named(epoch string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.epoch[len(e.epoch)-1] = epoch
}

func (e *streamEras) epochOf(era int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if era < 0 || era >= len(e.epoch) {
		return ""
	}
	return e.epoch[era]
}

// latest is the newest era's epoch ("" for a run without eras).
func (e *streamEras) latest() string {
	if e == nil {
		return ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.epoch[len(e.epoch)-1]
}

// names lists the epochs in order (nil for a run without eras).
func (e *streamEras) names() []string {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.epoch...)
}

// streamEpoch reads the history stream's epoch as the edges compute it
// (its creation time in milliseconds, base 36).
func streamEpoch(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	var epoch string
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, historyStream)
		if err != nil {
			return err
		}
		epoch = strconv.FormatInt(s.CachedInfo().Created.UnixMilli(), 36)
		return nil
	})
	return epoch
}

// httpPublisher publishes unique values through the edges' POST /publish
// (each request to the next edge), starting one request every `every` (up
// to maxInFlight at once), and records each outcome as the README defines
// it: 202 acknowledged (its position is found later in the stream), 503
// or a refused connection not stored, 504 or no answer unknown.
type httpPublisher struct {
	id     string
	target string
	edges  []*edgeProc
	token  string
	every  time.Duration
	client *http.Client

	mu       sync.Mutex
	pubs     []checker.Publish // guarded by mu
	answers  []httpAnswer      // guarded by mu; one per request, as pubs
	bad      []string          // guarded by mu; answers the README does not allow
	inflight sync.WaitGroup
}

// httpAnswer is how one /publish request went.
type httpAnswer struct {
	start  time.Time
	took   time.Duration
	status int // 0: no answer
}

const httpPublishWithin = 30 * time.Second // bound on one request

func newHTTPPublisher(id, target string, edges []*edgeProc, token string, every time.Duration) *httpPublisher {
	return &httpPublisher{id: id, target: target, edges: edges, token: token, every: every,
		client: &http.Client{Timeout: httpPublishWithin, Transport: &http.Transport{DisableKeepAlives: true}}}
}

// startHTTPPublisher starts an httpPublisher; stop (idempotent, also run
// when the test ends) stops it and waits for its requests in flight.
func startHTTPPublisher(t *testing.T, id string, edges []*edgeProc, token string, every time.Duration) (p *httpPublisher, stop func()) {
	p = newHTTPPublisher(id, feed, edges, token, every)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); p.run(quit) }()
	var once sync.Once
	stop = func() {
		once.Do(func() { close(quit) })
		<-done
	}
	t.Cleanup(stop)
	return p, stop
}

// run publishes until stop is closed, then waits for the requests in
// flight.
func (p *httpPublisher) run(stop <-chan struct{}) {
	defer p.client.CloseIdleConnections()
	defer p.inflight.Wait()
	const maxInFlight = 32
	sem := make(chan struct{}, maxInFlight)
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for n := int64(0); n < maxPublishes; n++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // maxInFlight requests wait for an answer: skip this tick
		}
		p.inflight.Add(1)
		go func() {
			defer func() { <-sem; p.inflight.Done() }()
			p.publishOne(n)
		}()
	}
}

func (p *httpPublisher) publishOne(n int64) {
	body, _ := json.Marshal(map[string]any{"name": p.target, "data": json.RawMessage(checker.Payload(p.id, n))})
	req, _ := http.NewRequest(http.MethodPost, p.edges[n%int64(len(p.edges))].url+"/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	rec := checker.Publish{Publisher: p.id, N: n, Target: p.target, Attempts: 1, Outcome: checker.Unknown}
	start := time.Now()
	resp, err := p.client.Do(req)
	status := 0
	var answer []byte
	if err == nil {
		status = resp.StatusCode
		answer, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
	}
	took := time.Since(start)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch status {
	case http.StatusAccepted:
		rec.Outcome = checker.OK
	case http.StatusServiceUnavailable:
		rec.Outcome = checker.Fail
	case 0:
		if errors.Is(err, syscall.ECONNREFUSED) {
			rec.Outcome = checker.Fail // never sent: the edge is not listening
		}
	case http.StatusGatewayTimeout:
		// No answer, or no acknowledgement: it may have been stored.
	default:
		rec.Outcome = checker.Fail
		p.bad = append(p.bad, fmt.Sprintf("%s/%d: %d %s", p.id, n, status, bytes.TrimSpace(answer)))
	}
	p.pubs = append(p.pubs, rec)
	p.answers = append(p.answers, httpAnswer{start: start, took: took, status: status})
}

// unexpected lists the answers the README does not allow.
func (p *httpPublisher) unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.bad...)
}

// history returns a copy of the record.
func (p *httpPublisher) history() []checker.Publish {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]checker.Publish(nil), p.pubs...)
}

// outcomes summarises the answers to the requests started in [from, to)
// (zero times: unbounded): per status, how many and the slowest.
func (p *httpPublisher) outcomes(from, to time.Time) (count map[int]int, slowest map[int]time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	count, slowest = map[int]int{}, map[int]time.Duration{}
	for _, a := range p.answers {
		if a.start.Before(from) || (!to.IsZero() && !a.start.Before(to)) {
			continue
		}
		count[a.status]++
		slowest[a.status] = max(slowest[a.status], a.took)
	}
	return count, slowest
}

// stored reads every message of the history stream and returns where each
// value is stored (its first copy) and how many copies each has.
func stored(t *testing.T, js jetstream.JetStream) (at map[checker.Value]uint64, copies map[checker.Value]int) {
	t.Helper()
	at, copies = map[checker.Value]uint64{}, map[checker.Value]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, historyStream)
	if err != nil {
		t.Fatalf("history stream: %v", err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("read the history stream: %v", err)
	}
	// Each fetch asks for no more than what is left, so that none waits
	// for messages that will not come.
	for left := s.CachedInfo().State.Msgs; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatalf("read the history stream: %v", err)
		}
		got := uint64(0)
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				t.Fatalf("stored message metadata: %v", err)
			}
			var v checker.Value
			if json.Unmarshal(m.Data(), &v) == nil && v.P != "" {
				if copies[v] == 0 {
					at[v] = meta.Sequence.Stream
				}
				copies[v]++
			}
		}
		if got == 0 {
			t.Fatalf("read the history stream: %d messages not read: %v", left, batch.Error())
		}
		left -= got
	}
	return at, copies
}

// checkStored compares what the stream holds with what the publishers
// were told: an acknowledged value is stored once at its position, a
// value whose publish definitely failed is not stored at all (nothing is
// accepted silently). It fills the positions of acknowledged /publish
// values, which the HTTP answer does not carry.
func checkStored(t *testing.T, js jetstream.JetStream, pubs []checker.Publish) {
	t.Helper()
	at, copies := stored(t, js)
	var problems []string
	for i := range pubs {
		p := &pubs[i]
		v := checker.Value{P: p.Publisher, N: p.N}
		seq, ok := at[v]
		switch {
		case p.Outcome == checker.Fail && ok:
			problems = append(problems, fmt.Sprintf("%s: its publish failed, yet it is stored at %d", v, seq))
		case p.Outcome == checker.OK && !ok:
			problems = append(problems, fmt.Sprintf("%s: acknowledged, not stored", v))
		case p.Outcome == checker.OK && p.Seq == 0:
			p.Seq = seq
		case p.Outcome == checker.OK && p.Seq != seq:
			problems = append(problems, fmt.Sprintf("%s: acknowledged at %d, stored at %d", v, p.Seq, seq))
		}
		if copies[v] > 1 {
			problems = append(problems, fmt.Sprintf("%s: stored %d times", v, copies[v]))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		t.Errorf("%d stored values disagree with what their publishers were told:\n%s", len(problems), strings.Join(problems[:min(len(problems), 20)], "\n"))
	}
}

// judgeStored adds the /publish record of hp to the run's history (some
// must have been accepted, and every answer be one the README allows),
// and makes finish compare the stream, read back, with what every
// publisher was told.
func (r *run) judgeStored(hp *httpPublisher, js jetstream.JetStream) {
	r.t.Helper()
	count, slowest := hp.outcomes(time.Time{}, time.Time{})
	r.t.Logf("/publish over the whole run: %v by status (0: no answer); slowest %v", count, slowest)
	if count[http.StatusAccepted] == 0 {
		r.t.Errorf("no /publish was accepted: %v", count)
	}
	if bad := hp.unexpected(); len(bad) > 0 {
		r.t.Errorf("/publish answers the README does not allow: %v", bad)
	}
	r.extra = append(r.extra, hp.history)
	r.check = func(h *checker.History) { checkStored(r.t, js, h.Publishes) }
}

// F2: kill -9 a majority of the NATS nodes (the stream leader and one
// more) for 60 s (-short: 15 s). Nothing can be stored: once the edges
// see that the history stream does not answer (not ready, within
// seconds) every POST /publish is answered 503 at once, never 202, and
// nothing is stored that its publisher was told failed; the edges stay
// not ready for the whole outage; clients stay connected, two come back
// during the outage, and once the nodes are back every client receives
// every acknowledged event, with no gap.
func TestMajorityDown(t *testing.T) {
	c, r := startReceiving(t, 2)
	js, err := jetstream.New(c.connect("e2e-admin"))
	if err != nil {
		t.Fatal(err)
	}
	outage := 60 * time.Second
	if testing.Short() {
		outage = 15 * time.Second
	}
	hp, stopHTTP := startHTTPPublisher(t, "h0", c.edges[:1], c.token, 100*time.Millisecond)
	// Two clients go away before the outage and come back during it: their
	// resume waits for the history.
	away := []*subscriber{r.subs[0], r.subs[1]}
	for _, s := range away {
		s.goOffline()
	}
	leader := c.streamLeader(js, historyStream)
	down := []int{leader, (leader + 1) % 3}
	r.mark("kill -9 %s (stream leader) and %s for %v", c.nodes[down[0]].name, c.nodes[down[1]].name, outage)
	killed := time.Now()
	for _, i := range down {
		c.killNode(i)
	}
	for _, e := range c.edges {
		natstest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
			if ready(e) == nil {
				return fmt.Errorf("%s still ready with a majority of NATS down", e.name)
			}
			return nil
		})
	}
	notReady := time.Now()
	r.mark("both edges report not ready after %v", notReady.Sub(killed).Round(time.Millisecond))
	// From now until the restart, every probe must say not ready.
	stopWatch := make(chan struct{})
	watched := make(chan []string, 1)
	go func() {
		var wrong []string
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWatch:
				watched <- wrong
				return
			case <-tick.C:
			}
			for _, e := range c.edges {
				if ready(e) == nil {
					wrong = append(wrong, fmt.Sprintf("%s ready at %v", e.name, time.Since(killed).Round(time.Millisecond)))
				}
			}
		}
	}()
	hold(outage / 4)
	for _, s := range away {
		s.resume()
	}
	r.mark("two clients reconnect during the outage")
	hold(outage - time.Since(killed))
	close(stopWatch)
	if wrong := <-watched; len(wrong) > 0 {
		t.Errorf("edges reported ready while a majority of NATS was down: %v", wrong)
	}
	restart := time.Now()
	count, slowest := hp.outcomes(notReady, restart)
	r.mark("restart %s and %s; /publish answers since not ready: %v by status (slowest %v)", c.nodes[down[0]].name, c.nodes[down[1]].name, count, slowest)
	if count[http.StatusServiceUnavailable] == 0 || len(count) != 1 || slowest[http.StatusServiceUnavailable] > 2*time.Second {
		t.Errorf("/publish on an edge that is not ready: %v by status, slowest %v; want only 503, each within 2 s", count, slowest)
	}
	c.restartNodes(down...)
	for _, e := range c.edges {
		natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error { return ready(e) })
	}
	r.mark("edges ready again")
	r.receiving(r.ph.after, 60*time.Second)
	stopHTTP()
	r.receiving(r.ph.after/2, 30*time.Second)

	r.judgeStored(hp, js)
	rep := r.finish("nats-majority-down")
	assertClean(t, rep)
	assertMoved(t, rep, away, "it went away during the outage")
}

// F7: SIGSTOP the node leading the history stream for 10 s (an edge and
// the publishers connected to it), then SIGCONT. Latency rises; nothing is
// lost, duplicated or reordered, and no client gets a gap.
func TestStreamLeaderPaused(t *testing.T) {
	c, r := startReceiving(t, 2, func(r *run) {
		// Publishers notice a paused server within seconds and move on, as
		// a producer configured for it does (the default ping is 2 min).
		r.pubOpts = []nats.Option{nats.PingInterval(500 * time.Millisecond), nats.MaxPingsOutstanding(3)}
	})
	js, err := jetstream.New(c.connect("e2e-admin"))
	if err != nil {
		t.Fatal(err)
	}
	leader := c.streamLeader(js, historyStream)
	c.pinEdge(c.edges[0], leader)
	r.receiving(r.ph.warm, 30*time.Second)
	pause := 10 * time.Second
	n := c.nodes[leader]
	r.mark("SIGSTOP %s (stream leader, edge0's node) for %v", n.name, pause)
	if err := syscall.Kill(-n.proc.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = syscall.Kill(-n.proc.pid(), syscall.SIGCONT)
		}
	}()
	hold(pause)
	if err := syscall.Kill(-n.proc.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	r.mark("SIGCONT %s", n.name)
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, c.ready)
	r.receiving(r.ph.after, 60*time.Second)
	newLeader := c.streamLeader(js, historyStream)
	r.mark("receiving again; stream leader now %s", c.nodes[newLeader].name)
	rep := r.finish("stream-leader-paused")
	assertClean(t, rep)
}

// F5: a rolling restart of every edge under load: each in turn gets
// SIGTERM (readiness flips, its clients get pode.close or close 1012,
// spread over -drain-window), exits cleanly, and is started again on the
// same address before the next one stops, while producers publish through
// NATS and through every edge's POST /publish. Clients move between edges
// several times; nothing is lost, duplicated or reordered, no gap; every
// /publish answered 202 is stored once and delivered.
func TestRollingRestart(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	const window = 2 * time.Second
	for range 3 {
		c.startEdge("-drain-window", window.String(), "-shutdown-grace", "5s")
	}
	js, err := jetstream.New(c.connect("e2e-admin"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRun(t, c)
	r.workload(0, feed, feed, other)
	hp, stopHTTP := startHTTPPublisher(t, "h0", c.edges, c.token, 20*time.Millisecond)
	r.spread(6, "sse", "ws") // 12 clients, 4 per edge
	r.begin()
	r.receiving(r.ph.warm, 20*time.Second)

	for _, e := range c.edges {
		moved := r.on(e)
		r.mark("SIGTERM %s (%d clients)", e.name, len(moved))
		// Readiness must flip while the edge drains, before it exits.
		flipped := make(chan bool, 1)
		go func() {
			deadline := time.Now().Add(window + 5*time.Second)
			for time.Now().Before(deadline) && !e.proc.exited() {
				if resp, err := httpGet(e.url + "/readyz"); err == nil && resp.code == http.StatusServiceUnavailable {
					flipped <- true
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			flipped <- false
		}()
		stopped := time.Now()
		if err := e.proc.stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
		took := time.Since(stopped)
		if e.proc.err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v\n%s", e.name, e.proc.err, e.proc.tail(20))
		}
		if !<-flipped {
			t.Errorf("%s: /readyz never answered 503 while it drained", e.name)
		}
		r.mark("%s exited after %v; its clients' closes spread over %v", e.name, took.Round(time.Millisecond), closeSpread(moved, stopped))
		c.restartEdge(e)
		r.mark("%s restarted and ready", e.name)
		r.receiving(r.ph.after, 30*time.Second, moved...)
	}
	stopHTTP()
	r.receiving(r.ph.after, 30*time.Second)
	r.judgeStored(hp, js)
	rep := r.finish("rolling-restart")
	assertClean(t, rep)
	assertMoved(t, rep, r.subs, "every edge was restarted")
	refused := 0
	for _, s := range r.subs {
		refused += s.refusals()
	}
	t.Logf("reconnects that met a draining edge (refused, then elsewhere): %d", refused)
}

// closeSpread is the time between the first and the last end, after
// since, of the subscribers' connections.
func closeSpread(subs []*subscriber, since time.Time) time.Duration {
	var first, last time.Time
	for _, s := range subs {
		for _, c := range s.snapshot().Connections {
			if c.Closed.Before(since) {
				continue
			}
			if first.IsZero() || c.Closed.Before(first) {
				first = c.Closed
			}
			if c.Closed.After(last) {
				last = c.Closed
			}
		}
	}
	return last.Sub(first).Round(time.Millisecond)
}

// F13: the history stream purged, deleted, or deleted and created again
// while clients are live.
//
//   - purged: positions go on (a purge keeps the sequence), so connected
//     clients lose nothing and get no gap; a client away during the purge
//     comes back to herald.gap (expired) for what was purged.
//   - deleted: the edges create the stream again themselves and are ready
//     again without a restart; every client gets exactly one herald.gap
//     (epoch) into the new stream, whose positions start again at 1; no
//     position of the old stream is accepted in the new one (the checker
//     orders positions by epoch: mismatched = reordered = silent-epoch =
//     0), and what is lost is only what the gap explains.
//   - recreated (HERALD_E2E_OPEN=1, an open defect): an operator deletes
//     and recreates the stream at once, and the new stream passes the old
//     positions before the edges' next state read (1 s). Until that read
//     the edges label the new stream's events with the old epoch (stale
//     positions: mismatched), and the events they delivered that way after
//     the position the read saw reach the clients twice.
func TestStreamReplaced(t *testing.T) {
	skipUnlessEnabled(t)
	for _, mode := range []string{"purged", "deleted", "recreated"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "recreated" && os.Getenv("HERALD_E2E_OPEN") != "1" {
				t.Skip("open defect (HERALD_E2E_OPEN=1 runs it): a stream recreated and overtaken within one state read is delivered under the old epoch")
			}
			streamReplaced(t, mode)
		})
	}
}

func streamReplaced(t *testing.T, mode string) {
	c := startCluster(t, clusterOptions{})
	for range 2 {
		c.startEdge()
	}
	admin := c.connect("e2e-admin")
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	r := newRun(t, c)
	if mode != "purged" {
		r.eras = newStreamEras(streamEpoch(t, js))
	}
	r.workload(0, feed, feed, other)
	r.spread(2, "sse", "ws")
	away := r.subscribe("sse", 0, 0)
	r.begin()
	r.receiving(r.ph.warm, 20*time.Second)
	away.goOffline()
	r.receiving(r.ph.warm/2, 20*time.Second, r.subs[:len(r.subs)-1]...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, historyStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	before := s.CachedInfo().State
	switch mode {
	case "purged":
		if err := s.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		r.mark("purged the stream at %d", before.LastSeq)
	case "deleted":
		r.eras.replacing()
		if err := js.DeleteStream(ctx, historyStream); err != nil {
			t.Fatal(err)
		}
		r.eras.replaced()
		r.mark("deleted the stream at %d; the edges create it again", before.LastSeq)
		r.eras.named(streamEpoch(t, js))
	case "recreated":
		// Whether an edge reads the new stream's state before the new
		// positions pass the old ones is a matter of timing: three rounds
		// make the window all but certain to open. The copies are smaller
		// than the edges' default (1 GiB), so that the nodes' 1 GB stores
		// have room for one while a deleted one is still reserved.
		cfg.MaxBytes = 64 << 20
		for range recreations {
			r.eras.replacing()
			if err := js.DeleteStream(ctx, historyStream); err != nil {
				t.Fatal(err)
			}
			r.eras.replaced()
			// The deleted stream's storage may still be reserved for a
			// moment, and an edge may create the stream first.
			natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
				_, err := js.CreateStream(ctx, cfg)
				if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
					return nil
				}
				return err
			})
			r.eras.named(streamEpoch(t, js))
			// Pass the old positions at once, on a name nobody listens on.
			n := overtake(t, js, before.LastSeq+50)
			r.mark("deleted and recreated the stream at %d; %d events stored at once", before.LastSeq, n)
			r.receiving(r.ph.after/2, 30*time.Second, r.subs[:len(r.subs)-1]...)
			if before, err = streamState(ctx, js); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, e := range c.edges {
		natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error { return ready(e) })
	}
	r.mark("edges ready")
	r.receiving(r.ph.after, 30*time.Second, r.subs[:len(r.subs)-1]...)
	away.resume()
	r.receiving(r.ph.after, 30*time.Second)

	rep := r.finish("stream-" + mode)
	switch mode {
	case "purged":
		assertClean(t, rep, away)
		if got := reportOf(t, rep, away.id); got.GapReasons["expired"] != 1 {
			t.Errorf("%s was away during the purge: gaps %v, want one expired", away.id, got.GapReasons)
		}
	default:
		assertClean(t, rep, r.subs...)
		epochs := len(r.eras.names()) - 1
		for _, s := range r.subs {
			got := reportOf(t, rep, s.id)
			// One gap per new stream its edge saw (a stream replaced again
			// within one state read is never seen); one for the client
			// away, which comes back once.
			most := epochs
			if s == away {
				most = 1
			}
			if n := got.GapReasons["epoch"]; n < 1 || n > most || len(got.GapReasons) != 1 {
				t.Errorf("%s: gaps %v, want 1 to %d epoch", s.id, got.GapReasons, most)
			}
			if got.LastEpoch != epochs {
				t.Errorf("%s ended in epoch %d, want the newest stream's (%d)", s.id, got.LastEpoch, epochs)
			}
		}
	}
}

// recreations is how many times the open reproduction replaces the stream.
const recreations = 3

// streamState reads the history stream's state.
func streamState(ctx context.Context, js jetstream.JetStream) (jetstream.StreamState, error) {
	s, err := js.Stream(ctx, historyStream)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return s.CachedInfo().State, nil
}

// overtake stores n events in the history stream as fast as it can, on a
// name nobody listens on, and returns how many were acknowledged.
func overtake(t *testing.T, js jetstream.JetStream, n uint64) int {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		f, err := js.PublishAsync(subjects.EventName(other), checker.Payload("overtake", int64(i)))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	acked := 0
	for _, f := range futures {
		select {
		case <-f.Ok():
			acked++
		case err := <-f.Err():
			t.Fatalf("overtake: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("overtake: no acknowledgement")
		}
	}
	return acked
}
