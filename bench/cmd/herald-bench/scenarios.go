package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// bench is one invocation.
type bench struct {
	cfg     *config
	log     io.Writer
	tmp     string
	logFile *os.File
	step    atomic.Int64

	buildMu sync.Mutex
	built   map[string]string

	profiled bool // the CPU profile has been taken
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func (b *bench) vlogf(format string, args ...any) {
	if b.cfg.Verbose {
		b.logf(format, args...)
	}
}

func (b *bench) run(ctx context.Context) (*Result, error) {
	var err error
	b.tmp, err = os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.tmp)
	if b.cfg.ServerLog != "" {
		if b.logFile, err = os.Create(b.cfg.ServerLog); err != nil {
			return nil, err
		}
		defer b.logFile.Close()
	}
	res := &Result{Scenario: b.cfg.Scenario, Date: time.Now().UTC(), Command: os.Args, Machine: machine(), OK: true}
	// Other work on the machine skews every figure: measure it first.
	if s0, err := load.ReadCPUStat(); err == nil {
		sleep(ctx, 500*time.Millisecond)
		if s1, err := load.ReadCPUStat(); err == nil {
			res.Machine.BusyBefore = s1.Since(s0).Busy
			if res.Machine.BusyBefore > 0.15 {
				res.Notes = append(res.Notes, fmt.Sprintf("the machine was %.0f%% busy before the run started: other work skews these figures", 100*res.Machine.BusyBefore))
			}
		}
	}
	if b.cfg.Scenario == "connect-auth" {
		err = b.connectAuth(ctx, res)
		return res, err
	}
	if b.cfg.Scenario == "presence" {
		res.Target = "herald presence: nats-server + simulated edges (broker.Presence over synthetic registries)"
		err = b.presence(ctx, res)
		return res, err
	}
	if b.cfg.Scenario == "multi-edge" {
		res.Target = "herald: NATS host (cmd/embedded) + cmd/edge processes"
		err = b.multiEdge(ctx, res)
		return res, err
	}
	if b.cfg.Scenario == "tasks" {
		err = b.tasksScenario(ctx, res)
		return res, err
	}
	t, err := b.newTarget(ctx)
	if err != nil {
		return nil, err
	}
	res.Target = t.label
	switch b.cfg.Scenario {
	case "idle":
		err = b.idle(ctx, t, res)
	case "fanout":
		err = b.fanout(ctx, t, res, false)
	case "sweep":
		for _, n := range b.cfg.Subs {
			var s *SweepResult
			s, err = b.sweep(ctx, t, n)
			if s != nil {
				res.Sweeps = append(res.Sweeps, s)
				for _, r := range s.Steps {
					if r.Duplicates > 0 || r.OutOfOrder > 0 {
						res.OK = false
					}
				}
			}
			if err != nil {
				break
			}
		}
	case "targeted":
		err = b.fanout(ctx, t, res, true)
	case "storm":
		err = b.storm(ctx, t, res)
	}
	if cerr := t.crashed(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	for _, r := range res.Runs {
		if !r.Complete {
			res.OK = false
		}
	}
	if serr := t.stop(); serr != nil {
		b.logf("server stop: %v", serr)
	}
	return res, err
}

// newFleet builds n subscribers for t (not connected).
func (b *bench) newFleet(t *target, n int) (*load.Fleet, error) {
	return load.NewFleet(load.FleetConfig{
		PerProcess: b.cfg.PerProcess,
		Pool:       load.PoolConfig{N: n, Endpoint: t.endpoint, Concurrency: b.cfg.Concurrency},
		Stderr:     b.log,
	})
}

// connect opens the fleet and logs the round.
func (b *bench) connect(ctx context.Context, f *load.Fleet, concurrency int, resume bool, what string) (*ConnectResult, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rep, err := f.Connect(cctx, concurrency, resume)
	cr := connectResult(rep, f.Processes(), concurrency)
	b.logf("%s: %d/%d open in %.3f s (%s/s), %d failed %v", what, rep.Opened, rep.Attempted, cr.Seconds, rateH(cr.PerSecond), rep.Failed, rep.Errors)
	return cr, err
}

// runSpec is one message run.
type runSpec struct {
	label    string
	messages int     // per client stream
	rate     float64 // messages per second, in total
	targeted bool    // message k goes to client k%n, sequence k/n
	subs     int
}

// messageRun publishes one run and collects its accounting.
func (b *bench) messageRun(ctx context.Context, f *load.Fleet, t *target, pub load.Publisher, spec runSpec) (*RunResult, error) {
	step := b.step.Add(1)
	if err := f.Begin(ctx, step, int64(spec.messages)); err != nil {
		return nil, err
	}
	total := spec.messages
	if spec.targeted {
		total = spec.messages * spec.subs
	}
	r := &RunResult{Label: spec.label, Subscribers: spec.subs, Messages: total, Rate: spec.rate, Targeted: spec.targeted}
	r.Offered = spec.rate * float64(spec.subs)
	if spec.targeted {
		r.Offered = spec.rate
	}
	u0, haveUsage := t.usage()
	l0, _ := f.Usage(ctx)
	m0, _ := load.ReadCPUStat()

	prof := b.startProfile(ctx, t)

	msg := &load.Message{Name: t.pubName, Step: step}
	var buf []byte
	start := time.Now()
	sent, pubDur, perr := load.Pace(ctx, spec.rate, total, func(i int) error {
		seq := int64(i)
		msg.ClientID = ""
		if spec.targeted {
			msg.ClientID = load.ClientID(i % spec.subs)
			seq = int64(i / spec.subs)
		}
		msg.Seq = seq
		msg.TS = time.Now().UnixNano()
		buf = load.AppendPayload(buf[:0], step, seq, msg.TS, b.cfg.Size)
		msg.Payload = buf
		return pub.Publish(ctx, msg)
	})
	if err := pub.Flush(ctx); err != nil && perr == nil {
		perr = err
	}
	r.PublishSeconds = pubDur.Seconds()
	if perr != nil {
		r.PublishErr = perr.Error()
		b.logf("%s: publish stopped after %d of %d: %v", spec.label, sent, total, perr)
	}

	// Wait for everything, or until deliveries stop for -drain.
	expected := int64(spec.messages) * int64(spec.subs)
	last, lastChange := int64(-1), time.Now()
	for {
		n, err := f.Delivered(ctx)
		if err != nil {
			return r, err
		}
		if n >= expected || ctx.Err() != nil {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) > b.cfg.Drain {
			break
		}
		if err := t.crashed(); err != nil {
			return r, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep, err := f.Report(ctx)
	if err != nil {
		return r, err
	}
	u1, _ := t.usage()
	l1, _ := f.Usage(ctx)
	m1, _ := load.ReadCPUStat()
	r.Machine = m1.Since(m0)
	prof()

	r.Expected, r.Delivered, r.Duplicates, r.OutOfOrder = rep.Expected, rep.Delivered, rep.Duplicates, rep.OutOfOrder
	r.Incomplete, r.Stale, r.Unparsed, r.ServerClosed, r.Live, r.Gaps = rep.Incomplete, rep.Stale, rep.Unparsed, rep.ServerClosed, rep.Live, rep.Gaps
	r.Latency = summarize(rep.Latency)
	r.latencySnapshot = rep.Latency
	if rep.LastRecv > 0 {
		r.Seconds = time.Duration(rep.LastRecv - start.UnixNano()).Seconds()
		if r.Seconds > 0 {
			r.Achieved = float64(rep.Delivered) / r.Seconds
		}
	}
	if haveUsage {
		r.ServerCPU = (u1.CPU - u0.CPU).Seconds()
		r.ServerRSS = u1.RSS
		if rep.Delivered > 0 {
			r.ServerCPUPerM = r.ServerCPU / float64(rep.Delivered) * 1e6
		}
		if r.Seconds > 0 {
			r.ServerCPUShare = r.ServerCPU / r.Seconds
		}
	}
	r.LoadCPU = (l1.CPU - l0.CPU).Seconds()
	r.Complete = rep.Delivered == rep.Expected && rep.Expected > 0 && rep.Duplicates == 0 && rep.OutOfOrder == 0 && perr == nil
	r.Pass = r.Complete && r.Latency.P99 <= ms(b.cfg.SLO)
	b.logf("%s: %d/%d delivered, dup %d, ooo %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms, achieved %s/s, server CPU %.2f s",
		spec.label, r.Delivered, r.Expected, r.Duplicates, r.OutOfOrder, r.Latency.P50, r.Latency.P99, r.Latency.Max, rateH(r.Achieved), r.ServerCPU)
	return r, nil
}

func (b *bench) idle(ctx context.Context, t *target, res *Result) error {
	n := b.cfg.Subs[0]
	time.Sleep(time.Second) // let the server finish starting before the baseline
	u0, haveUsage := t.usage()
	l0, _ := load.ReadUsage(0)
	f, err := b.newFleet(t, n)
	if err != nil {
		return err
	}
	defer f.Close()
	prof := b.startProfile(ctx, t)
	cr, err := b.connect(ctx, f, b.cfg.Concurrency, false, "connect")
	l1, _ := load.ReadUsage(0)
	res.Connect = cr
	cr.LoadCPU = (l1.CPU - l0.CPU).Seconds()
	if err != nil {
		return err
	}
	id := &IdleResult{Connections: cr.Opened, Transport: b.cfg.Transport}
	res.Idle = id
	sleep(ctx, b.cfg.Settle)
	u1, _ := t.usage()
	lf, _ := f.Usage(ctx)
	if haveUsage && cr.Opened > 0 {
		id.ServerRSSBefore, id.ServerRSSAfter = u0.RSS, u1.RSS
		id.RSSPerConn = float64(u1.RSS-u0.RSS) / float64(cr.Opened)
		id.ServerFDs, id.ServerThreads = u1.FDs, u1.Threads
		id.ServerCPUSeconds = (u1.CPU - u0.CPU).Seconds()
	}
	if f.Processes() == 1 && cr.Opened > 0 {
		id.LoadRSSPerConn = float64(lf.RSS-l0.RSS) / float64(cr.Opened)
	}
	b.logf("idle: %d connections, server RSS %s → %s (%s per connection)", cr.Opened, bytesH(float64(u0.RSS)), bytesH(float64(u1.RSS)), bytesH(id.RSSPerConn))
	start := time.Now()
	sleep(ctx, b.cfg.Hold)
	id.HoldSeconds = time.Since(start).Seconds()
	u2, _ := t.usage()
	if haveUsage && cr.Opened > 0 {
		id.ServerRSSHeld = u2.RSS
		id.RSSPerConnHeld = float64(u2.RSS-u0.RSS) / float64(cr.Opened)
	}
	prof()
	rep, err := f.Report(ctx)
	id.LiveAfterHold = rep.Live
	if rep.Live < cr.Opened {
		res.OK = false
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d idle connections ended during the hold", cr.Opened-rep.Live, cr.Opened))
	}
	if cr.Failed > 0 {
		res.OK = false
	}
	return err
}

// fanout sends messages to n subscribers of one name; with targeted, each
// client gets its own messages (clientId subjects) and the run ends with
// the churn phase, when -churn asks for one.
func (b *bench) fanout(ctx context.Context, t *target, res *Result, targeted bool) error {
	n := b.cfg.Subs[0]
	label := "fanout"
	if targeted {
		label = "targeted"
	}
	f, err := b.newFleet(t, n)
	if err != nil {
		return err
	}
	defer f.Close()
	if res.Connect, err = b.connect(ctx, f, b.cfg.Concurrency, false, "connect"); err != nil {
		return err
	}
	pub, err := t.newPub()
	if err != nil {
		return err
	}
	defer pub.Close()
	r, err := b.messageRun(ctx, f, t, pub, runSpec{label: label, messages: b.cfg.Messages, rate: b.cfg.Rate, subs: n, targeted: targeted})
	if r != nil {
		res.Runs = append(res.Runs, r)
	}
	if err != nil || !targeted || b.cfg.Churn <= 0 {
		return err
	}
	b.logf("churn: %.0f reconnects/s for %v", b.cfg.Churn, b.cfg.ChurnTime)
	crep, err := f.Churn(ctx, b.cfg.Churn, b.cfg.ChurnTime)
	res.Churn = connectResult(crep, f.Processes(), 64)
	if d := b.cfg.ChurnTime.Seconds(); d > 0 {
		res.Churn.PerSecond = float64(crep.Opened) / d
	}
	if err != nil {
		return err
	}
	if rep, err := f.Report(ctx); err == nil && rep.Live < n {
		_, _ = b.connect(ctx, f, b.cfg.Concurrency, false, "reconnect after churn")
	}
	r, err = b.messageRun(ctx, f, t, pub, runSpec{label: "targeted after churn", messages: b.cfg.Messages, rate: b.cfg.Rate, subs: n, targeted: true})
	if r != nil {
		res.Runs = append(res.Runs, r)
	}
	return err
}

// sweep runs fan-out at increasing offered rates on n subscribers.
func (b *bench) sweep(ctx context.Context, t *target, n int) (*SweepResult, error) {
	f, err := b.newFleet(t, n)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &SweepResult{Subscribers: n, SLOms: ms(b.cfg.SLO)}
	if s.Connect, err = b.connect(ctx, f, b.cfg.Concurrency, false, fmt.Sprintf("connect %d", n)); err != nil {
		return s, err
	}
	pub, err := t.newPub()
	if err != nil {
		return s, err
	}
	defer pub.Close()
	failed := 0
	for _, offered := range b.cfg.Rates {
		if ctx.Err() != nil {
			break
		}
		// Clients the server closed (e.g. as slow) come back before the next rate.
		reconnected := 0
		if rep, err := f.Report(ctx); err == nil && rep.Live < n && rep.Clients > 0 {
			cr, _ := b.connect(ctx, f, b.cfg.Concurrency, false, "reconnect")
			reconnected = cr.Opened
		}
		rate := offered / float64(n)
		msgs := max(b.cfg.MinMessages, int(rate*b.cfg.StepTime.Seconds()))
		r, err := b.messageRun(ctx, f, t, pub, runSpec{label: fmt.Sprintf("%s/s on %d", rateH(offered), n), messages: msgs, rate: rate, subs: n})
		if r != nil {
			r.Offered = offered
			r.Reconnected = reconnected
			s.Steps = append(s.Steps, r)
			if r.Pass {
				s.Sustainable = max(s.Sustainable, offered)
			}
			if r.Complete {
				s.FullDelivery = max(s.FullDelivery, offered)
				s.BestAchieved = max(s.BestAchieved, r.Achieved)
			}
		}
		if err != nil {
			return s, err
		}
		if r.Pass {
			failed = 0
		} else if failed++; failed >= b.cfg.StopAfter {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	b.logf("sweep %d: sustainable %s deliveries/s (p99 ≤ %v), highest complete %s/s", n, rateH(s.Sustainable), b.cfg.SLO, rateH(s.FullDelivery))
	return s, nil
}

// storm connects every client at once; with -resume it then drops them
// all in the middle of a run and reconnects them at once with their last
// event id, expecting the edge to replay what they missed.
func (b *bench) storm(ctx context.Context, t *target, res *Result) error {
	n := b.cfg.Subs[0]
	f, err := b.newFleet(t, n)
	if err != nil {
		return err
	}
	defer f.Close()
	st := &StormResult{}
	res.Storm = st
	u0, measured := t.usage()
	if st.Connect, err = b.connect(ctx, f, -1, false, "connect storm"); err != nil {
		return err
	}
	if u1, ok := t.usage(); ok && measured {
		st.ServerCPUConnect = (u1.CPU - u0.CPU).Seconds()
	}
	res.Connect = st.Connect
	if st.Connect.Failed > 0 {
		res.OK = false
	}
	if !b.cfg.Resume || t.newPub == nil {
		return b.stormDisconnect(ctx, f, t, st)
	}
	pub, err := t.newPub()
	if err != nil {
		return err
	}
	defer pub.Close()
	// A first run gives every client a last event id.
	if st.Before, err = b.messageRun(ctx, f, t, pub, runSpec{label: "before the drop", messages: b.cfg.Messages, rate: b.cfg.Rate, subs: n}); err != nil {
		return err
	}
	if !st.Before.Complete {
		res.OK = false
	}

	// The resumed run: publishing goes on while every client drops and
	// reconnects with Last-Event-ID halfway through.
	half := make(chan struct{})
	var reconnect *ConnectResult
	var rerr error
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-half:
		case <-ctx.Done():
			return
		}
		if err := f.Drop(ctx); err != nil {
			rerr = err
			return
		}
		reconnect, rerr = b.connect(ctx, f, -1, true, "resume storm")
	})
	counted := &halfPublisher{Publisher: pub, at: b.cfg.Messages / 2, half: half}
	r, err := b.messageRun(ctx, f, t, counted, runSpec{label: "resumed run", messages: b.cfg.Messages, rate: b.cfg.Rate, subs: n})
	counted.fire()
	wg.Wait()
	st.Resumed, st.Reconnect = r, reconnect
	st.LastIDs = n
	if r != nil && !r.Complete {
		res.OK = false
	}
	return errors.Join(err, rerr)
}

// halfPublisher signals once a given number of messages is published.
type halfPublisher struct {
	load.Publisher
	at   int
	n    int
	half chan struct{}
	once sync.Once
}

func (h *halfPublisher) Publish(ctx context.Context, m *load.Message) error {
	err := h.Publisher.Publish(ctx, m)
	if h.n++; h.n == h.at {
		_ = h.Publisher.Flush(ctx)
		h.fire()
	}
	return err
}

func (h *halfPublisher) fire() { h.once.Do(func() { close(h.half) }) }

// startProfile starts the one CPU profile of the run (-pprof) on the
// first profiled server; the returned function waits for it and saves
// the heap, allocation and goroutine profiles. Without -pprof, or once the
// profile was taken, it does nothing.
func (b *bench) startProfile(ctx context.Context, t *target) func() {
	if len(t.pprofURLs) == 0 || b.profiled {
		return func() {}
	}
	b.profiled = true
	done := make(chan error, 1)
	go func() { done <- b.cpuProfile(ctx, t.pprofURLs[0]) }()
	return func() {
		if err := <-done; err != nil {
			b.logf("cpu profile: %v", err)
		}
		b.saveProfiles(ctx, t.pprofURLs[0])
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// stormDisconnect drops every client at once and measures the server's CPU
// until it has closed them all (Herald's herald_edge_connections reaches 0;
// without it, nothing is measured).
func (b *bench) stormDisconnect(ctx context.Context, f *load.Fleet, t *target, st *StormResult) error {
	if len(t.edges) == 0 {
		return nil
	}
	u0, ok := t.usage()
	if !ok {
		return nil
	}
	t0 := time.Now()
	if err := f.Drop(ctx); err != nil {
		return err
	}
	for {
		n, err := t.openConnections()
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if time.Since(t0) > time.Minute {
			return fmt.Errorf("%v connections still open a minute after every client left", n)
		}
		sleep(ctx, 20*time.Millisecond)
	}
	u1, _ := t.usage()
	st.DisconnectSeconds, st.ServerCPUDisconnect = time.Since(t0).Seconds(), (u1.CPU - u0.CPU).Seconds()
	b.logf("disconnect storm: every connection closed in %.3f s; server CPU %.2f s (connect: %.2f s)", st.DisconnectSeconds, st.ServerCPUDisconnect, st.ServerCPUConnect)
	return nil
}
