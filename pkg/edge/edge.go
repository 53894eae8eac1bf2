package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/pkg/broker"
)

// Control values edges use among themselves on event subjects.
const (
	controlReplace = "replace"       // close other connections with this name and clientId
	headerConn     = "Herald-Conn"   // the connection that sent a replace
	headerSince    = "Herald-Since"  // its connect time, unix nanoseconds
	msgBuffer      = 1 << 16         // NATS messages buffered between the client and the fan-out
	flushTimeout   = 2 * time.Second // bound of the wait for NATS to confirm a new connection's subscriptions
	historyStale   = 6 * time.Second // no stream-state read for this long: not ready
)

// ErrShutdown is returned by Shutdown when its context ends before every
// connection has closed; the rest were closed forcibly.
var ErrShutdown = errors.New("edge: shutdown deadline passed; remaining connections closed forcibly")

// Edge serves SSE connections and fans NATS messages out to them.
type Edge struct {
	cfg      Config
	nc       *nats.Conn
	subj     broker.Subjects // where producers publish (ev)
	live     broker.Subjects // what the edge subscribes to: ev, or live with history on
	pub      *broker.Publisher
	log      *slog.Logger
	m        *metrics
	reg      *registry
	interest *broker.Interest
	msgs     chan *nats.Msg
	mux      *http.ServeMux
	warn     rateLimiter

	hist    atomic.Pointer[broker.History]      // nil until the stream is open (history on)
	hstate  atomic.Pointer[broker.HistoryState] // last known stream state
	seq     atomic.Uint64                       // newest stream sequence the edge knows of
	stateOK atomic.Int64                        // unix nanoseconds of the last successful stream-state read
	replays chan struct{}                       // slots for concurrent replays
	flights stateFlights                        // stream-state reads for connecting clients

	batching bool        // owned by dispatch: a backlog is queued before anything is written
	kicks    []*conn     // owned by dispatch: connections queued to since the last flush
	pool     *writers    // writes what dispatch queued
	self     *poolWriter // owned by dispatch: writes a chunk itself when the pool is busy

	gone     *goneWatcher // hijacked sockets' liveness, one goroutine for all
	serial   atomic.Uint64
	draining atomic.Bool
	conns    sync.WaitGroup // one per open connection
	stop     chan struct{}  // closed by Shutdown: background loops end
	loops    sync.WaitGroup
	stopOnce sync.Once
}

// New returns an Edge that uses nc for all NATS traffic. logger and reg may
// be nil (no logging; a private registry).
func New(nc *nats.Conn, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Edge, error) {
	if nc == nil {
		return nil, errors.New("edge: nil NATS connection")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	subj, err := broker.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return nil, err
	}
	pub, err := broker.NewPublisher(nc, &broker.PublisherOptions{Prefix: cfg.SubjectPrefix, Levels: cfg.Levels,
		MaxDataBytes: cfg.MaxPublishBytes, Acked: cfg.History != nil})
	if err != nil {
		return nil, err
	}
	e := &Edge{
		gone:    newGoneWatcher(),
		cfg:     cfg,
		nc:      nc,
		subj:    subj,
		live:    subj,
		replays: make(chan struct{}, cfg.MaxReplays),
		pub:     pub,
		log:     logger.With("edge", cfg.EdgeID),
		reg:     newRegistry(),
		msgs:    make(chan *nats.Msg, msgBuffer),
		stop:    make(chan struct{}),
		warn:    rateLimiter{every: cfg.LogInterval},
		self:    newPoolWriter(),
	}
	e.interest = broker.NewInterest(nc, e.msgs)
	e.m, err = newMetrics(reg, func() float64 { return float64(e.interest.Len()) })
	if err != nil {
		return nil, fmt.Errorf("edge: metrics: %w", err)
	}
	if cfg.History != nil {
		e.live = subj.Live()
	}
	e.watchSlowConsumers()
	if err := e.interest.Acquire(e.live.EventAllNames()); err != nil {
		return nil, err
	}
	e.mux = e.routes()
	e.pool = newWriters(runtime.GOMAXPROCS(0), e.m)
	e.loops.Add(2)
	go e.dispatch()
	go e.pinger()
	if cfg.History != nil {
		e.watchReconnects()
		e.loadHistory() // first try now, so a healthy edge is ready at once
		e.loops.Add(1)
		go e.keepHistory()
	}
	return e, nil
}

// Handler returns the edge's routes: the SSE routes, POST /publish,
// GET /healthz and GET /readyz.
func (e *Edge) Handler() http.Handler { return e.mux }

func (e *Edge) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(e.cfg.SSEPath, e.sseHandler(""))
	for _, r := range e.cfg.ExtraSSERoutes {
		mux.Handle(r.Pattern, e.sseHandler(r.Name))
	}
	mux.HandleFunc(WSRoute, e.wsHandler)
	mux.HandleFunc("/publish", e.handlePublish)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := e.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// Ready returns nil when the edge can serve: NATS is connected and the edge
// is not draining.
func (e *Edge) Ready() error {
	if e.draining.Load() {
		return errors.New("draining")
	}
	if !e.nc.IsConnected() {
		return fmt.Errorf("NATS not connected (%s)", e.nc.Status())
	}
	if e.cfg.History != nil {
		if e.historyState() == nil {
			return errors.New("history stream not available")
		}
		// The stream is read every second: a link to NATS that stopped
		// answering (a black hole is not a disconnect) shows here within
		// seconds, long before NATS's own pings notice.
		if age := time.Since(time.Unix(0, e.stateOK.Load())); age > historyStale {
			return fmt.Errorf("history stream has not answered for %s", age.Round(time.Second))
		}
	}
	return nil
}

// Connections returns the number of open connections.
func (e *Edge) Connections() int { return e.reg.len() }

// Shutdown flips readiness, refuses new connections, and closes every
// connection with pode.close (after what is already queued). If
// cfg.DrainWindow is set the closes are spread over it at random, so clients
// do not all reconnect at once. It returns when every connection is closed,
// or ErrShutdown when ctx ends first (the rest are then closed forcibly).
func (e *Edge) Shutdown(ctx context.Context) error {
	e.draining.Store(true)
	conns := e.reg.all(nil)
	window := e.cfg.DrainWindow
	var timers []*time.Timer
	for _, c := range conns {
		if window <= 0 {
			c.close(ReasonShutdown)
			continue
		}
		c := c
		timers = append(timers, time.AfterFunc(rand.N(window), func() { c.close(ReasonShutdown) }))
	}
	done := make(chan struct{})
	go func() { e.conns.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		for _, t := range timers {
			t.Stop()
		}
		for _, c := range e.reg.all(conns[:0]) {
			c.abort(ReasonShutdown)
		}
		for _, c := range conns {
			c.abort(ReasonShutdown)
		}
		<-done
		err = ErrShutdown
	}
	e.stopOnce.Do(func() { close(e.stop) })
	e.loops.Wait()
	e.pool.close()
	e.interest.Close()
	e.gone.close()
	return err
}

// register indexes c, takes NATS interest for it, and closes any connection
// it replaces, here and (through NATS) on every other edge.
func (e *Edge) register(c *conn) error {
	c.subjects = c.subjects[:0]
	// Per-connection subjects are literal: a wildcard subscription makes
	// the NATS server walk its whole subject cache on every subscribe and
	// unsubscribe. Connection notices use one wildcard per name, taken
	// with the name's first connection, instead of a subscription per
	// connection: an edge hears the notices for every clientId of the
	// names it holds and ignores those it has no connection for.
	c.subjects = append(c.subjects, e.live.EventName(c.name), e.live.Event(broker.Address{Name: c.name, ClientID: c.id}), e.subj.SysConnName(c.name))
	if c.gkey != "" {
		c.subjects = append(c.subjects, e.live.EventGroup(c.name, c.gkey), e.live.Event(broker.Address{Name: c.name, Group: c.gkey, ClientID: c.id}))
	}
	for i, s := range c.subjects {
		if err := e.interest.Acquire(s); err != nil {
			for _, done := range c.subjects[:i] {
				e.interest.Release(done)
			}
			return err
		}
	}
	e.conns.Add(1)
	if old := e.reg.add(c); old != nil {
		old.close(ReasonReplaced)
		e.releaseInterest(old)
	}
	// Other edges close their connection with this name and clientId. The
	// notice goes to a system subject so that it never enters history.
	m := broker.NewCloseMsg(e.subj.SysConn(c.name, c.id))
	m.Header.Set(broker.HeaderControl, controlReplace)
	m.Header.Set(headerConn, c.token)
	m.Header.Set(headerSince, strconv.FormatInt(c.since, 10))
	if err := e.nc.PublishMsg(m); err != nil {
		e.log.Warn("could not announce connection to other edges", "name", c.name, "err", err)
	}
	return nil
}

// unregister removes c from the index and releases its NATS interest.
func (e *Edge) unregister(c *conn) {
	if e.reg.remove(c) {
		e.releaseInterest(c)
	}
}

func (e *Edge) releaseInterest(c *conn) {
	for _, s := range c.subjects {
		e.interest.Release(s)
	}
}

// pinger sends pode.ping to connections idle for PingInterval. Connections
// that opened together idle together, so one tick may ping thousands: the
// writer pool writes them, rather than a goroutine (and its stack) each.
func (e *Edge) pinger() {
	defer e.loops.Done()
	tick := e.cfg.PingInterval / 4
	if tick < 10*time.Millisecond {
		tick = 10 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var buf []*conn
	w := newPoolWriter()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			idle := now.Add(-e.cfg.PingInterval).UnixNano()
			buf = e.reg.all(buf[:0])
			chunk := e.pool.chunk()
			for _, c := range buf {
				if c.format != formatSSE || c.lastSend.Load() > idle {
					continue
				}
				c.lastSend.Store(now.UnixNano()) // one ping per idle period, even before it is written
				if c.enqueuePooled(framePing) {
					chunk = append(chunk, c)
					if len(chunk) == chunkSize {
						e.pool.hand(chunk, w)
						chunk = e.pool.chunk()
					}
				}
			}
			e.pool.hand(chunk, w)
			clear(buf)
		}
	}
}

// watchSlowConsumers counts NATS slow-consumer errors on the edge's
// subscriptions, keeping any error handler already installed.
func (e *Edge) watchSlowConsumers() {
	prev := e.nc.Opts.AsyncErrorCB
	e.nc.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) && e.interest.Owns(sub) {
			e.m.slowConsumers.Inc()
			if e.cfg.History != nil {
				go e.resyncAll(causeSlowConsumer)
			}
			if e.warn.allow("slow_consumer") {
				e.log.Warn("NATS subscription fell behind; messages were dropped", "subject", sub.Subject)
			}
		}
		if prev != nil {
			prev(nc, sub, err)
		}
	})
}

// watchReconnects replays every connection after the NATS connection comes
// back: core subscriptions miss everything published while it was away.
func (e *Edge) watchReconnects() {
	prev := e.nc.Opts.ReconnectedCB
	e.nc.SetReconnectHandler(func(nc *nats.Conn) {
		e.resyncAll(causeReconnect)
		if prev != nil {
			prev(nc)
		}
	})
}

// loadHistory opens the history stream if needed and refreshes its state.
// A new epoch (the stream was deleted and created again) moves every
// connection to the newest position with a herald.gap event.
func (e *Edge) loadHistory() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := e.hist.Load()
	if h == nil {
		var err error
		if h, err = broker.OpenHistory(ctx, e.nc, e.subj, *e.cfg.History); err != nil {
			if e.warn.allow("history") {
				e.log.Warn("history stream not available; retrying", "err", err)
			}
			return
		}
		e.hist.Store(h)
	}
	st, err := h.State(ctx)
	if err != nil {
		if e.warn.allow("history") {
			e.log.Warn("history stream state not available; retrying", "err", err)
		}
		return
	}
	e.noteSeq(st.LastSeq)
	e.stateOK.Store(time.Now().UnixNano())
	if prev := e.hstate.Swap(&st); prev != nil && prev.Epoch != st.Epoch {
		e.log.Warn("history stream was recreated; clients continue from its newest position", "epoch", st.Epoch)
		e.seq.Store(st.LastSeq)
		for _, c := range e.reg.all(nil) {
			c.mu.Lock()
			c.startGap = gapEpoch
			c.mu.Unlock()
			if c.beginResync() {
				e.resync(c, causeGap)
			}
		}
	}
}

// stateFlights coalesces the stream-state reads of connecting clients.
// Each caller waits for a read that is sent after it asked (never one
// already in flight), so the answer reflects everything stored before its
// subscriptions reached NATS; many callers share one read.
type stateFlights struct {
	mu      sync.Mutex
	next    *stateFlight // guarded by mu; the read the next callers wait for
	running bool         // guarded by mu; a goroutine is sending reads
}

type stateFlight struct {
	done chan struct{}
	st   broker.HistoryState
	err  error
}

// stateAfterSubscribe returns the stream state as of a moment after the
// caller's subscriptions were sent. The read goes over the edge's NATS
// connection after them, so it also confirms them. It falls back to the
// last known state (possibly behind the head) when the stream cannot be
// read, and returns nil when nothing is known.
func (e *Edge) stateAfterSubscribe() *broker.HistoryState {
	if st, err := e.freshState(); err == nil {
		return st
	}
	return e.cachedState()
}

// freshState reads the stream state with a request sent after the call
// (shared with every caller waiting at the same time).
func (e *Edge) freshState() (*broker.HistoryState, error) {
	h := e.hist.Load()
	if h == nil {
		return nil, broker.ErrNoHistory
	}
	e.flights.mu.Lock()
	f := e.flights.next
	if f == nil {
		f = &stateFlight{done: make(chan struct{})}
		e.flights.next = f
	}
	if !e.flights.running {
		e.flights.running = true
		go e.runStateFlights(h)
	}
	e.flights.mu.Unlock()
	select {
	case <-f.done:
	case <-time.After(flushTimeout + time.Second):
		return nil, broker.ErrNoHistory
	}
	if f.err != nil {
		return nil, f.err
	}
	return &f.st, nil
}

func (e *Edge) runStateFlights(h *broker.History) {
	for {
		e.flights.mu.Lock()
		f := e.flights.next
		e.flights.next = nil
		if f == nil {
			e.flights.running = false
			e.flights.mu.Unlock()
			return
		}
		e.flights.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		f.st, f.err = h.State(ctx)
		cancel()
		if f.err == nil {
			e.noteSeq(f.st.LastSeq)
			e.stateOK.Store(time.Now().UnixNano())
		} else if e.warn.allow("state") {
			e.log.Warn("history stream state not available for new connections; they start from the last known position", "err", f.err)
		}
		close(f.done)
	}
}

// cachedState is the last known stream state with the newest sequence the
// edge has seen, or nil.
func (e *Edge) cachedState() *broker.HistoryState {
	st := e.historyState()
	if st == nil {
		return nil
	}
	c := *st
	c.LastSeq = max(c.LastSeq, e.seq.Load())
	return &c
}

// keepHistory refreshes the stream state every second.
func (e *Edge) keepHistory() {
	defer e.loops.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.loadHistory()
		}
	}
}

// rateLimiter lets one log line of each kind through per interval.
type rateLimiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
}

func (r *rateLimiter) allow(kind string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.last == nil {
		r.last = map[string]time.Time{}
	}
	if t, ok := r.last[kind]; ok && now.Sub(t) < r.every {
		return false
	}
	r.last[kind] = now
	return true
}
