package edge

import (
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
)

// dispatch is the fan-out loop. One goroutine reads every NATS message in
// the order the server sent it, so events and closes for a connection keep
// their order whichever subjects they arrived on. It only queues frames;
// the writer pool writes them (see writers.go).
func (e *Edge) dispatch() {
	defer e.loops.Done()
	var buf []*conn
	for {
		select {
		case <-e.stop:
			return
		case m := <-e.msgs:
			// Batch only when behind: with nothing else waiting, writers
			// get a message's connections as soon as they are queued; with
			// a backlog, the next messages are queued first and each
			// connection is written once for the whole batch.
			e.batching = len(e.msgs) > 0
			buf = e.deliver(m, buf[:0])
			clear(buf)
			if e.batching {
				size := len(m.Data)
			more:
				for range dispatchBatch - 1 {
					if size >= dispatchBatchBytes {
						break
					}
					select {
					case m := <-e.msgs:
						size += len(m.Data)
						buf = e.deliver(m, buf[:0])
						clear(buf)
					default:
						break more
					}
				}
				e.batching = false
			}
			e.flushKicks()
		}
	}
}

// deliver routes one NATS message: it finds the matching connections,
// checks the broadcast level, encodes the frame once and queues the same
// bytes to every connection. buf is scratch space, returned for reuse.
func (e *Edge) deliver(m *nats.Msg, buf []*conn) []*conn {
	e.m.received.Inc()
	if e.subj.IsSysConn(m.Subject) {
		return e.replaced(m, buf)
	}
	addr, err := e.live.ParseEvent(m.Subject)
	if err != nil {
		e.drop("bad_subject", "message on a malformed subject", "subject", m.Subject, "err", err)
		return buf
	}
	history := e.cfg.History != nil
	var seq, last uint64
	if history {
		var ok bool
		if seq, last, ok = broker.LiveSequence(m.Header); !ok {
			e.drop("no_sequence", "live message without a stream sequence", "subject", m.Subject)
			return buf
		}
		e.noteSeq(seq)
	}
	ev, control := broker.DecodeEvent(m)
	switch control {
	case "":
	case broker.ControlClose:
		buf = e.reg.match(addr, buf)
		for _, c := range buf {
			if history {
				c.offerClose(seq)
			} else {
				c.close(ReasonClosed)
			}
		}
		return buf
	default:
		e.drop("bad_control", "unknown Herald-Control value", "subject", m.Subject, "control", control)
		return buf
	}

	// Producers on raw NATS bypass the SDK's level check, so the edge
	// enforces it too. There is nobody to return an error to: the message
	// is dropped for every connection, counted, and logged once per interval.
	if !addr.AllNames() {
		if err := e.cfg.Levels.Check(addr.Name, addr.Group != "", addr.ClientID != ""); err != nil {
			e.drop("broadcast_level", "message violates the broadcast level", "subject", m.Subject, "err", err)
			return buf
		}
	}
	buf = e.reg.match(addr, buf)
	if len(buf) == 0 {
		return buf
	}
	if len(ev.Data)+len(ev.ID)+len(ev.Type) > e.cfg.QueueBytes {
		e.drop("too_large", "event larger than a connection queue", "subject", m.Subject, "bytes", len(ev.Data))
		return buf
	}
	id := ev.ID
	if history {
		if st := e.historyState(); st != nil {
			id = broker.FormatEventID(st.Epoch, seq, ev.ID)
		}
	}
	var frames [numFormats][]byte // each format encoded once, on first use
	n := 0
	for _, c := range buf {
		if addr.AllNames() && e.cfg.Levels.Check(c.name, addr.Group != "", addr.ClientID != "") != nil {
			continue // an all-names send skips names whose level forbids it
		}
		f := frames[c.format]
		if f == nil {
			f = encodeEvent(c.format, id, ev.Type, ev.Data)
			frames[c.format] = f
		}
		var queued bool
		if history {
			queued = c.offer(seq, last, f, true)
		} else {
			c.mu.Lock()
			queued = c.enqueueLocked(f, true)
		}
		if queued {
			n++
		}
		if !e.batching && len(e.kicks) >= chunkSize {
			e.flushKicks() // a large fan-out: the pool starts writing while the rest is queued
		}
	}
	e.m.deliveries.Add(float64(n))
	return buf
}

// replaced handles another edge's announcement of a new connection with
// a name and clientId: the older connection here is closed.
func (e *Edge) replaced(m *nats.Msg, buf []*conn) []*conn {
	name, id, err := e.subj.ParseSysConn(m.Subject)
	if err != nil || broker.HeaderValue(m.Header, broker.HeaderControl) != controlReplace {
		e.drop("bad_control", "malformed connection notice", "subject", m.Subject)
		return buf
	}
	token := broker.HeaderValue(m.Header, headerConn)
	since, _ := strconv.ParseInt(broker.HeaderValue(m.Header, headerSince), 10, 64)
	buf = e.reg.match(broker.Address{Name: name, ClientID: id}, buf)
	for _, c := range buf {
		if c.token != token && (c.since < since || (c.since == since && c.token < token)) {
			c.close(ReasonReplaced)
		}
	}
	return buf
}

// drop counts a message that reaches no connection and logs it once per
// interval for its reason.
func (e *Edge) drop(reason, msg string, args ...any) {
	e.m.dropped.WithLabelValues(reason).Inc()
	if e.warn.allow(reason) {
		e.log.Warn(msg+" (dropped; logged once per interval)", args...)
	}
}

// A dispatch batch: at most this many NATS messages, or bytes of data, are
// queued before the writers of the connections they reached are woken.
const (
	dispatchBatch      = 256
	dispatchBatchBytes = 256 << 10
)

// flushKicks hands the connections queued to since the last flush to the
// writer pool, in chunks.
func (e *Edge) flushKicks() {
	if len(e.kicks) == 0 {
		return
	}
	chunk := e.pool.chunk()
	for i, c := range e.kicks {
		c.mu.Lock()
		c.kickPending = false
		start := len(c.q) > 0 && c.kickLocked()
		c.mu.Unlock()
		e.kicks[i] = nil
		if !start {
			continue
		}
		if !c.direct {
			go c.drainFn() // the pool cannot write this transport without blocking
			continue
		}
		chunk = append(chunk, c)
		if len(chunk) == chunkSize {
			e.pool.hand(chunk, e.self)
			chunk = e.pool.chunk()
		}
	}
	e.kicks = e.kicks[:0]
	e.pool.hand(chunk, e.self)
}
