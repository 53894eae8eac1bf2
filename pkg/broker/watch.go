package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/ratelog"
)

// HistoryWatch is an edge's view of the history stream. It opens the
// stream (retrying until it can), reads its state every second, shares
// fresh state reads among the callers that ask at the same time, knows the
// newest position the edge has seen, and replays a connection's events as
// decoded Messages. When the stream is deleted and created again (a new
// epoch) it tells its user, whose positions of the old one are void.
type HistoryWatch struct {
	nc       *nats.Conn
	subjects Subjects
	cfg      HistoryConfig
	o        WatchOptions
	log      *slog.Logger
	warn     *ratelog.Limiter

	hist    atomic.Pointer[History]      // nil until the stream is open
	openErr atomic.Pointer[string]       // why the last open failed; nil once open
	state   atomic.Pointer[HistoryState] // last state read
	seq     atomic.Uint64                // newest position seen (reads and live messages)
	stateOK atomic.Int64                 // unix nanoseconds of the last successful read

	flights stateFlights

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// WatchOptions configures a HistoryWatch. Zero values mean the defaults.
type WatchOptions struct {
	// Refresh is how often the stream state is read. Default 1 s.
	Refresh time.Duration
	// Stale is how long the stream may go unanswered before Ready fails.
	// Default 6 s.
	Stale time.Duration
	// ReadTimeout bounds one state read. Default 2 s.
	ReadTimeout time.Duration
	// OnEpoch is called, on the watch's goroutine, when the stream has
	// been created again since the last read; st is the new stream's state.
	OnEpoch func(st HistoryState)
	// Logger receives warnings (stream unavailable, recreated), at most one
	// of each kind per LogInterval, and a notice each time the stream is
	// opened (with the way replays read it). Default: none.
	Logger      *slog.Logger
	LogInterval time.Duration
}

// WatchHistory starts watching the history stream of cfg on nc: the first
// open and read happen before it returns, so a healthy edge is ready at
// once. Stop ends it.
func WatchHistory(nc *nats.Conn, s Subjects, cfg HistoryConfig, o WatchOptions) (*HistoryWatch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Refresh <= 0 {
		o.Refresh = time.Second
	}
	if o.Stale <= 0 {
		o.Stale = 6 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 2 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &HistoryWatch{nc: nc, subjects: s, cfg: cfg, o: o, log: log, warn: &ratelog.Limiter{Every: o.LogInterval},
		stop: make(chan struct{}), done: make(chan struct{})}
	w.refresh()
	go w.loop()
	return w, nil
}

// Stop ends the watch's goroutine. It is idempotent.
func (w *HistoryWatch) Stop() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

// Closed is closed once the watch has stopped.
func (w *HistoryWatch) Closed() <-chan struct{} { return w.done }

func (w *HistoryWatch) loop() {
	defer close(w.done)
	t := time.NewTicker(w.o.Refresh)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.refresh()
		}
	}
}

// refresh opens the stream if needed and reads its state.
func (w *HistoryWatch) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := w.hist.Load()
	if h == nil {
		var err error
		if h, err = OpenHistory(ctx, w.nc, w.subjects, w.cfg); err != nil {
			msg := err.Error()
			w.openErr.Store(&msg)
			if w.warn.Allow("open") {
				w.log.Warn("history stream not available; retrying", "err", err)
			}
			return
		}
		w.openErr.Store(nil)
		w.hist.Store(h)
		w.log.Info("history stream open", "stream", h.Name(), "server_version", w.nc.ConnectedServerVersion(), "replay_read", h.ReadMode())
	}
	st, err := h.State(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Deleted: open it again (creating it) on the next round; its new
		// epoch moves every connection on.
		w.hist.Store(nil)
	}
	if err != nil {
		if w.warn.Allow("state") {
			w.log.Warn("history stream state not available; retrying", "err", err)
		}
		return
	}
	w.noteRead(st)
	if prev := w.state.Swap(&st); prev != nil && prev.Epoch != st.Epoch {
		w.log.Warn("history stream was recreated; clients continue from its newest position", "epoch", st.Epoch)
		w.seq.Store(st.LastSeq)
		if w.o.OnEpoch != nil {
			w.o.OnEpoch(st)
		}
	}
}

func (w *HistoryWatch) noteRead(st HistoryState) {
	w.Note(st.LastSeq)
	w.stateOK.Store(time.Now().UnixNano())
}

// Ready returns nil when the stream is open and has answered within the
// Stale bound: a link to NATS that stopped answering (a black hole is not
// a disconnect) shows here within seconds.
func (w *HistoryWatch) Ready() error {
	if w.state.Load() == nil {
		if msg := w.openErr.Load(); msg != nil {
			return fmt.Errorf("%w: %s", errNotAvailable, *msg)
		}
		return errNotAvailable
	}
	if age := time.Since(time.Unix(0, w.stateOK.Load())); age > w.o.Stale {
		err := &staleError{age: age}
		if msg := w.openErr.Load(); msg != nil {
			err.why = *msg
		}
		return err
	}
	return nil
}

var errNotAvailable = errors.New("history stream not available")

type staleError struct {
	age time.Duration
	why string // the last open's error, if the stream is being reopened
}

func (e *staleError) Error() string {
	msg := "history stream has not answered for " + e.age.Round(time.Second).String()
	if e.why != "" {
		msg += ": " + e.why
	}
	return msg
}

// Open reports whether the stream has been opened.
func (w *HistoryWatch) Open() bool { return w.hist.Load() != nil }

// Epoch returns the epoch of the last state read, "" before the first.
func (w *HistoryWatch) Epoch() string {
	if st := w.state.Load(); st != nil {
		return st.Epoch
	}
	return ""
}

// Note raises the newest position the edge knows of (from a live message).
func (w *HistoryWatch) Note(seq uint64) {
	for {
		cur := w.seq.Load()
		if seq <= cur || w.seq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// Newest is the newest position the edge knows of.
func (w *HistoryWatch) Newest() uint64 { return w.seq.Load() }

// Known returns the last state read, with the newest position the edge
// has seen since; false before the first read.
func (w *HistoryWatch) Known() (HistoryState, bool) {
	st := w.state.Load()
	if st == nil {
		return HistoryState{}, false
	}
	c := *st
	c.LastSeq = max(c.LastSeq, w.seq.Load())
	return c, true
}

// Fresh reads the stream state with a request sent after the call, so the
// answer reflects everything stored before the caller's earlier requests
// reached NATS (the read also confirms the caller's subscriptions). Every
// caller waiting at the same time shares one read.
func (w *HistoryWatch) Fresh() (HistoryState, error) {
	h := w.hist.Load()
	if h == nil {
		return HistoryState{}, ErrNoHistory
	}
	f := w.flights.join(w, h)
	select {
	case <-f.done:
	case <-time.After(w.o.ReadTimeout + time.Second):
		return HistoryState{}, ErrNoHistory
	}
	return f.st, f.err
}

// stateFlights coalesces fresh state reads. Each caller waits for a read
// that is sent after it asked (never one already in flight), so many
// callers share one read.
type stateFlights struct {
	mu      sync.Mutex
	next    *stateFlight // guarded by mu; the read the next callers wait for
	running bool         // guarded by mu; a goroutine is sending reads
}

type stateFlight struct {
	done chan struct{}
	st   HistoryState
	err  error
}

// join returns the read the caller waits for, starting the reader when
// none runs.
func (fl *stateFlights) join(w *HistoryWatch, h *History) *stateFlight {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	f := fl.next
	if f == nil {
		f = &stateFlight{done: make(chan struct{})}
		fl.next = f
	}
	if !fl.running {
		fl.running = true
		go fl.run(w, h)
	}
	return f
}

func (fl *stateFlights) run(w *HistoryWatch, h *History) {
	for {
		fl.mu.Lock()
		f := fl.next
		fl.next = nil
		if f == nil {
			fl.running = false
			fl.mu.Unlock()
			return
		}
		fl.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), w.o.ReadTimeout)
		f.st, f.err = h.State(ctx)
		cancel()
		if f.err == nil {
			w.noteRead(f.st)
		} else if w.warn.Allow("fresh") {
			w.log.Warn("history stream state not available for new connections; they start from the last known position", "err", f.err)
		}
		close(f.done)
	}
}

// Replay calls fn, in stream order, for every stored event a connection
// with address a may receive (see Subjects.ReplayFilters), from position
// from (inclusive) up to at least upTo, decoded as the feed decodes live
// messages. Stored messages that cannot be used come as KindInvalid
// messages with their Seq, so the caller can step over them. Some
// messages target other clients of the name; the caller checks each.
func (w *HistoryWatch) Replay(ctx context.Context, a Address, from, upTo uint64, fn func(Message) error) error {
	h := w.hist.Load()
	if h == nil {
		return ErrNoHistory
	}
	return h.Replay(ctx, from, upTo, w.subjects.ReplayFilters(a), func(s Stored) error {
		m := w.subjects.decodeEvent(s.Msg, false)
		m.Seq, m.Prev = s.Seq, 0
		return fn(m)
	})
}
