package edge

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/herald-push/herald/pkg/broker"
)

// Resume and gap repair (history on).
//
// Every live message carries its stream position and the position of the
// previous message on the same subject. Each connection remembers the
// position of the last event it received or passed (resume.pos). A live
// message whose previous position is newer than pos proves the connection
// missed one: the connection enters replay. While it replays, live frames
// wait in a pending list; the replay reads the stream from pos+1 with the
// connection's filters, then the pending frames newer than pos are queued
// in order, so the switch from replay to live has no gap and no duplicate.
//
// A replay starts when a client resumes (Last-Event-ID), when a gap is
// seen, when the edge's NATS connection comes back, and when NATS reports
// that the edge's subscriptions fell behind. When the stream no longer
// holds pos+1, or the id is malformed or from another epoch, the client
// gets an explicit herald.gap event and continues live from the newest
// position; it is never sent a partial replay without that event.

// Resync causes (metric labels).
const (
	causeResume       = "resume"
	causeGap          = "gap"
	causeReconnect    = broker.ResyncReconnect
	causeSlowConsumer = broker.ResyncSlowConsumer
)

// herald.gap reasons.
const (
	gapExpired   = "expired"   // the position is older than the stream's retention
	gapMalformed = "malformed" // the Last-Event-ID is not a Herald event id, or is ahead of the stream
	gapEpoch     = "epoch"     // the id belongs to an earlier incarnation of the stream
	// gapUnavailable: the history could not be read, retry after retry,
	// while the stream answered: events may be missing.
	gapUnavailable = "unavailable"
)

// maxReplayFailures is how many times in a row a replay may fail while
// the stream answers before the client is told with herald.gap
// (unavailable) and goes live: a replay never stalls a client for good.
// Failures while the stream does not answer (NATS unreachable) do not
// count: the replay waits for it.
const maxReplayFailures = 6

// EventGap is the event type that tells a client its history cannot be
// filled: reload state from the application, then continue.
const EventGap = "herald.gap"

var errConnClosed = errors.New("edge: connection closed")

// resume is a connection's place in the history stream, guarded by
// conn.mu. Only with history on (on).
type resume struct {
	on          bool
	pos         uint64         // position of the last event this conn received or passed
	baseline    bool           // pos is meaningful (false until the edge knew the stream position)
	replaying   bool           // live frames wait in pending
	replayer    bool           // a replay goroutine runs for this conn
	pending     []pendingFrame // live frames held during a replay
	pendingLost bool           // pending overflowed: replay again instead of using it
	closeLater  bool           // a producer close arrived during a replay
	startGap    string         // a herald.gap reason to send before anything else
	// hold is where a herald.gap moves the connection: the newest position
	// it was brought up to when its replay began. Everything after hold
	// is either held in pending or still to be replayed, so a gap never
	// skips an event published after the client was told it is connected.
	hold uint64
}

// pendingFrame is a live frame held while a replay runs.
type pendingFrame struct {
	seq, prev uint64
	frame     []byte
}

// What accept decides for a live frame.
type acceptance uint8

const (
	acceptDeliver acceptance = iota // queue it now (pos moved to it)
	acceptHold                      // a replay runs: held in pending
	acceptDup                       // a replay delivered it already
	acceptGap                       // it shows a missed event: held, and a replay must start
)

// accept decides what happens to a live frame at seq whose subject's
// previous position is prev. max bounds the pending list; processed is the
// position of the last message the fan-out finished (a gap's hold).
func (r *resume) accept(seq, prev uint64, frame []byte, max int, processed uint64) acceptance {
	switch {
	case r.replaying:
		if len(r.pending) >= max {
			clear(r.pending)
			r.pending, r.pendingLost = r.pending[:0], true
		} else {
			r.pending = append(r.pending, pendingFrame{seq: seq, prev: prev, frame: frame})
		}
		return acceptHold
	case !r.baseline:
		r.pos, r.baseline = seq, true
	case seq <= r.pos:
		return acceptDup
	case prev > r.pos:
		r.replaying, r.hold = true, processed
		r.pending = append(r.pending[:0], pendingFrame{seq: seq, prev: prev, frame: frame})
		return acceptGap
	default:
		r.pos = seq
	}
	return acceptDeliver
}

// place sets where a starting connection begins in history and returns the
// id to put on its pode.open ("" for none), and whether a replay (resume
// or gap event) must run. st is the stream state read after the
// connection's subscriptions reached NATS, so a new connection starts
// exactly at the head: it is sent nothing older, and misses nothing newer.
// Without a state (the stream cannot be read) the live frames that arrived
// meanwhile go out in order and the first of them becomes the baseline.
func (c *conn) place(st broker.HistoryState, known bool) (openID string, replay bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &c.res
	if !known {
		for _, p := range r.pending {
			if !c.appendLocked(p.frame) {
				break // a queue too small for what arrived while starting: the rest is repaired live
			}
			r.pos, r.baseline = p.seq, true
		}
		clear(r.pending)
		r.pending, r.replaying = r.pending[:0], false
		return "", false
	}
	r.baseline, r.hold = true, st.LastSeq
	if c.lastID == "" {
		r.pos = st.LastSeq
		return broker.FormatEventID(st.Epoch, r.pos, ""), false
	}
	p, err := broker.ParsePosition(c.lastID)
	switch {
	case err != nil:
		r.startGap, r.pos = gapMalformed, st.LastSeq
	case p.Epoch != st.Epoch:
		r.startGap, r.pos = gapEpoch, st.LastSeq
	case p.Seq > st.LastSeq:
		// A position the stream never reached (or lost: a one-replica
		// node that lost its tail): what comes next has lower positions.
		r.startGap, r.pos = gapMalformed, st.LastSeq
	default:
		r.pos = p.Seq
	}
	return "", true
}

// closeAt applies a producer's close at stream position seq, in stream
// order (seq is 0 without history).
func (c *conn) closeAt(seq uint64) {
	c.mu.Lock()
	if r := &c.res; r.on {
		if r.replaying {
			r.closeLater = true
			c.mu.Unlock()
			return
		}
		if r.baseline && seq <= r.pos {
			c.mu.Unlock()
			return // a close this connection already passed in a replay
		}
		r.pos = max(r.pos, seq)
	}
	c.mu.Unlock()
	c.close(ReasonClosed)
}

// pass moves the connection past position seq without delivering.
func (c *conn) pass(seq uint64) {
	c.mu.Lock()
	c.res.pos = max(c.res.pos, seq)
	c.mu.Unlock()
}

// beginResync puts an open connection into replay; it reports whether the
// caller must start the replay (false when one is already running). hold
// is the newest position the connection has been brought up to: the last
// message the fan-out finished.
func (c *conn) beginResync(hold uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &c.res
	if c.out.state != stateOpen || !r.baseline || r.replaying {
		return false
	}
	r.replaying, r.hold = true, hold
	return true
}

// resyncAll replays every connection, e.g. after NATS reconnected.
func (e *Edge) resyncAll(cause string) {
	for _, c := range e.reg.all(nil) {
		if c.beginResync(e.processed.Load()) {
			e.resync(c, cause)
		}
	}
}

// newEpoch moves every connection to the new stream st with a herald.gap
// event: positions of the old stream are void. A replay already running
// sends it before it goes live.
func (e *Edge) newEpoch(st broker.HistoryState) {
	for _, c := range e.reg.all(nil) {
		c.mu.Lock()
		r := &c.res
		start := c.out.state == stateOpen && r.baseline
		if start {
			r.startGap, r.pos, r.hold = gapEpoch, st.LastSeq, st.LastSeq
			start = !r.replaying
			r.replaying = true
		}
		c.mu.Unlock()
		if start {
			e.resync(c, causeGap)
		}
	}
}

// resync starts the replay of a connection already marked replaying,
// unless one is running: a connection has at most one replay at a time.
func (e *Edge) resync(c *conn, cause string) {
	c.mu.Lock()
	if c.res.replayer {
		c.mu.Unlock()
		return
	}
	c.res.replayer = true
	c.mu.Unlock()
	e.m.resyncs.WithLabelValues(cause).Inc()
	go e.replay(c)
}

// replay fills a connection from history, then switches it to live. Each
// attempt takes one of the edge's replay slots, released while it waits to
// retry.
func (e *Edge) replay(c *conn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.done:
		case <-e.stop:
		case <-ctx.Done():
		}
		cancel()
	}()

	backoff := 100 * time.Millisecond
	failures := 0
	for {
		select {
		case e.replays <- struct{}{}:
		case <-ctx.Done():
			c.replayEnded()
			return
		}
		err := e.replayOnce(ctx, c)
		<-e.replays
		if err == nil {
			live, err := c.goLive()
			if err != nil || live {
				return
			}
			failures = 0
			continue // a gap inside the frames that arrived meanwhile
		}
		if errors.Is(err, errConnClosed) || ctx.Err() != nil {
			c.replayEnded()
			return
		}
		if e.hist.Ready() == nil {
			failures++ // the stream answers, yet the replay fails
		}
		if failures >= maxReplayFailures {
			e.log.Warn("replay from history keeps failing; the client is told with herald.gap", "name", c.name, "clientId", c.id, "err", err)
			c.setGap(gapUnavailable)
			failures = 0
		} else if e.warn.Allow("replay") {
			e.log.Warn("replay from history failed; retrying", "name", c.name, "clientId", c.id, "err", err)
		}
		select {
		case <-ctx.Done():
			c.replayEnded()
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// replayEnded marks that no replay runs for the connection (it closed).
func (c *conn) replayEnded() {
	c.mu.Lock()
	c.res.replayer = false
	c.mu.Unlock()
}

// setGap makes the next replay round start with a herald.gap event.
func (c *conn) setGap(reason string) {
	c.mu.Lock()
	c.res.startGap = reason
	c.mu.Unlock()
}

// replayOnce sends a pending gap event, then reads the stream from the
// connection's position to its head.
func (e *Edge) replayOnce(ctx context.Context, c *conn) error {
	// One coalesced state read serves all the replays that start together
	// (a reconnect storm), instead of one STREAM.INFO each. It must be
	// fresh: a stale oldest position could hide expired events.
	st, err := e.hist.Fresh()
	if err != nil {
		return err
	}
	c.mu.Lock()
	r := &c.res
	gap, pos, hold := r.startGap, r.pos, r.hold
	c.mu.Unlock()
	switch {
	case gap != "":
	case pos > st.LastSeq:
		gap = gapMalformed // a position the stream never reached, or lost
	case pos+1 < st.FirstSeq:
		gap = gapExpired
	}
	if gap != "" {
		// The gap moves the connection to hold, the newest position it
		// was brought up to, never past it: what came after is held in
		// pending or replayed next. It never moves a valid position back.
		target := min(hold, st.LastSeq)
		if pos <= st.LastSeq && gap != gapEpoch {
			target = max(target, pos)
		}
		if err := e.sendGap(c, gap, st.Epoch, target); err != nil {
			return err
		}
		if gap == gapUnavailable {
			return nil // the history cannot be read: go live
		}
		pos = target
	}
	return e.hist.Replay(ctx, c.addr(), pos+1, st.LastSeq, func(m broker.Message) error {
		return e.replayOne(c, st.Epoch, m)
	})
}

// replayOne queues one stored message if it is an event for c; otherwise
// the connection passes it.
func (e *Edge) replayOne(c *conn, epoch string, m broker.Message) error {
	switch {
	case m.Kind == broker.KindInvalid:
		e.drop(m.Reject, "stored message cannot be delivered", "seq", m.Seq, "err", m.Err)
	case m.Kind != broker.KindEvent, !c.matches(m.Addr),
		e.cfg.Levels.Check(c.name, m.Addr.Group != "", m.Addr.ClientID != "") != nil:
	default:
		if frame := e.encode(c.format, broker.FormatEventID(epoch, m.Seq, m.Event.ID), m.Event.Type, m.Event.Data); frame != nil {
			return c.pushReplayed(m.Seq, frame)
		}
	}
	c.pass(m.Seq)
	return nil
}

// sendGap tells the client its history cannot be filled and moves it to
// position target.
func (e *Edge) sendGap(c *conn, reason, epoch string, target uint64) error {
	e.m.gaps.WithLabelValues(reason).Inc()
	c.mu.Lock()
	c.res.pos, c.res.startGap = target, ""
	c.mu.Unlock()
	if c.format == formatWSText {
		return nil // raw WebSocket messages have no event types to carry it
	}
	data, _ := json.Marshal(struct { // invalid UTF-8 in the echoed id becomes U+FFFD
		Reason string `json:"reason"`
		From   string `json:"from,omitempty"`
	}{reason, c.lastID})
	return c.pushReplayed(target, encodeEvent(c.format, broker.FormatEventID(epoch, target, ""), EventGap, data))
}

// goLive queues the frames that arrived during the replay, in order,
// waiting for room as a replay does, and switches the connection to live
// delivery. It reports false when those frames show another gap (or
// overflowed): the caller replays again.
func (c *conn) goLive() (bool, error) {
	var timer *time.Timer
	defer stopTimer(&timer)
	n := 0
	defer func() { c.e.m.deliveries.Add(float64(n)) }()
	for {
		c.mu.Lock()
		r := &c.res
		if c.out.state != stateOpen {
			r.replayer = false
			c.mu.Unlock()
			return true, nil
		}
		if r.pendingLost || r.startGap != "" {
			r.pendingLost = false // replay again: a gap event waits (the stream was recreated), or what arrived meanwhile overflowed
			c.mu.Unlock()
			return false, nil
		}
		for len(r.pending) > 0 && r.pending[0].seq <= r.pos {
			r.pending[0] = pendingFrame{}
			r.pending = r.pending[1:]
		}
		if len(r.pending) == 0 {
			r.pending = r.pending[:0]
			r.replaying = false
			r.replayer = false // with replaying, so a gap seen from now on starts a new replay
			closeLater := r.closeLater
			r.closeLater = false
			c.mu.Unlock()
			if closeLater {
				c.close(ReasonClosed)
			}
			return true, nil
		}
		p := r.pending[0]
		if p.prev > r.pos {
			c.mu.Unlock()
			return false, nil // another missed event
		}
		if p.frame == nil { // too large to deliver: passed
			r.pos = p.seq
			r.pending[0] = pendingFrame{}
			r.pending = r.pending[1:]
			c.mu.Unlock()
			continue
		}
		if c.roomLocked(len(p.frame)) && c.appendLocked(p.frame) {
			r.pos = p.seq
			r.pending[0] = pendingFrame{}
			r.pending = r.pending[1:]
			w := c.claimLocked(false)
			c.mu.Unlock()
			c.start(w, nil)
			n++
			continue
		}
		c.mu.Unlock()
		if err := c.waitRoom(&timer); err != nil {
			return true, err
		}
	}
}
