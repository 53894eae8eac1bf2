package edge

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/broker"
)

// Resume and gap repair (history on).
//
// Every live message carries its stream sequence and the sequence of the
// previous message on the same subject. Each connection remembers the
// sequence of the last event it received or passed (pos). A live message
// whose previous sequence is newer than pos proves the connection missed
// one: the connection enters replay. While it replays, live frames wait in
// a pending list; the replay reads the stream from pos+1 with the
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
	causeReconnect    = "reconnect"
	causeSlowConsumer = "slow_consumer"
)

// herald.gap reasons.
const (
	gapExpired   = "expired"   // the position is older than the stream's retention
	gapMalformed = "malformed" // the Last-Event-ID is not a Herald event id, or is ahead of the stream
	gapEpoch     = "epoch"     // the id belongs to an earlier incarnation of the stream
)

// EventGap is the event type that tells a client its history cannot be
// filled: reload state from the application, then continue.
const EventGap = "herald.gap"

var errConnClosed = errors.New("edge: connection closed")

// historyState is the last known stream state; nil until first loaded.
func (e *Edge) historyState() *broker.HistoryState { return e.hstate.Load() }

// noteSeq raises the edge's view of the newest stream sequence.
func (e *Edge) noteSeq(seq uint64) {
	for {
		cur := e.seq.Load()
		if seq <= cur || e.seq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// holdLive is called before a connection registers (history on): until its
// starting position is known, live frames wait in its pending list.
func (c *conn) holdLive() {
	c.replaying = true
}

// place sets where a started connection begins in history and returns the
// id to put on its pode.open ("" for none), and whether a replay (resume
// or gap event) must run. st is the stream state read after the
// connection's subscriptions reached NATS, so a new connection starts
// exactly at the head: it is sent nothing older, and misses nothing newer.
func (e *Edge) place(c *conn, st *broker.HistoryState) (openID string, replay bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st == nil {
		// Nothing is known of the stream: the live frames that arrived
		// meanwhile go out in order, the first live event becomes the
		// baseline, and history repairs nothing before it.
		for _, p := range c.pending {
			c.q = append(c.q, p.frame)
			c.qBytes += len(p.frame)
			c.pos, c.baseline = p.seq, true
		}
		clear(c.pending)
		c.pending = c.pending[:0]
		c.replaying = false
		return "", false
	}
	c.baseline = true
	if c.lastID == "" {
		c.pos = st.LastSeq
		return broker.FormatEventID(st.Epoch, c.pos, ""), false
	}
	p, err := broker.ParsePosition(c.lastID)
	switch {
	case err != nil:
		c.startGap, c.pos = gapMalformed, st.LastSeq
	case p.Epoch != st.Epoch:
		c.startGap, c.pos = gapEpoch, st.LastSeq
	default:
		c.pos = p.Seq
	}
	return "", true
}

// offer hands a positioned live frame to a connection (history on);
// deferKick as for enqueueLocked.
func (c *conn) offer(seq, last uint64, frame []byte, deferKick bool) bool {
	c.mu.Lock()
	switch {
	case c.state != stateOpen:
		c.mu.Unlock()
		return false
	case c.replaying:
		if len(c.pending) >= c.e.cfg.QueueMessages {
			clear(c.pending)
			c.pending, c.pendingLost = c.pending[:0], true
		} else {
			c.pending = append(c.pending, pendingFrame{seq: seq, last: last, frame: frame})
		}
		c.mu.Unlock()
		return true
	case !c.baseline:
		c.pos, c.baseline = seq, true
	case seq <= c.pos:
		c.mu.Unlock()
		return false // already delivered by a replay
	case last > c.pos:
		c.replaying = true
		c.pending = append(c.pending[:0], pendingFrame{seq: seq, last: last, frame: frame})
		c.mu.Unlock()
		c.e.resync(c, causeGap)
		return true
	default:
		c.pos = seq
	}
	return c.enqueueLocked(frame, deferKick)
}

// offerClose applies a producer's close in stream order.
func (c *conn) offerClose(seq uint64) {
	c.mu.Lock()
	if c.replaying {
		c.closeLater = true
		c.mu.Unlock()
		return
	}
	if c.baseline && seq <= c.pos {
		c.mu.Unlock()
		return // a close this connection already passed in a replay
	}
	c.pos = max(c.pos, seq)
	c.mu.Unlock()
	c.close(ReasonClosed)
}

// beginResync puts an open connection into replay; it reports whether the
// caller must start the replay (false when one is already running).
func (c *conn) beginResync() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen || c.replaying || !c.baseline {
		return false
	}
	c.replaying = true
	return true
}

// resyncAll replays every connection, e.g. after NATS reconnected.
func (e *Edge) resyncAll(cause string) {
	for _, c := range e.reg.all(nil) {
		if c.beginResync() {
			e.resync(c, cause)
		}
	}
}

// resync starts the replay of a connection already marked replaying,
// unless one is running: a connection has at most one replay at a time.
func (e *Edge) resync(c *conn, cause string) {
	c.mu.Lock()
	if c.replayer {
		c.mu.Unlock()
		return
	}
	c.replayer = true
	c.mu.Unlock()
	e.m.resyncs.WithLabelValues(cause).Inc()
	go e.replay(c)
}

// replay fills a connection from history, then switches it to live.
func (e *Edge) replay(c *conn) {
	select {
	case e.replays <- struct{}{}:
	case <-c.done:
		return
	case <-e.stop:
		return
	}
	defer func() { <-e.replays }()
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
	for {
		err := e.replayOnce(ctx, c)
		if err == nil {
			if c.goLive() {
				return
			}
			continue // a gap inside the frames that arrived meanwhile
		}
		if errors.Is(err, errConnClosed) || ctx.Err() != nil {
			return
		}
		if e.warn.allow("replay") {
			e.log.Warn("replay from history failed; retrying", "name", c.name, "clientId", c.id, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// replayOnce sends a pending gap event, or reads the stream from pos+1.
func (e *Edge) replayOnce(ctx context.Context, c *conn) error {
	h := e.hist.Load()
	if h == nil {
		return broker.ErrNoHistory
	}
	// One coalesced state read serves all the replays that start together
	// (a reconnect storm), instead of one STREAM.INFO each. It must be
	// fresh: a stale oldest position could hide expired events.
	stp, err := e.freshState()
	if err != nil {
		return err
	}
	st := *stp
	c.mu.Lock()
	gap, from := c.startGap, c.pos+1
	c.startGap = ""
	c.mu.Unlock()
	switch {
	case gap != "":
	case from < st.FirstSeq:
		gap = gapExpired
	case from > st.LastSeq+1:
		gap = gapMalformed // a position the stream never reached
	}
	if gap != "" {
		return e.sendGap(c, gap, st)
	}
	return h.Replay(ctx, from, st.LastSeq, e.filters(c), func(s broker.Stored) error {
		return e.replayOne(c, st.Epoch, s)
	})
}

// filters are the event subjects a connection receives, for replays.
func (e *Edge) filters(c *conn) []string {
	f := []string{e.subj.EventName(c.name), e.subj.EventClient(c.name, c.id), e.subj.EventAllNames()}
	if c.gkey != "" {
		f = append(f, e.subj.EventGroup(c.name, c.gkey))
	}
	return f
}

// matches reports whether an address targets c (Pode's rules).
func (c *conn) matches(a broker.Address) bool {
	if !a.AllNames() && a.Name != c.name {
		return false
	}
	if a.ClientID != "" && a.ClientID != c.id {
		return false
	}
	return a.Group == "" || strings.ToLower(a.Group) == c.gkey
}

// replayOne queues one stored message if it is an event for c.
func (e *Edge) replayOne(c *conn, epoch string, s broker.Stored) error {
	addr, err := e.subj.ParseEvent(s.Subject)
	ev, control := broker.DecodeEvent(s.Msg)
	if err != nil || control != "" || !c.matches(addr) ||
		e.cfg.Levels.Check(c.name, addr.Group != "", addr.ClientID != "") != nil {
		c.mu.Lock()
		c.pos = max(c.pos, s.Seq) // passed, not for this client
		c.mu.Unlock()
		return nil
	}
	frame := encodeEvent(c.format, broker.FormatEventID(epoch, s.Seq, ev.ID), ev.Type, ev.Data)
	return c.enqueueReplay(s.Seq, frame)
}

// sendGap tells the client its history cannot be filled and moves it to
// the newest position.
func (e *Edge) sendGap(c *conn, reason string, st broker.HistoryState) error {
	e.m.gaps.WithLabelValues(reason).Inc()
	pos := max(st.LastSeq, e.seq.Load())
	data, _ := json.Marshal(struct {
		Reason string `json:"reason"`
		From   string `json:"from,omitempty"`
	}{reason, c.lastID})
	if c.format == formatWSText {
		c.mu.Lock()
		c.pos = max(c.pos, pos)
		c.mu.Unlock()
		return nil // raw WebSocket messages have no event types to carry it
	}
	frame := encodeEvent(c.format, broker.FormatEventID(st.Epoch, pos, ""), EventGap, data)
	return c.enqueueReplay(pos, frame)
}

// enqueueReplay queues a replayed frame, waiting for room instead of
// closing the client as slow; a client that takes no frame for a whole
// write timeout is slow all the same.
func (c *conn) enqueueReplay(seq uint64, frame []byte) error {
	deadline := time.NewTimer(c.e.cfg.WriteTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if c.state != stateOpen {
			c.mu.Unlock()
			return errConnClosed
		}
		if len(c.q) == 0 || (len(c.q) < c.e.cfg.QueueMessages/2 && c.qBytes+len(frame) <= c.e.cfg.QueueBytes/2) {
			c.pos = max(c.pos, seq)
			c.q = append(c.q, frame)
			c.qBytes += len(frame)
			start := c.kickLocked()
			c.mu.Unlock()
			if start {
				go c.drainFn()
			}
			c.e.m.deliveries.Inc()
			return nil
		}
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-c.done:
			return errConnClosed
		case <-deadline.C:
			c.abort(ReasonSlow)
			return errConnClosed
		}
	}
}

// goLive queues the frames that arrived during the replay and switches the
// connection to live delivery. It reports false when those frames show
// another gap (or overflowed): the caller replays again.
func (c *conn) goLive() bool {
	c.mu.Lock()
	if c.state != stateOpen {
		c.replayer = false
		c.mu.Unlock()
		return true
	}
	if c.pendingLost {
		c.pendingLost = false
		c.mu.Unlock()
		return false
	}
	n := 0
	for i, p := range c.pending {
		if p.seq <= c.pos {
			continue
		}
		if p.last > c.pos {
			rest := copy(c.pending, c.pending[i:])
			clear(c.pending[rest:])
			c.pending = c.pending[:rest]
			c.mu.Unlock()
			c.e.m.deliveries.Add(float64(n))
			return false
		}
		c.pos = p.seq
		c.q = append(c.q, p.frame)
		c.qBytes += len(p.frame)
		n++
	}
	clear(c.pending)
	c.pending = c.pending[:0]
	c.replaying = false
	c.replayer = false // with replaying, so a gap seen from now on starts a new replay
	closeLater := c.closeLater
	start := len(c.q) > 0 && c.kickLocked()
	c.mu.Unlock()
	c.e.m.deliveries.Add(float64(n))
	if start {
		go c.drainFn()
	}
	if closeLater {
		c.close(ReasonClosed)
	}
	return true
}
