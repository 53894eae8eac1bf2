package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
)

// The connect flood (F10): 10,000 connection attempts per second for 5 s
// (-short: 2 s; HERALD_E2E_LONG=1: 20 s), 30% WebSocket, from two flood
// processes (e2e/flood), against an edge limited to 1,000 new connections
// per second (burst 500) and 2,000 open connections. The flood holds what
// the edge admits, so both limits refuse. Each flood process leaves at
// most 2,000 handshakes waiting (so that, with the edge's, the sockets fit
// the open-file limit and the listen backlog): when the edge answers
// slower than the flood asks, the rest of the 10,000/s is counted as
// skipped. Meanwhile:
//
//   - clients connected before the flood stay connected and receive
//     everything (lost = dup = reorder = 0, no gap, no reconnect);
//   - clients that must reconnect during the flood (with their last id)
//     and clients that arrive during it are refused like the flood
//     (herald.refused with retry: for SSE, close 1013 for WebSocket), wait
//     as told, come back, and receive everything from where they stood;
//   - the edge stays ready, holds no more connections than its limit, no
//     more open files than the sockets its clients keep open (admitted or
//     in their handshake) plus a few, gives them all back after the flood,
//     and stays within a memory budget;
//   - every refusal the flood saw is coded and counted by the edge.
//
// The flooded edge runs without the race detector (a raced edge answers
// about a quarter as many handshakes, so the flood would measure the
// detector); the admission code is raced in pkg/edge's tests.
const (
	floodRate      = 10_000 // attempts per second, over all flood processes
	floodProcs     = 2
	floodMaxConns  = 2000
	floodConnRate  = 1000
	floodConnBurst = 500
	floodInflight  = 2000 // handshakes one flood process leaves waiting at once
	floodFiles     = 256  // the edge's own files: NATS, listeners, logs, epoll
	floodRSSBudget = 1 << 30
)

// floodReport is what one flood process printed (e2e/flood's Report).
type floodReport struct {
	Planned   int            `json:"planned"`
	Attempted int            `json:"attempted"`
	Skipped   int            `json:"skipped"`
	Admitted  int            `json:"admitted"`
	Refused   map[string]int `json:"refused"`
	Errors    map[string]int `json:"errors"`
	HeldMax   int            `json:"heldMax"`
	Slowest   time.Duration  `json:"slowestNs"`
	Elapsed   time.Duration  `json:"elapsedNs"`
	Samples   []string       `json:"samples"`
}

func (f *floodReport) add(o floodReport) {
	f.Planned += o.Planned
	f.Attempted += o.Attempted
	f.Skipped += o.Skipped
	f.Admitted += o.Admitted
	f.HeldMax += o.HeldMax
	f.Slowest = max(f.Slowest, o.Slowest)
	f.Elapsed = max(f.Elapsed, o.Elapsed)
	f.Samples = append(f.Samples, o.Samples...)
	for k, v := range o.Refused {
		f.Refused[k] += v
	}
	for k, v := range o.Errors {
		f.Errors[k] += v
	}
}

// usage is one sample of a process's resources from /proc.
type usage struct {
	rss int64 // bytes
	fds int
}

func procUsage(pid int) (usage, error) {
	var u usage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			u.rss = kb << 10
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	u.fds = len(ents)
	return u, err
}

// edgeWatch samples an edge while a fault runs: readiness, open
// connections, resident memory and open files.
type edgeWatch struct {
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	samples  int           // guarded by mu
	notReady []string      // guarded by mu
	probe    time.Duration // guarded by mu; slowest /readyz answer
	peak     usage         // guarded by mu
	conns    float64       // guarded by mu; peak of herald_edge_connections
}

func watchEdge(e *edgeProc, every time.Duration) *edgeWatch {
	w := &edgeWatch{stop: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			began := time.Now()
			err := ready(e)
			took := time.Since(began)
			u, uerr := procUsage(e.proc.pid())
			conns, cerr := e.metric("herald_edge_connections")
			w.mu.Lock()
			w.samples++
			w.probe = max(w.probe, took)
			if err != nil {
				w.notReady = append(w.notReady, fmt.Sprintf("at %v: %v", time.Since(start).Round(time.Millisecond), err))
			}
			if uerr == nil {
				w.peak.rss, w.peak.fds = max(w.peak.rss, u.rss), max(w.peak.fds, u.fds)
			}
			if cerr == nil {
				w.conns = max(w.conns, conns)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *edgeWatch) end() {
	close(w.stop)
	<-w.done
}

// runFlood runs the flood processes against e and returns their merged
// report. It may run outside the test's goroutine.
func runFlood(e *edgeProc, d time.Duration) (floodReport, error) {
	type result struct {
		rep floodReport
		err error
	}
	results := make(chan result, floodProcs)
	for i := range floodProcs {
		// Each process dials from its own 16 loopback addresses: 50,000
		// short connections would exhaust one address's ephemeral ports.
		var src []string
		for k := range 16 {
			src = append(src, fmt.Sprintf("127.0.%d.%d", 10+i, 1+k))
		}
		args := []string{"-url", e.url, "-rate", strconv.Itoa(floodRate / floodProcs), "-duration", d.String(),
			"-ws", "0.3", "-sources", strings.Join(src, ","), "-inflight", strconv.Itoa(floodInflight), "-id", fmt.Sprintf("f%d-", i)}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bins.flood, args...)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			cmd.Env = childEnv()
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test process
			if err := cmd.Start(); err != nil {
				results <- result{err: err}
				return
			}
			started.mu.Lock()
			started.pids = append(started.pids, cmd.Process.Pid)
			started.mu.Unlock()
			var r result
			if err := cmd.Wait(); err != nil {
				r.err = fmt.Errorf("flood %d: %v: %s", i, err, errOut.String())
			} else if err := json.Unmarshal(out.Bytes(), &r.rep); err != nil {
				r.err = fmt.Errorf("flood %d report: %v: %s", i, err, out.String())
			}
			results <- r
		}()
	}
	total := floodReport{Refused: map[string]int{}, Errors: map[string]int{}}
	var errs []error
	for range floodProcs {
		r := <-results
		errs = append(errs, r.err)
		total.add(r.rep)
	}
	return total, errors.Join(errs...)
}

func TestConnectFlood(t *testing.T) {
	skipUnlessEnabled(t)
	flood := 5 * time.Second
	switch {
	case testing.Short():
		flood = 2 * time.Second
	case os.Getenv("HERALD_E2E_LONG") == "1":
		flood = 20 * time.Second
	}
	c := startCluster(t, clusterOptions{})
	binaries(t)
	e := c.startEdgeBinary(bins.plainEdge, "-connect-rate", strconv.Itoa(floodConnRate), "-connect-burst", strconv.Itoa(floodConnBurst),
		"-max-connections", strconv.Itoa(floodMaxConns))
	r := newRun(t, c)
	r.workload(0, feed, feed, other)
	steady := []*subscriber{r.subscribe("sse", 0, 0), r.subscribe("ws", 0, 0), r.subscribe("sse", 0, 0), r.subscribe("ws", 0, 0)}
	resumers := []*subscriber{r.subscribe("sse", 0, 0), r.subscribe("ws", 0, 0), r.subscribe("sse", 0, 0), r.subscribe("ws", 0, 0)}
	r.begin()
	r.receiving(r.ph.warm, 20*time.Second)
	base, err := procUsage(e.proc.pid())
	if err != nil {
		t.Fatal(err)
	}

	w := watchEdge(e, 200*time.Millisecond)
	var rep floodReport
	var floodErr error
	floodDone := make(chan struct{})
	go func() { defer close(floodDone); rep, floodErr = runFlood(e, flood) }()
	r.mark("flood: %d attempts/s for %v from %d processes; edge limits %d/s (burst %d), %d connections; rss %d MiB, %d files",
		floodRate, flood, floodProcs, floodConnRate, floodConnBurst, floodMaxConns, base.rss>>20, base.fds)
	hold(flood / 4)
	// Clients that must come back during the flood, and new ones.
	for _, s := range resumers {
		s.goOffline()
		s.resume()
	}
	var latecomers []*subscriber
	for _, k := range []string{"sse", "ws", "sse", "ws"} {
		latecomers = append(latecomers, r.subscribe(k, 0, 0))
	}
	r.mark("4 clients reconnect and 4 new ones arrive during the flood")
	<-floodDone
	w.end()
	if floodErr != nil {
		t.Fatal(floodErr)
	}
	r.mark("flood ended: planned %d, attempted %d (skipped %d at %d handshakes waiting), admitted %d, refused %v, errors %v, slowest handshake %v",
		rep.Planned, rep.Attempted, rep.Skipped, floodProcs*floodInflight, rep.Admitted, rep.Refused, rep.Errors, rep.Slowest.Round(time.Millisecond))
	w.mu.Lock()
	r.mark("edge during the flood: %d samples, peak %v connections, peak rss %d MiB, peak %d open files; not ready %d times, slowest /readyz %v",
		w.samples, w.conns, w.peak.rss>>20, w.peak.fds, len(w.notReady), w.probe.Round(time.Millisecond))
	if len(w.notReady) > 0 {
		t.Errorf("the edge was not ready during the flood: %v", w.notReady)
	}
	if w.conns > floodMaxConns {
		t.Errorf("the edge held %v connections, over its limit of %d", w.conns, floodMaxConns)
	}
	if open := floodMaxConns + floodProcs*floodInflight + floodFiles; w.peak.fds > open {
		t.Errorf("the edge held %d open files, more than its connection limit, the flood's waiting handshakes and %d of its own (%d)", w.peak.fds, floodFiles, open)
	}
	if w.peak.rss > floodRSSBudget {
		t.Errorf("the edge's resident memory reached %d MiB, over the %d MiB budget", w.peak.rss>>20, floodRSSBudget>>20)
	}
	w.mu.Unlock()
	if len(rep.Samples) > 0 {
		t.Logf("unexpected answers the flood saw: %v", rep.Samples)
	}
	for _, class := range []string{"refused_uncoded", "unexpected_event", "unexpected_frame", "close_uncoded"} {
		if rep.Errors[class] > 0 {
			t.Errorf("%d flood attempts got an answer that is neither an admission nor a coded refusal (%s): %v", rep.Errors[class], class, rep.Samples)
		}
	}
	for k := range rep.Errors {
		if strings.HasPrefix(k, "status_") || strings.HasPrefix(k, "close_") {
			t.Errorf("flood attempts answered %s: %v", k, rep.Samples)
		}
	}
	// Both limits refused, and the edge counted what the flood saw.
	for _, reason := range []string{refuseRate, refuseConns} {
		n, err := e.metric("herald_edge_rejections_total", `reason="limit_`+reason+`"`)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Refused[reason] == 0 || n < float64(rep.Refused[reason]) {
			t.Errorf("refusals for %s: the flood saw %d, the edge counted %v", reason, rep.Refused[reason], n)
		}
	}

	r.receiving(r.ph.after, 60*time.Second)
	// The flood's sockets are given back (4 more clients than before).
	natstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		u, err := procUsage(e.proc.pid())
		if err == nil && u.fds > base.fds+len(latecomers)+16 {
			err = fmt.Errorf("the edge holds %d open files after the flood, %d before it", u.fds, base.fds)
		}
		return err
	})
	after, _ := procUsage(e.proc.pid())
	r.mark("every client receives; the edge now holds rss %d MiB, %d files", after.rss>>20, after.fds)
	refusedLegit := 0
	for _, s := range append(append([]*subscriber(nil), resumers...), latecomers...) {
		refusedLegit += s.refusals()
	}
	rs := r.finish("connect-flood")
	assertClean(t, rs)
	for _, s := range steady {
		if got := reportOf(t, rs, s.id); got.Reconnects != 0 {
			t.Errorf("%s was connected before the flood and reconnected %d times", s.id, got.Reconnects)
		}
	}
	assertMoved(t, rs, resumers, "it went away during the flood")
	t.Logf("refusals of the clients that came back or arrived during the flood: %d", refusedLegit)
	if refusedLegit == 0 {
		t.Errorf("no client of the workload was refused during the flood: the limits were not exercised for them")
	}
}

// Refusal reasons (pkg/edge/limits.go).
const (
	refuseRate  = "rate"
	refuseConns = "connections"
)
