package edge

import (
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
)

// dispatch is the fan-out loop. One goroutine reads every NATS message in
// the order the server sent it, so events and closes for a connection keep
// their order whichever subjects they arrived on.
func (e *Edge) dispatch() {
	defer e.loops.Done()
	var buf []*conn
	for {
		select {
		case <-e.stop:
			return
		case m := <-e.msgs:
			buf = e.deliver(m, buf[:0])
			clear(buf)
		}
	}
}

// deliver routes one NATS message: it finds the matching connections,
// checks the broadcast level, encodes the frame once and queues the same
// bytes to every connection. buf is scratch space, returned for reuse.
func (e *Edge) deliver(m *nats.Msg, buf []*conn) []*conn {
	e.m.received.Inc()
	addr, err := e.subj.ParseEvent(m.Subject)
	if err != nil {
		e.drop("bad_subject", "message on a malformed subject", "subject", m.Subject, "err", err)
		return buf
	}
	ev, control := broker.DecodeEvent(m)
	switch control {
	case "":
	case broker.ControlClose:
		buf = e.reg.match(addr, buf)
		for _, c := range buf {
			c.close(ReasonClosed)
		}
		return buf
	case controlReplace:
		token := broker.HeaderValue(m.Header, headerConn)
		since, _ := strconv.ParseInt(broker.HeaderValue(m.Header, headerSince), 10, 64)
		buf = e.reg.match(addr, buf)
		for _, c := range buf {
			if c.token != token && (c.since < since || (c.since == since && c.token < token)) {
				c.close(ReasonReplaced)
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
	var frames [numFormats][]byte // each format encoded once, on first use
	n := 0
	for _, c := range buf {
		if addr.AllNames() && e.cfg.Levels.Check(c.name, addr.Group != "", addr.ClientID != "") != nil {
			continue // an all-names send skips names whose level forbids it
		}
		f := frames[c.format]
		if f == nil {
			f = encodeEvent(c.format, ev.ID, ev.Type, ev.Data)
			frames[c.format] = f
		}
		if c.enqueue(f) {
			n++
		}
	}
	e.m.deliveries.Add(float64(n))
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
