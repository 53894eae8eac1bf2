package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/e2e/checker"
	"github.com/herald-push/herald/internal/natstest"
)

// feed is the connection name every subscriber listens on. It contains a
// "/" so that WebSocket clients (whose name is the URL path after /ws)
// and SSE clients (/sse/%2Ffeed) share it.
const (
	feed  = "/feed"
	other = "other" // a name nobody listens on: its events interleave positions
)

// run is one scenario's workload: publishers and subscribers on a cluster.
type run struct {
	t     *testing.T
	c     *cluster
	ph    phases
	ctx   context.Context
	stopC context.CancelFunc

	start time.Time
	eras  *streamEras // nil unless the run recreates the history stream
	nc    *nats.Conn  // the publishers' connection, closed once they stopped
	// pubOpts are extra options of that connection.
	pubOpts []nats.Option
	pubs    []*publisher
	subs    []*subscriber
	// extra adds publishes recorded by other publishers (HTTP) to the
	// history; check, when set, sees the history before the checker does.
	extra    []func() []checker.Publish
	check    func(*checker.History)
	stopPubs chan struct{}
	pubWG    sync.WaitGroup
	subWG    sync.WaitGroup
	stopOnce sync.Once
}

func newRun(t *testing.T, c *cluster) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{t: t, c: c, ph: modePhases(), ctx: ctx, stopC: cancel, stopPubs: make(chan struct{}), start: time.Now()}
	t.Cleanup(r.stop)
	return r
}

// stop ends every publisher and subscriber and waits for them.
func (r *run) stop() {
	r.stopPublishers()
	r.stopC()
	r.subWG.Wait()
}

// mark logs a step of the scenario with the time since the run began.
func (r *run) mark(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("[%6.2fs] %s", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

// stopPublishers stops every publisher and waits for them.
func (r *run) stopPublishers() {
	r.stopOnce.Do(func() { close(r.stopPubs) })
	r.pubWG.Wait()
	if r.nc != nil {
		r.nc.Close()
	}
}

// publishers starts one publisher per target, each publishing every
// r.ph.rate (slower for "other"), with padBytes of extra payload.
func (r *run) publishers(padBytes int, targets ...string) {
	r.t.Helper()
	nc, err := r.c.dial("e2e-publishers", r.pubOpts...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.nc = nc
	for i, target := range targets {
		every := r.ph.rate
		if target == other {
			every *= 4
		}
		p, err := newPublisher(nc, fmt.Sprintf("p%d", i), target, every, padBytes)
		if err != nil {
			r.t.Fatal(err)
		}
		p.eras = r.eras
		r.pubs = append(r.pubs, p)
		r.pubWG.Add(1)
		go func() {
			defer r.pubWG.Done()
			p.run(r.ctx, r.stopPubs)
		}()
	}
}

// workload starts the scenario's publishers (padBytes of extra payload,
// one publisher per target) and waits until 100 events are stored, so that
// the subscribers started next join in the middle of the stream.
func (r *run) workload(padBytes int, targets ...string) {
	r.t.Helper()
	r.publishers(padBytes, targets...)
	r.published(feed, 100)
}

// begin waits until every subscriber has its stream.
func (r *run) begin() {
	r.t.Helper()
	r.opened()
}

// published waits until n publishes to name were acknowledged, so that
// subscribers started next begin in the middle of the stream.
func (r *run) published(name string, n uint64) {
	r.t.Helper()
	natstest.CheckFor(r.t, 20*time.Second, 10*time.Millisecond, func() error {
		if h := r.highWater(name); h < n {
			return fmt.Errorf("stream at %d, want %d", h, n)
		}
		return nil
	})
}

// subscribe starts a subscriber of kind ("sse" or "ws") on feed, first
// connecting to edge first.
func (r *run) subscribe(kind string, first int, rcvBuf int) *subscriber {
	s := newSubscriber(fmt.Sprintf("%s%d", kind, len(r.subs)), kind, feed, r.c.edges, first, rcvBuf)
	r.subs = append(r.subs, s)
	r.subWG.Add(1)
	go func() {
		defer r.subWG.Done()
		s.run(r.ctx)
	}()
	return s
}

// subscribeWithID is subscribe with a Last-Event-ID already set, as for a
// browser that comes back with an id from an earlier session.
func (r *run) subscribeWithID(kind string, first int, lastID string) *subscriber {
	s := newSubscriber(fmt.Sprintf("%s%d", kind, len(r.subs)), kind, feed, r.c.edges, first, 0)
	s.lastID = lastID
	r.subs = append(r.subs, s)
	r.subWG.Add(1)
	go func() {
		defer r.subWG.Done()
		s.run(r.ctx)
	}()
	return s
}

// spread starts n subscribers of each kind, round-robin over the edges.
func (r *run) spread(n int, kinds ...string) {
	for i := range n {
		for _, k := range kinds {
			r.subscribe(k, i, 0)
		}
	}
}

// opened waits until every subscriber has a stream open.
func (r *run) opened() {
	r.t.Helper()
	natstest.CheckFor(r.t, 15*time.Second, 20*time.Millisecond, func() error {
		for _, s := range r.subs {
			if _, _, conns := s.progress(); conns == 0 {
				return fmt.Errorf("%s has no stream yet", s.id)
			}
		}
		return nil
	})
}

// receiving waits until each of subs (every subscriber when none are
// given) has received n more message events than when called.
func (r *run) receiving(n int, timeout time.Duration, subs ...*subscriber) {
	r.t.Helper()
	if len(subs) == 0 {
		subs = r.subs
	}
	base := make([]int, len(subs))
	for i, s := range subs {
		base[i], _, _ = s.progress()
	}
	natstest.CheckFor(r.t, timeout, 20*time.Millisecond, func() error {
		var slow []string
		for i, s := range subs {
			if m, _, _ := s.progress(); m < base[i]+n {
				slow = append(slow, fmt.Sprintf("%s %d/%d", s.id, m-base[i], n))
			}
		}
		if len(slow) > 0 {
			return fmt.Errorf("not receiving: %s", strings.Join(slow, ", "))
		}
		return nil
	})
}

// highWater is the highest acknowledged position of a publish to name.
func (r *run) highWater(name string) uint64 {
	var high uint64
	for _, p := range r.pubs {
		if p.target != name {
			continue
		}
		_, h := p.acked()
		high = max(high, h)
	}
	return high
}

// finish stops the publishers, waits (bounded) until every subscriber has
// reached the highest acknowledged position of its name, stops the
// subscribers, runs the checker, logs the table, writes the JSON report
// and returns it. It fails the test when a subscriber does not catch up,
// but only after the report is written.
func (r *run) finish(scenario string) checker.Report {
	r.t.Helper()
	r.stopPublishers()
	high := r.highWater(feed)
	r.mark("publishers stopped at position %d; draining", high)
	epoch := r.eras.latest() // "" unless the run recreated the stream
	caughtUp := natstest.Poll(r.ph.drain, 50*time.Millisecond, func() error {
		var behind []string
		for _, s := range r.subs {
			if ep, pos := s.at(); pos < high || (epoch != "" && ep != epoch) {
				behind = append(behind, fmt.Sprintf("%s at %s:%d", s.id, ep, pos))
			}
		}
		if len(behind) > 0 {
			return fmt.Errorf("behind position %d: %s", high, strings.Join(behind, ", "))
		}
		return nil
	})
	r.stopC()
	r.subWG.Wait()
	r.mark("subscribers stopped")

	var h checker.History
	h.Epochs = r.eras.names()
	for _, p := range r.pubs {
		h.Publishes = append(h.Publishes, p.history()...)
	}
	for _, f := range r.extra {
		h.Publishes = append(h.Publishes, f()...)
	}
	for _, s := range r.subs {
		h.Subscribers = append(h.Subscribers, s.snapshot())
	}
	if r.check != nil {
		r.check(&h)
	}
	rep := checker.Check(scenario, h)
	if b, err := json.Marshal(h); err == nil {
		_ = os.WriteFile(filepath.Join(r.c.dir, "history-"+unsafeName.ReplaceAllString(scenario, "_")+".json"), b, 0o644)
	}
	r.t.Logf("checker report:\n%s", rep.Table())
	path := filepath.Join(r.c.dir, "checker-"+unsafeName.ReplaceAllString(scenario, "_")+".json")
	if err := rep.WriteJSON(path); err != nil {
		r.t.Errorf("write report: %v", err)
	} else {
		r.t.Logf("checker report JSON: %s", path)
	}
	summary.add(rep)
	if caughtUp != nil {
		r.t.Errorf("subscribers did not catch up within %v: %v", r.ph.drain, caughtUp)
	}
	for _, e := range r.c.edges {
		if line, bad := e.dataRaces(); bad {
			r.t.Errorf("%s: %s (log %s)", e.name, line, e.proc.log)
		}
	}
	return rep
}

// assertClean fails the test for every subscriber with a nonzero lost,
// duplicated, reordered, unexpected or mismatched count, that expected
// nothing, or that got a herald.gap unless it is one of gapsFor: within the
// retention no position is ever given up.
func assertClean(t *testing.T, rep checker.Report, gapsFor ...*subscriber) {
	t.Helper()
	mayGap := map[string]bool{}
	for _, s := range gapsFor {
		mayGap[s.id] = true
	}
	for _, s := range rep.Subscribers {
		if err := s.Clean(); err != nil {
			t.Error(err)
		}
		if s.Expected == 0 {
			t.Errorf("subscriber %s expected nothing: the workload did not reach it", s.Subscriber)
		}
		if s.Gaps > 0 && !mayGap[s.Subscriber] {
			t.Errorf("subscriber %s got herald.gap %v within the retention", s.Subscriber, s.GapReasons)
		}
	}
}

// assertMoved fails the test for every one of subs that never
// reconnected; why is what should have made it reconnect.
func assertMoved(t *testing.T, rep checker.Report, subs []*subscriber, why string) {
	t.Helper()
	for _, s := range subs {
		if got := reportOf(t, rep, s.id); got.Reconnects < 1 {
			t.Errorf("%s did not reconnect: %s", s.id, why)
		}
	}
}

// summary collects every scenario's report for the end of the run.
var summary reportLog

type reportLog struct {
	mu      sync.Mutex
	reports []checker.Report // guarded by mu
}

func (l *reportLog) add(r checker.Report) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports = append(l.reports, r)
}

// text renders every report's table.
func (l *reportLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.reports {
		b.WriteString(r.Table())
		b.WriteString("\n")
	}
	return b.String()
}
