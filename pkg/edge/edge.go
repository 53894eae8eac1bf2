package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/internal/ratelog"
	"github.com/herald-push/herald/pkg/broker"
)

// confirmTimeout bounds the wait for NATS to confirm a new connection's
// subscriptions.
const confirmTimeout = 2 * time.Second

// ErrShutdown is returned by Shutdown when its context ends before every
// connection has closed; the rest were closed forcibly.
var ErrShutdown = errors.New("edge: shutdown deadline passed; remaining connections closed forcibly")

// Edge serves SSE and WebSocket connections and fans the events it
// receives from NATS out to them. Everything NATS goes through the broker:
// the feed brings decoded messages in, the publisher sends, and the
// history watch knows the stream.
type Edge struct {
	cfg  Config
	log  *slog.Logger
	warn *ratelog.Limiter
	m    *metrics

	feed     *broker.Feed
	pub      *broker.Publisher
	hist     *broker.HistoryWatch // nil when history is off
	presence *broker.Presence     // cluster-wide presence and lifecycle events (presence.go)
	replays  chan struct{}        // slots for concurrent replays
	// processed is the stream position of the last message the fan-out
	// finished: a connection that starts a replay has been brought up to it.
	processed atomic.Uint64

	adm     *admission  // how many connections, how fast (limits.go)
	auth    *authorizer // who may connect (auth.go)
	locals  localSet    // Local connections, which the registry does not hold (local.go)
	tasks   *taskRoutes // async tasks (tasks.go); nil without task routes
	reg     *registry
	fan     *fanout // the feed's handler; its state is owned by the feed's goroutine
	pool    *writers
	gone    *goneWatcher // hijacked sockets' liveness, one goroutine for all
	handler http.Handler // the routes, behind the body deadline

	serial   atomic.Uint64
	draining atomic.Bool
	conns    sync.WaitGroup // one per open connection
	stop     chan struct{}  // closed by Shutdown: background loops end
	loops    sync.WaitGroup
	stopOnce sync.Once
}

// New returns an Edge that uses nc for all NATS traffic. logger and reg may
// be nil (no logging; a private registry).
func New(nc *broker.Conn, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Edge, error) {
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
	pub, err := broker.NewPublisher(nc, &broker.PublisherOptions{Prefix: cfg.SubjectPrefix, Levels: cfg.Levels,
		MaxDataBytes: cfg.MaxPublishBytes, Acked: cfg.History != nil})
	if err != nil {
		return nil, err
	}
	e := &Edge{
		cfg:     cfg,
		log:     logger.With("edge", cfg.EdgeID),
		warn:    &ratelog.Limiter{Every: cfg.LogInterval},
		pub:     pub,
		replays: make(chan struct{}, cfg.MaxReplays),
		adm:     newAdmission(cfg),
		reg:     newRegistry(),
		gone:    newGoneWatcher(),
		stop:    make(chan struct{}),
	}
	e.m, err = newMetrics(reg, func() float64 { return float64(e.feed.Subscriptions()) })
	if err != nil {
		return nil, fmt.Errorf("edge: metrics: %w", err)
	}
	// undo stops what New has started when a later step fails.
	undo := func(err error) (*Edge, error) {
		e.stopOnce.Do(func() { close(e.stop) })
		e.loops.Wait()
		e.stopTasks()
		if e.hist != nil {
			e.hist.Stop()
		}
		if e.feed != nil {
			e.feed.Stop()
		}
		e.auth.stop()
		if e.pool != nil {
			e.pool.close()
		}
		e.gone.close()
		return nil, err
	}
	if e.auth, err = newAuthorizer(nc, cfg); err != nil {
		return undo(err)
	}
	e.pool = newWriters(runtime.GOMAXPROCS(0), e.m)
	e.fan = newFanout(e)
	if e.feed, err = broker.NewFeed(nc, broker.FeedOptions{Prefix: cfg.SubjectPrefix, Live: cfg.History != nil}, e.fan); err != nil {
		return undo(err)
	}
	if cfg.History != nil {
		subjects := pub.Subjects()
		e.hist, err = broker.WatchHistory(nc, subjects, *cfg.History, broker.WatchOptions{
			Logger: e.log, LogInterval: cfg.LogInterval, OnEpoch: e.newEpoch})
		if err != nil {
			return undo(err)
		}
	}
	if err := e.startTasks(nc, reg); err != nil {
		return undo(fmt.Errorf("edge: async tasks: %w", err))
	}
	if err := e.startPresence(nc, reg); err != nil {
		return undo(err)
	}
	e.handler = BodyDeadline(e.routes(), cfg.BodyTimeout)
	e.loops.Add(1)
	go e.pinger()
	return e, nil
}

// Handler returns the edge's routes: the SSE routes, POST /publish,
// GET /healthz and GET /readyz. Every request must send its body within
// BodyTimeout; streams clear that deadline when they start.
func (e *Edge) Handler() http.Handler { return e.handler }

// BodyDeadline gives each request a read deadline of d, so that a request
// that stalls in its body (or in the rest of a body nobody reads) is cut
// off instead of holding a goroutine and a socket. Handler applies it
// already; wrap routes served beside the edge (metrics, pages) with it.
// Streams started inside h clear it.
func BodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d)) // a writer without deadlines keeps none
		h.ServeHTTP(w, r)
	})
}

func (e *Edge) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(e.cfg.SSEPath, e.sseHandler("", e.cfg.KeepClientID))
	for _, r := range e.cfg.ExtraSSERoutes {
		mux.Handle(r.Pattern, e.sseHandler(r.Name, r.KeepClientID || e.cfg.KeepClientID))
	}
	mux.HandleFunc(WSRoute, e.wsHandler)
	mux.HandleFunc("/publish", e.handlePublish)
	e.registerTasks(mux)
	e.presenceRoutes(mux)
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

// Ready returns nil when the edge can serve: NATS is connected, the
// history stream (when on) has answered within seconds, and the edge is
// not draining.
func (e *Edge) Ready() error {
	if e.draining.Load() {
		return errors.New("draining")
	}
	if err := e.feed.Connected(); err != nil {
		return err
	}
	if e.hist != nil {
		return e.hist.Ready()
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
	conns := e.allConns(nil)
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
		for _, c := range e.allConns(conns[:0]) {
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
	e.stopTasks()
	e.stopPresence() // after every connection's disconnect event
	if e.hist != nil {
		e.hist.Stop()
	}
	e.auth.stop()
	e.feed.Stop() // the fan-out hands the pool nothing more
	e.pool.close()
	e.gone.close()
	return err
}

// register indexes c, takes NATS interest for it, and closes any connection
// it replaces, here and (through NATS) on every other edge.
func (e *Edge) register(c *conn) error {
	if c.authz != nil && c.authz.local != nil {
		return e.registerLocal(c) // not addressable: no index, no interest
	}
	if err := e.feed.Join(c.addr()); err != nil {
		return err
	}
	e.conns.Add(1)
	if old := e.reg.add(c); old != nil {
		old.close(ReasonReplaced)
		e.feed.Leave(old.addr())
	}
	// Other edges close a connection with this name and clientId. An id the
	// edge assigned is new, so nobody holds it: no notice.
	if c.chosen {
		if err := e.pub.AnnounceConn(c.name, c.id, c.token, c.since); err != nil {
			e.log.Warn("could not announce connection to other edges", "name", c.name, "err", err)
		}
	}
	e.armExpiry(c)
	e.announced(c) // its connect event, numbered after it was indexed
	return nil
}

// unregister removes c from the index and releases its NATS interest.
func (e *Edge) unregister(c *conn) {
	if c.authz != nil && e.unbind(c) {
		return // a Local connection: never indexed
	}
	if e.reg.remove(c) {
		e.feed.Leave(c.addr())
	}
}

// pinger sends pode.ping to SSE connections idle for PingInterval, and a
// ping frame to WebSocket ones, which must answer within WriteTimeout or
// are closed as gone. Connections that opened together idle together, so
// one tick may ping thousands: the writer pool writes them, rather than a
// goroutine (and its stack) each.
func (e *Edge) pinger() {
	defer e.loops.Done()
	tick := max(e.cfg.PingInterval/4, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var buf []*conn
	h := e.pool.newHand()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			idle := now.Add(-e.cfg.PingInterval).UnixNano()
			unanswered := now.Add(-e.cfg.WriteTimeout).UnixNano()
			buf = e.allConns(buf[:0])
			for _, c := range buf {
				ping := framePing
				if c.ws != nil {
					if c.ws.overdue(unanswered) {
						c.abort(ReasonGone) // no pong within the write timeout
						continue
					}
					ping = frameWSPing
				}
				if c.lastSend.Load() > idle {
					continue
				}
				c.lastSend.Store(now.UnixNano()) // one ping per idle period, even before it is written
				if c.ws != nil {
					c.ws.pingSent.CompareAndSwap(0, now.UnixNano())
				}
				c.push(ping, h)
			}
			h.flush()
			clear(buf)
		}
	}
}
