package scale

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/pkg/broker"
)

// replayJob is a resume storm on one edge: every client of the span
// replays what it missed, at most Concurrency at once, as pkg/edge does
// (a goroutine per resuming connection waiting for one of MaxReplays
// slots, then broker.History.Replay with the connection's filters).
type replayJob struct {
	Stream      string `json:"stream"`
	Replicas    int    `json:"replicas"` // a change reopens the stream (it was recreated)
	Clients     Span   `json:"clients"`
	From        uint64 `json:"from"`
	UpTo        uint64 `json:"up_to"`
	Concurrency int    `json:"concurrency"`
	Expect      int    `json:"expect"` // events each client must get
	// Filters is "edge" (pkg/edge's filters, two of them wildcards) or
	// "literal" (the same events named by literal subjects only).
	Filters string `json:"filters"`
	// Method is "history" (broker.History.Replay) or "direct" (batched
	// direct gets answered by any replica).
	Method string `json:"method"`
}

// replayAttempts bounds the attempts of one replay.
const replayAttempts = 6

// maxFailureKinds bounds the distinct errors a result counts.
const maxFailureKinds = 8

// ReplayResult is what one edge's replays did.
type ReplayResult struct {
	Replays  int `json:"replays"`
	Messages int `json:"messages"`
	// Short counts replays that ended without error but did not return
	// Expect events: what a resuming client would silently miss.
	Short int `json:"short"`
	// Retries counts failed attempts that were retried; Errors replays
	// that still failed after replayAttempts.
	Retries int `json:"retries"`
	Errors  int `json:"errors"`
	// Failures counts failed attempts by error (the first
	// maxFailureKinds kinds).
	Failures map[string]int `json:"failures,omitempty"`
	// Wait is from the start of the storm to each replay's end (what a
	// resuming client waits, slots included); Run is one replay's own time.
	Wait    load.Snapshot `json:"wait"`
	Run     load.Snapshot `json:"run"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Replay filter sets.
const (
	filtersEdge    = "edge"
	filtersLiteral = "literal"
)

// filters are the event subjects a connection of client i receives, for
// replays. "edge" is pkg/edge's set: the name, the client in any group
// (ev.<name>.*.<id>), every name (ev._.>) and the group. "literal" names
// the same events a connection of that client in its group can receive
// with literal subjects only: each of name and "every name" (_) crossed
// with no group or the client's group, and with no clientId or the
// client's.
func (w *edgeWorker) filters(i int, mode string) []string {
	p := w.hello.Pop
	id, g := p.ID(i), p.Group(i)
	if mode != filtersLiteral {
		f := []string{w.subj.EventName(p.Name), w.subj.EventClient(p.Name, id), w.subj.EventAllNames()}
		if g != "" {
			f = append(f, w.subj.EventGroup(p.Name, g))
		}
		return f
	}
	var f []string
	groups := []string{""}
	if g != "" {
		groups = append(groups, g)
	}
	for _, name := range []string{p.Name, ""} {
		for _, grp := range groups {
			for _, cid := range []string{"", id} {
				a := broker.Address{Name: name, Group: grp, ClientID: cid}
				f = append(f, w.subj.Event(a))
			}
		}
	}
	return f
}

func (w *edgeWorker) replay(j replayJob) (*ReplayResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if w.hist == nil || w.hist.Name() != j.Stream || w.histReplicas != j.Replicas {
		h, err := broker.OpenHistory(ctx, w.nc, w.subj, broker.HistoryConfig{Stream: j.Stream})
		if err != nil {
			return nil, err
		}
		w.hist, w.histReplicas = h, j.Replicas
	}
	h := w.hist
	res := &ReplayResult{}
	wait, run := load.NewHistogram(16), load.NewHistogram(16)
	slots := make(chan struct{}, max(j.Concurrency, 1))
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	j.Clients.Each(func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			t0 := time.Now()
			// As pkg/edge does: a failed replay is retried from the last
			// event delivered, after a growing pause.
			n, retries, next := 0, 0, j.From
			backoff := 100 * time.Millisecond
			var err error
			var failures []string
			for attempt := 1; ; attempt++ {
				deliver := func(seq uint64, subject string) error {
					if _, err := w.subj.ParseEvent(subject); err != nil {
						return err
					}
					n++
					next = seq + 1
					return nil
				}
				if j.Method == methodDirect {
					err = replayDirectAny(ctx, w.nc, j.Stream, next, j.UpTo, w.filters(i, j.Filters), deliver)
				} else {
					err = h.Replay(ctx, next, j.UpTo, w.filters(i, j.Filters), func(s broker.Stored) error { return deliver(s.Seq, s.Subject) })
				}
				if err != nil {
					failures = append(failures, err.Error())
				}
				if err == nil || attempt == replayAttempts || ctx.Err() != nil {
					break
				}
				retries++
				time.Sleep(backoff)
				backoff = min(2*backoff, 5*time.Second)
			}
			run.Record(time.Since(t0), i%16)
			wait.Record(time.Since(start), i%16)
			mu.Lock()
			defer mu.Unlock()
			res.Replays++
			res.Messages += n
			res.Retries += retries
			if err != nil {
				res.Errors++
			}
			for _, f := range failures {
				if res.Failures == nil {
					res.Failures = map[string]int{}
				}
				if _, ok := res.Failures[f]; ok || len(res.Failures) < maxFailureKinds {
					res.Failures[f]++
				}
			}
			if err == nil && j.Expect > 0 && n != j.Expect {
				res.Short++
			}
		}()
	})
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Wait, res.Run = wait.Snapshot(), run.Snapshot()
	return res, nil
}

// ReplayRun is one resume storm over every edge.
type ReplayRun struct {
	Replicas int    `json:"replicas"`
	Method   string `json:"method"` // how the replay read: see ReplayRun.Reader
	// Reader names what Method does at these replicas: ordered consumer,
	// batched direct get (one replica), direct get from any replica.
	Reader  string `json:"reader"`
	Filters string `json:"filters"` // "edge" or "literal"
	Clients int    `json:"clients"`
	// Stored is the stream's message count; the window replayed is all of
	// it, and each resuming client's events are spread over its part.
	Stored      uint64       `json:"stored"`
	PerClient   int          `json:"per_client"`
	Concurrency int          `json:"concurrency_per_edge"`
	EdgeCount   int          `json:"edge_count"`
	Result      ReplayResult `json:"result"` // merged over edges; Elapsed is the storm's
	Leader      string       `json:"leader"`
	Delta
}

// runReplay measures resume storms on R3 (ordered consumers), then R1
// (batched direct gets). The stream is filled in two stages: first the
// events of the smallest storm's clients (the smallest storm runs), then
// those of the largest storm's (every storm runs again): the same storm
// against a larger stored window shows what a replay's cost grows with.
// Each storm runs with pkg/edge's filters and with literal ones.
func (r *runner) runReplay(ctx context.Context) ([]ReplayRun, error) {
	cfg := r.cfg
	b, err := r.start(ctx, "replay", false, cfg.Edges, true)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	c, edges, nc := b.c, b.edges, b.pubs[0]
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	sizes := append([]int(nil), cfg.Replays...)
	slices.Sort(sizes)
	data := payload(cfg.Payload)
	var runs []ReplayRun
	for _, replicas := range []int{3, 1} {
		// Retention outlasts the phase: with the default 5 minutes the
		// first events would expire while slow storms still replay them.
		st, err := r.historyStream(ctx, nc, Design{}, replicas, time.Hour)
		if err != nil {
			return runs, err
		}
		methods := []string{methodHistory}
		if replicas > 1 && !cfg.NoReplayDirectR3 {
			methods = append(methods, methodDirect)
		}
		filled := 0
		for stage, upTo := range []int{sizes[0], sizes[len(sizes)-1]} {
			if stage > 0 && upTo == filled {
				break
			}
			if err := r.fill(ctx, js, filled, upTo, cfg.ReplayMessages, data); err != nil {
				return runs, err
			}
			filled = upTo
			info, err := st.Info(ctx)
			if err != nil {
				return runs, err
			}
			first, last := info.State.FirstSeq, info.State.LastSeq
			for _, n := range sizes {
				if n > filled {
					continue
				}
				for _, method := range methods {
					for _, filters := range cfg.ReplayFilters {
						run, err := r.replayStorm(ctx, c, edges, st.CachedInfo().Config.Name, replicas, method, filters, n, first, last)
						if err != nil {
							return runs, err
						}
						run.Stored, run.Leader = info.State.Msgs, streamLeader(ctx, st)
						runs = append(runs, *run)
						res := run.Result
						r.logf("replay R%d (%s, %s filters): %d clients, %d events each, %d stored: %d replays, %d events, %d short, %d retried, %d failed in %v; wait p50 %v p99 %v; node CPU %v, edge CPU %v",
							replicas, run.Reader, filters, n, cfg.ReplayMessages, run.Stored, res.Replays, res.Messages, res.Short, res.Retries, res.Errors, res.Elapsed.Round(time.Millisecond),
							res.Wait.Quantile(0.5).Round(time.Millisecond), res.Wait.Quantile(0.99).Round(time.Millisecond),
							durs(run.NodeCPU), run.EdgeCPU.Round(time.Millisecond))
					}
				}
			}
		}
		if err := js.DeleteStream(ctx, st.CachedInfo().Config.Name); err != nil {
			return runs, err
		}
	}
	return runs, nil
}

// fill stores per events for each client of [from, to), round by round
// (a client's events are spread over the part of the stream filled
// together).
func (r *runner) fill(ctx context.Context, js jetstream.JetStream, from, to, per int, data []byte) error {
	start := time.Now()
	for round := range per {
		for i := from; i < to; i++ {
			subject := r.subj.Event(broker.Address{Name: r.pop.Name, ClientID: r.pop.ID(i)})
			if _, err := js.PublishAsync(subject, data); err != nil {
				return err
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Minute):
			return fmt.Errorf("history fill: round %d not acknowledged in 2 minutes", round)
		}
	}
	r.logf("replay: stored %d events in %v", (to-from)*per, time.Since(start).Round(time.Millisecond))
	return nil
}

// replayStorm resumes clients [0, n) at once, spread over the edges.
func (r *runner) replayStorm(ctx context.Context, c *Cluster, edges []*edgeProc, stream string, replicas int, method, filters string, n int, from, upTo uint64) (*ReplayRun, error) {
	cfg := r.cfg
	run := &ReplayRun{Replicas: replicas, Method: method, Reader: readerOf(method, replicas), Filters: filters, Clients: n,
		PerClient: cfg.ReplayMessages, Concurrency: cfg.ReplayConcurrency, EdgeCount: len(edges)}
	results := make([]*ReplayResult, len(edges))
	var err error
	run.Delta, err = r.measure(ctx, c, edges, func(mark) error {
		start := time.Now()
		err := eachEdge(ctx, edges, func(e int, ed *edgeProc) error {
			resp, err := ed.do(ctx, request{Op: "replay", Replay: &replayJob{Stream: stream, Replicas: replicas, Filters: filters, Method: method,
				Clients: Span{From: 0, To: n, Mod: len(edges), Rem: e},
				From:    from, UpTo: upTo, Concurrency: cfg.ReplayConcurrency, Expect: cfg.ReplayMessages}})
			results[e] = resp.Replay
			return err
		})
		run.Result.Elapsed = time.Since(start)
		return err
	})
	if err != nil {
		return nil, err
	}
	m := &run.Result
	for _, res := range results {
		if res == nil {
			continue
		}
		m.Replays += res.Replays
		m.Messages += res.Messages
		m.Short += res.Short
		m.Retries += res.Retries
		m.Errors += res.Errors
		for f, k := range res.Failures {
			if m.Failures == nil {
				m.Failures = map[string]int{}
			}
			m.Failures[f] += k
		}
		m.Wait, m.Run = m.Wait.Merge(res.Wait), m.Run.Merge(res.Run)
	}
	return run, nil
}

// readerOf names what a replay method does at a replica count.
func readerOf(method string, replicas int) string {
	switch {
	case method == methodDirect:
		return "direct get, any replica"
	case replicas > 1:
		return "ordered consumer"
	}
	return "batched direct get"
}
