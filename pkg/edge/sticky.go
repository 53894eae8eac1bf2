package edge

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/herald-push/herald/pkg/broker"
)

// Keeping a clientId across reconnects (routes with KeepClientID: Pode.Web's).
//
// A browser's EventSource reconnects to the same URL and sends nothing of
// its own but Last-Event-ID, so a Pode.Web page used to come back with a
// new clientId, and what was sent to its old one while it was away was
// lost. A connection that keeps its clientId is given a last event id
// that proves which clientId it owns:
//
//	~<base64url(clientId as shown to it)>~<position>
//
// (<position> is the history position, "<epoch>:<seq>"; empty without
// history). Reconnecting with it, the client is given that clientId again
// (it replaces the old connection if that one is still open anywhere) and
// resumes from the position, so the events sent to its clientId meanwhile
// are replayed like those sent to its name and group. The clientId must
// pass the same checks as one given in ?clientId=: with signing on it is
// the signed form and must verify (strict signing: from the same
// User-Agent and IP); with signing off, anyone who knows a clientId may
// already claim it with ?clientId=, and nothing more is trusted here. A
// claim that does not verify is not refused (EventSource gives up for good
// on an error status): the client gets a new clientId, as before, and the
// refusal is counted (herald_edge_kept_client_ids_total{result="refused"}).
//
// The fan-out stays encode-once. Event frames are shared by every
// connection and carry the shared position id ("<epoch>:<seq>"). After a
// batch that moved the connection's position, its writer appends one
// small frame of its own that holds only an id line:
//
//	id: ~<base64url(clientId)>~<epoch>:<seq>\r\n\r\n
//
// An id line followed by a blank line sets EventSource's last event id
// without dispatching an event (WHATWG HTML, "dispatch the event": the
// last event ID is set before an empty data buffer returns), so the page
// sees every event with the shared id (e.lastEventId is unchanged) and
// reconnects with the proof. The frame is built when the writer takes the
// queue (outbox.go's take and takeOpen call stampLocked): once per write
// batch, not per event, so a backlog written at once costs one, in a
// buffer of the connection's own that is reused (no allocation once a
// connection has received its first event). Its cost per delivery is
// measured by BenchmarkFanoutKeepClientID.

// stickyMark starts and ends the clientId part of a kept id. base64url
// never contains it, and a Herald position never starts with it.
const stickyMark = '~'

// sticky is the state of a connection that keeps its clientId, guarded by
// conn.mu.
type sticky struct {
	prefix  string // "~<base64url(clientId)>~"
	stamped uint64 // the history position last written with the prefix
	opened  bool   // the first batch (the one with pode.open) was taken
	buf     []byte // the last id-only frame, reused once no batch holds it
}

func newSticky(shown string) *sticky {
	return &sticky{prefix: string(stickyMark) + base64.RawURLEncoding.EncodeToString([]byte(shown)) + string(stickyMark)}
}

var errNotSticky = errors.New("not a kept-clientId event id")

// parseSticky splits a kept id into the clientId it claims and the
// position that follows.
func parseSticky(lastID string) (clientID, position string, err error) {
	rest, ok := strings.CutPrefix(lastID, string(stickyMark))
	if !ok {
		return "", "", errNotSticky
	}
	enc, position, ok := strings.Cut(rest, string(stickyMark))
	if !ok {
		return "", "", errNotSticky
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(b) == 0 {
		return "", "", errNotSticky
	}
	return string(b), position, nil
}

// openID is the id of a kept connection's pode.open, given the id it
// would have otherwise (position): the proof and that position. A
// connection that resumes (or is told of a gap) has no position of its
// own yet: its pode.open carries the position the client presented, so
// that a client that loses the connection before the replay starts
// presents it again rather than a position it has not reached.
func (c *conn) openID(position string) string {
	if c.sticky == nil {
		return position
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.res.on && position != "" {
		c.sticky.stamped = c.res.pos
	}
	if c.res.on && position == "" {
		position = c.lastID
	}
	return c.sticky.prefix + position
}

// stampLocked appends, after a batch whose event frames move a kept
// connection's last event id, the frame that sets it to the proof and the
// connection's position (with history: when the position moved since the
// last stamp; without, only the proof). Only event frames (they start with
// their id line) count: pode.open, which leads the first batch, already
// carries the proof, and pings carry no id. c.mu is held.
func (c *conn) stampLocked(batch [][]byte) [][]byte {
	s := c.sticky
	if s == nil || len(batch) == 0 {
		return batch
	}
	frames := batch
	if !s.opened {
		s.opened, frames = true, batch[1:]
	}
	carries := false
	for _, f := range frames {
		if bytes.HasPrefix(f, idLine) {
			carries = true
			break
		}
	}
	if !carries {
		return batch
	}
	id := s.prefix
	if c.res.on {
		var epoch string
		if c.e.hist != nil {
			epoch = c.e.hist.Epoch()
		}
		if !c.res.baseline || c.res.pos == s.stamped || epoch == "" {
			return batch
		}
		s.stamped = c.res.pos
		id += broker.FormatEventID(epoch, c.res.pos, "")
	}
	// The previous frame's bytes are free once it was written: a writer
	// takes the queue only after its previous batch is written, or puts
	// back what a full socket left, which then is in this batch.
	f := s.buf[:0]
	if need := len(idLine) + len(id) + 4; cap(f) < need || holds(batch, s.buf) {
		f = make([]byte, 0, need)
	}
	f = append(f, idLine...)
	f = append(f, id...)
	f = append(f, "\r\n\r\n"...)
	s.buf = f
	return append(batch, f)
}

// holds reports whether one of the frames of batch is buf's bytes.
func holds(batch [][]byte, buf []byte) bool {
	if len(buf) == 0 {
		return false
	}
	for _, b := range batch {
		if len(b) > 0 && &b[0] == &buf[0] {
			return true
		}
	}
	return false
}

var idLine = []byte("id: ")

// keepIdentity is identify for a route whose clients keep their clientId:
// a Last-Event-ID that claims a clientId is split into the claim and the
// position; the claim is taken as if given in ?clientId= (an explicit
// ?clientId= wins), and when it does not pass, the client gets a new
// clientId instead of an error. The connection then writes kept ids.
func (e *Edge) keepIdentity(r *http.Request, name, group, offered, lastID string) (*conn, int, string) {
	claimed, position, err := parseSticky(lastID)
	if err == nil {
		lastID = position
	} else {
		claimed = ""
	}
	if offered != "" {
		claimed = ""
	}
	var c *conn
	status, reason := 0, ""
	if claimed != "" {
		if validateIdentity(name, group, claimed) == nil {
			c, status, reason = e.identify(r, name, group, claimed, e.resumeFrom(lastID))
		}
		if c != nil {
			e.m.keptIDs.WithLabelValues(keptOK).Inc()
		} else {
			e.m.keptIDs.WithLabelValues(keptRefused).Inc()
			if e.warn.Allow("kept_id") {
				e.log.Info("a reconnect's claim to its clientId did not verify; a new clientId was assigned (logged once per interval)",
					"name", name, "reason", reason)
			}
		}
	}
	if c == nil {
		c, status, reason = e.identify(r, name, group, offered, e.resumeFrom(lastID))
	}
	if c != nil {
		c.sticky = newSticky(c.shown)
	}
	return c, status, reason
}

// Results of a claim to keep a clientId (metric labels).
const (
	keptOK      = "kept"
	keptRefused = "refused"
)
