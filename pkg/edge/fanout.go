package edge

import (
	"bytes"
	"unicode/utf8"

	"github.com/herald-push/herald/pkg/broker"
)

// fanout is the feed's handler: it routes every decoded message, in the
// order NATS sent it, to the matching connections. It only queues frames;
// the writer pool writes them (writers.go). Its fields are owned by the
// feed's goroutine.
type fanout struct {
	e     *Edge
	hand  *poolHand // hands connections to the writer pool
	kicks []*conn   // connections queued to since the last flush
	run   bool      // a run of several messages is being queued
	buf   []*conn   // scratch space for registry matches
}

var _ broker.FeedHandler = (*fanout)(nil)

func newFanout(e *Edge) *fanout {
	return &fanout{e: e, hand: e.pool.newHand()}
}

// Deliver routes a run of messages. With a run of several (the feed was
// behind), every message is queued before any connection is written, so
// that each connection is written once for the whole run; a single
// message's connections are handed to the pool as they fill chunks.
func (f *fanout) Deliver(run []broker.Message) {
	f.run = len(run) > 1
	for i := range run {
		f.deliver(&run[i])
		if run[i].Seq > 0 {
			f.e.processed.Store(run[i].Seq) // after every connection had its turn
		}
	}
	f.run = false
	f.flush()
}

// Resync repairs from history what NATS may have dropped.
func (f *fanout) Resync(cause string) {
	e := f.e
	if cause == broker.ResyncSlowConsumer {
		e.m.slowConsumers.Inc()
		if e.warn.Allow("slow_consumer") {
			e.log.Warn("NATS subscription fell behind; messages were dropped")
		}
	}
	if e.hist != nil {
		go e.resyncAll(cause)
	}
}

// deliver routes one message: it finds the matching connections, checks
// the broadcast level, encodes the frame once per format and queues the
// same bytes to every connection.
func (f *fanout) deliver(m *broker.Message) {
	e := f.e
	e.m.received.Inc()
	if e.hist != nil && m.Seq > 0 {
		e.hist.Note(m.Seq)
	}
	switch m.Kind {
	case broker.KindInvalid:
		e.drop(m.Reject, "message cannot be delivered", "err", m.Err)
		return
	case broker.KindReplace:
		f.replaced(m)
		return
	case broker.KindClose:
		f.buf = e.reg.match(m.Addr, f.buf[:0])
		for _, c := range f.buf {
			c.closeAt(m.Seq)
		}
		clear(f.buf)
		return
	}

	// Producers on raw NATS bypass the SDK's level check, so the edge
	// enforces it too. There is nobody to return an error to: the message
	// is dropped for every connection, counted, and logged once per interval.
	if !m.Addr.AllNames() {
		if err := e.cfg.Levels.Check(m.Addr.Name, m.Addr.Group != "", m.Addr.ClientID != ""); err != nil {
			e.drop("broadcast_level", "message violates the broadcast level", "name", m.Addr.Name, "err", err)
			return
		}
	}
	f.buf = e.reg.match(m.Addr, f.buf[:0])
	defer clear(f.buf)
	if len(f.buf) == 0 {
		return
	}
	ev := &m.Event
	if len(ev.Data)+len(ev.ID)+len(ev.Type) > e.maxFrame() {
		e.drop("too_large", "event larger than half a connection queue", "name", m.Addr.Name, "bytes", len(ev.Data))
		return
	}
	id := ev.ID
	if e.hist != nil {
		if epoch := e.hist.Epoch(); epoch != "" {
			id = broker.FormatEventID(epoch, m.Seq, ev.ID)
		}
	}
	var frames [numFormats][]byte // each format encoded once, on first use
	var tooLarge [numFormats]bool
	n := 0
	for _, c := range f.buf {
		if m.Addr.AllNames() && e.cfg.Levels.Check(c.name, m.Addr.Group != "", m.Addr.ClientID != "") != nil {
			continue // an all-names send skips names whose level forbids it
		}
		fr := frames[c.format]
		if fr == nil && !tooLarge[c.format] {
			fr = e.encode(c.format, id, ev.Type, ev.Data)
			frames[c.format], tooLarge[c.format] = fr, fr == nil
		}
		if fr == nil {
			c.pushLive(m.Seq, m.Prev, nil, f) // too large: the connection passes it
			continue
		}
		if c.pushLive(m.Seq, m.Prev, fr, f) {
			n++
		}
		if !f.run && len(f.kicks) >= chunkSize {
			f.flush() // a large fan-out: the pool starts writing while the rest is queued
		}
	}
	e.m.deliveries.Add(float64(n))
}

// maxFrame is the largest frame the edge queues: half a connection's
// queue, so that a client keeping up can always take it. A larger event
// could only be delivered by closing healthy clients as slow.
func (e *Edge) maxFrame() int { return e.cfg.QueueBytes / 2 }

// encode encodes an event for format f, live or replayed alike. It
// returns nil, counted as a too_large drop, when the frame is larger than
// maxFrame (SSE turns each line break of the data into a new data: line,
// so the frame can be several times the data). WebSocket text must be
// valid UTF-8: invalid bytes become U+FFFD, counted.
func (e *Edge) encode(f format, id, typ string, data []byte) []byte {
	if f != formatSSE && !utf8.Valid(data) {
		e.m.wsTextRepaired.Inc()
		data = bytes.ToValidUTF8(data, []byte("\uFFFD"))
	}
	fr := encodeEvent(f, id, typ, data)
	if len(fr) > e.maxFrame() {
		e.drop("too_large", "event frame larger than half a connection queue", "bytes", len(fr))
		return nil
	}
	return fr
}

// replaced handles another edge's announcement of a new connection with
// a name and clientId: the older connection here is closed.
func (f *fanout) replaced(m *broker.Message) {
	f.buf = f.e.reg.match(m.Addr, f.buf[:0])
	for _, c := range f.buf {
		if c.token != m.Conn && (c.since < m.Since || (c.since == m.Since && c.token < m.Conn)) {
			c.close(ReasonReplaced)
		}
	}
	clear(f.buf)
}

// flush hands the connections queued to since the last flush to the
// writer pool, in chunks.
func (f *fanout) flush() {
	for i, c := range f.kicks {
		f.kicks[i] = nil
		c.kick(f.hand)
	}
	f.kicks = f.kicks[:0]
	f.hand.flush()
}

// drop counts a message that reaches no connection and logs it once per
// interval for its reason.
func (e *Edge) drop(reason, msg string, args ...any) {
	e.m.dropped.WithLabelValues(reason).Inc()
	if e.warn.Allow(reason) {
		e.log.Warn(msg+" (dropped; logged once per interval)", args...)
	}
}
