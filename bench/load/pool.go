package load

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// PoolConfig configures a Pool. Zero fields take the defaults in their
// comments.
type PoolConfig struct {
	Endpoint Endpoint
	// First is the global index of the pool's first client (worker
	// processes hold slices of one fleet); N is the number of clients.
	First, N int
	// SourceIPs, when set, are the local addresses clients connect from:
	// client i uses SourceIPs[(i/PerSource) % len]. One address has
	// about 28k ephemeral ports towards one server port.
	SourceIPs []net.IP
	// PerSource is the number of clients per source address. Default 25000.
	PerSource int
	// Concurrency bounds dials and response heads in flight. Default 256.
	Concurrency int
	// DialTimeout and HeadTimeout bound the TCP connect and the response
	// head. Default 10 s each.
	DialTimeout, HeadTimeout time.Duration
	// ReadBuffer is each client's initial read buffer. Default 4 KiB.
	ReadBuffer int
}

// Pool is a set of subscribers in this process.
type Pool struct {
	cfg       PoolConfig
	clients   []*client
	phase     atomic.Pointer[phase]
	delivered counter
	live      atomic.Int64
}

// phase is the message run clients are accounting for.
type phase struct {
	Step   int64
	Expect int64 // messages per client: sequence numbers 0..Expect-1
	hist   *Histogram
}

// counter is an int64 spread over cache lines, for many writers.
type counter struct {
	shards [32]struct {
		n atomic.Int64
		_ [56]byte
	}
}

func (c *counter) add(shard int, n int64) { c.shards[uint(shard)%32].n.Add(n) }

func (c *counter) load() int64 {
	var t int64
	for i := range c.shards {
		t += c.shards[i].n.Load()
	}
	return t
}

func (c *counter) reset() {
	for i := range c.shards {
		c.shards[i].n.Store(0)
	}
}

// NewPool returns a pool of cfg.N unconnected clients.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.PerSource <= 0 {
		cfg.PerSource = 25000
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.HeadTimeout <= 0 {
		cfg.HeadTimeout = 10 * time.Second
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 4 << 10
	}
	p := &Pool{cfg: cfg}
	p.clients = make([]*client, cfg.N)
	for i := range p.clients {
		p.clients[i] = &client{p: p, index: cfg.First + i, shard: i}
	}
	return p
}

func (p *Pool) sourceIP(index int) net.IP {
	if len(p.cfg.SourceIPs) == 0 {
		return nil
	}
	return p.cfg.SourceIPs[(index/p.cfg.PerSource)%len(p.cfg.SourceIPs)]
}

// Size returns the number of clients.
func (p *Pool) Size() int { return len(p.clients) }

// Live returns the number of open streams.
func (p *Pool) Live() int { return int(p.live.Load()) }

// ConnectReport describes one round of connections.
type ConnectReport struct {
	Attempted int            `json:"attempted"`
	Opened    int            `json:"opened"`
	Failed    int            `json:"failed"`
	FirstDial int64          `json:"first_dial_unix_ns"`
	LastOpen  int64          `json:"last_open_unix_ns"`
	Latency   Snapshot       `json:"latency"` // dial to open, per connection
	Errors    map[string]int `json:"errors,omitempty"`
}

// Elapsed is the time from the first dial to the last open stream.
func (r ConnectReport) Elapsed() time.Duration {
	if r.LastOpen == 0 || r.FirstDial == 0 {
		return 0
	}
	return time.Duration(r.LastOpen - r.FirstDial)
}

// Merge combines the reports of two parts of one round.
func (r ConnectReport) Merge(o ConnectReport) ConnectReport {
	out := ConnectReport{
		Attempted: r.Attempted + o.Attempted,
		Opened:    r.Opened + o.Opened,
		Failed:    r.Failed + o.Failed,
		FirstDial: minNonZero(r.FirstDial, o.FirstDial),
		LastOpen:  max(r.LastOpen, o.LastOpen),
		Latency:   r.Latency.Merge(o.Latency),
	}
	for _, m := range []map[string]int{r.Errors, o.Errors} {
		for k, v := range m {
			if out.Errors == nil {
				out.Errors = map[string]int{}
			}
			out.Errors[k] += v
		}
	}
	return out
}

func minNonZero(a, b int64) int64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

// round is one Connect call's bookkeeping; clients report to it once each.
type round struct {
	pending sync.WaitGroup
	mu      sync.Mutex
	rep     ConnectReport // guarded by mu
	hist    *Histogram
}

func (r *round) open(at time.Time, latency time.Duration, shard int) {
	r.hist.Record(latency, shard)
	r.mu.Lock()
	r.rep.Opened++
	r.rep.LastOpen = max(r.rep.LastOpen, at.UnixNano())
	r.mu.Unlock()
	r.pending.Done()
}

func (r *round) fail(err error) {
	r.mu.Lock()
	r.rep.Failed++
	if r.rep.Errors == nil {
		r.rep.Errors = map[string]int{}
	}
	r.rep.Errors[errClass(err)]++
	r.mu.Unlock()
	r.pending.Done()
}

// errClass names an error for a count table, without addresses.
func errClass(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free source port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, errWSClosed):
		return "closed by server"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && !strings.HasPrefix(s, "status ") {
		s = s[i+2:]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// Connect opens every client that is not live, at most Concurrency at a
// time (0 keeps the configured value; a negative value means all at once),
// and waits until each is open or has failed, or ctx ends (the rest count
// as failed with "timeout"). With resume, a client that saw events before
// presents the last event id.
func (p *Pool) Connect(ctx context.Context, concurrency int, resume bool) ConnectReport {
	if concurrency == 0 {
		concurrency = p.cfg.Concurrency
	}
	var todo []*client
	for _, c := range p.clients {
		c.mu.Lock()
		live := c.live
		c.mu.Unlock()
		if !live {
			todo = append(todo, c)
		}
	}
	if concurrency < 0 || concurrency > len(todo) {
		concurrency = len(todo)
	}
	r := &round{hist: NewHistogram(16)}
	r.rep.Attempted = len(todo)
	r.pending.Add(len(todo))
	if len(todo) == 0 {
		return r.rep
	}
	r.rep.FirstDial = time.Now().UnixNano()
	next := atomic.Int64{}
	var workers sync.WaitGroup
	for range concurrency {
		workers.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(todo) || ctx.Err() != nil {
					return
				}
				c := todo[i]
				resumeID := ""
				if resume {
					c.mu.Lock()
					resumeID = string(c.lastID)
					c.mu.Unlock()
				}
				c.round = r
				c.openedAt = time.Time{}
				p.live.Add(1)
				if err := c.connect(resumeID); err != nil {
					p.live.Add(-1)
					r.fail(err)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		r.pending.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	workers.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.rep
	rep.Errors = make(map[string]int, len(r.rep.Errors))
	for k, v := range r.rep.Errors {
		rep.Errors[k] = v
	}
	if missing := rep.Attempted - rep.Opened - rep.Failed; missing > 0 {
		rep.Failed += missing
		rep.Errors["timeout"] += missing
	}
	if len(rep.Errors) == 0 {
		rep.Errors = nil
	}
	rep.Latency = r.hist.Snapshot()
	return rep
}

// Begin starts accounting for a new message run: every client expects
// sequence numbers 0..expect-1 of step. Payloads of other steps are
// counted as stale.
func (p *Pool) Begin(step, expect int64) {
	p.delivered.reset()
	p.phase.Store(&phase{Step: step, Expect: expect, hist: NewHistogram(16)})
}

// Delivered returns the number of accepted deliveries since Begin.
func (p *Pool) Delivered() int64 { return p.delivered.load() }

// PhaseReport is the accounting of one message run.
type PhaseReport struct {
	Step         int64    `json:"step"`
	Clients      int      `json:"clients"`
	Live         int      `json:"live"`
	Expected     int64    `json:"expected"`
	Delivered    int64    `json:"delivered"`
	Duplicates   int64    `json:"duplicates"`
	OutOfOrder   int64    `json:"out_of_order"`
	Stale        int64    `json:"stale"`    // payloads of another step
	Unparsed     int64    `json:"unparsed"` // events without a payload marker
	Beyond       int64    `json:"beyond"`   // sequence numbers not expected
	Incomplete   int      `json:"incomplete_clients"`
	ServerClosed int      `json:"server_closed"`
	Gaps         int64    `json:"gap_events"`
	LastRecv     int64    `json:"last_recv_unix_ns"`
	Latency      Snapshot `json:"latency"`
}

// Report returns the accounting of the current message run.
func (p *Pool) Report() PhaseReport {
	ph := p.phase.Load()
	r := PhaseReport{Clients: len(p.clients)}
	if ph != nil {
		r.Step = ph.Step
		r.Expected = ph.Expect * int64(len(p.clients))
	}
	for _, c := range p.clients {
		c.mu.Lock()
		if c.live {
			r.Live++
		}
		if c.serverClosed {
			r.ServerClosed++
		}
		r.Gaps += c.gaps
		switch {
		case ph == nil:
		case c.step == ph.Step:
			r.Delivered += c.delivered
			r.Duplicates += c.dups
			r.OutOfOrder += c.ooo
			r.Stale += c.stale
			r.Unparsed += c.unparsed
			r.Beyond += c.beyond
			r.LastRecv = max(r.LastRecv, c.lastRecv)
			if c.delivered < ph.Expect {
				r.Incomplete++
			}
		case ph.Expect > 0:
			r.Incomplete++
		}
		c.mu.Unlock()
	}
	if ph != nil {
		r.Latency = ph.hist.Snapshot()
	}
	return r
}

// Merge combines the reports of two parts of one run.
func (r PhaseReport) Merge(o PhaseReport) PhaseReport {
	return PhaseReport{
		Step:         max(r.Step, o.Step),
		Clients:      r.Clients + o.Clients,
		Live:         r.Live + o.Live,
		Expected:     r.Expected + o.Expected,
		Delivered:    r.Delivered + o.Delivered,
		Duplicates:   r.Duplicates + o.Duplicates,
		OutOfOrder:   r.OutOfOrder + o.OutOfOrder,
		Stale:        r.Stale + o.Stale,
		Unparsed:     r.Unparsed + o.Unparsed,
		Beyond:       r.Beyond + o.Beyond,
		Incomplete:   r.Incomplete + o.Incomplete,
		ServerClosed: r.ServerClosed + o.ServerClosed,
		Gaps:         r.Gaps + o.Gaps,
		LastRecv:     max(r.LastRecv, o.LastRecv),
		Latency:      r.Latency.Merge(o.Latency),
	}
}

// Churn closes and reopens clients for d, at rate operations per second
// (round robin over the pool, up to 64 at once), and reports the reopens.
// It measures what a server pays for subscription churn: each reopen is
// a new connection, a new subscription and the release of the old one.
func (p *Pool) Churn(ctx context.Context, rate float64, d time.Duration) ConnectReport {
	r := &round{hist: NewHistogram(16)}
	if len(p.clients) == 0 || rate <= 0 || d <= 0 {
		return r.rep
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	r.rep.FirstDial = time.Now().UnixNano()
	sem := make(chan struct{}, 64)
	var ops sync.WaitGroup
	next := 0
	_, _, _ = Pace(ctx, rate, int(rate*d.Seconds())+1, func(int) error {
		c := p.clients[next%len(p.clients)]
		next++
		if !c.busy.CompareAndSwap(false, true) {
			return nil
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			c.busy.Store(false)
			return ctx.Err()
		}
		r.mu.Lock()
		r.rep.Attempted++
		r.mu.Unlock()
		r.pending.Add(1)
		ops.Go(func() {
			defer func() { <-sem; c.busy.Store(false) }()
			c.mu.Lock()
			live := c.live
			c.mu.Unlock()
			if live {
				c.close()
			}
			c.round = r
			c.openedAt = time.Time{}
			p.live.Add(1)
			if err := c.connect(""); err != nil {
				p.live.Add(-1)
				r.fail(err)
			}
		})
		return nil
	})
	ops.Wait()
	waited := make(chan struct{})
	go func() { r.pending.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(p.cfg.HeadTimeout):
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.rep
	rep.Latency = r.hist.Snapshot()
	return rep
}

// Drop closes every stream from the client side and waits for the read
// loops to end. The clients keep their last event ids, for a resume.
func (p *Pool) Drop() {
	var wg sync.WaitGroup
	for _, c := range p.clients {
		c.mu.Lock()
		live := c.live
		c.mu.Unlock()
		if live {
			wg.Go(c.close)
		}
	}
	wg.Wait()
}

// Close closes every stream.
func (p *Pool) Close() { p.Drop() }

// LastIDs returns how many clients hold a last event id.
func (p *Pool) LastIDs() int {
	n := 0
	for _, c := range p.clients {
		c.mu.Lock()
		if len(c.lastID) > 0 {
			n++
		}
		c.mu.Unlock()
	}
	return n
}
