package edge

import (
	"context"
	"errors"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// sseHandler turns a request into an SSE connection (PODE-WIRE.md §1).
// fixedName is used when the route pattern has no {name} wildcard; with
// keep, clients keep their clientId across reconnects (sticky.go).
func (e *Edge) sseHandler(fixedName string, keep bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			e.reject(w, http.StatusMethodNotAllowed, "method", "SSE connections are opened with GET or POST")
			return
		}
		if !acceptsEventStream(r.Header.Values("Accept")) {
			e.reject(w, http.StatusNotAcceptable, "not_acceptable",
				"SSE can only be configured on requests with an Accept header value of text/event-stream")
			return
		}
		place, ok := e.admitSSE(w, r)
		if !ok {
			return
		}
		c, denied := e.newConn(r, fixedName, keep)
		if c == nil {
			e.adm.leave(place)
			e.refuseAuth(w, r, denied, transportSSE)
			return
		}
		c.ipSlot = place
		e.serveSSE(w, r, c, streamSetup{})
	}
}

// streamSetup adapts a stream to its route (async tasks' streams, see
// tasks_sse.go); the zero value is a plain SSE connection.
type streamSetup struct {
	// openData replaces the data of pode.open; nil means
	// {"clientId","group","name"} of the connection.
	openData []byte
	// placed runs once the connection is registered and placed in the
	// stream, before its writer starts and before it goes live: what it
	// pushes follows pode.open, ahead of every live frame, and a close it
	// asks for ends the stream after what it pushed.
	placed func(c *conn)
}

// openFrame returns the connection's retry: line and pode.open at id.
func (s streamSetup) openFrame(e *Edge, c *conn, id string) []byte {
	if s.openData == nil {
		return openFrame(e.cfg.Retry.Milliseconds(), id, c.shown, c.group, c.name)
	}
	var b []byte
	if ms := e.cfg.Retry.Milliseconds(); ms > 0 {
		b = append(strconv.AppendInt(append(b, "retry: "...), ms, 10), "\r\n"...)
	}
	return appendSSE(b, id, "pode.open", s.openData)
}

// serveSSE serves a checked connection: on its hijacked socket for
// HTTP/1.x, otherwise inside net/http.
func (e *Edge) serveSSE(w http.ResponseWriter, r *http.Request, c *conn, s streamSetup) {
	if !e.cfg.NoHijack && r.ProtoMajor == 1 {
		if nc, _, err := http.NewResponseController(w).Hijack(); err == nil {
			e.serveHijacked(nc, c, s)
			return
		}
	}
	e.serveStream(w, r, c, s)
}

// newConn reads and checks the identity a request asks for, asks
// authorize (auth.go) who may connect, and applies the signing rules to
// the identity granted; with keep, a reconnect may keep the clientId its
// Last-Event-ID claims (sticky.go). On failure it returns a nil conn and
// the refusal.
func (e *Edge) newConn(r *http.Request, fixedName string, keep bool) (*conn, *denial) {
	name := r.PathValue("name")
	if name == "" {
		name = fixedName
	}
	group := r.PathValue("group")
	if group == "" {
		group = r.URL.Query().Get("group")
	}
	q := r.URL.Query()
	offered := q.Get("clientId")
	if err := validateIdentity(name, group, offered); err != nil {
		return nil, &denial{http.StatusBadRequest, "bad_request", err.Error()}
	}
	lastID := strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if lastID == "" {
		lastID = q.Get("lastEventId")
	}
	g, refused := e.authorize(r, transportSSE, policy.Identity{Name: name, Group: group, ClientID: offered})
	if refused != nil {
		return nil, refused
	}
	var c *conn
	var status int
	var reason string
	if keep {
		c, status, reason = e.keepIdentity(r, g.Name, g.Group, g.offered(e, r), lastID)
	} else {
		c, status, reason = e.identify(r, g.Name, g.Group, g.offered(e, r), e.resumeFrom(lastID))
	}
	if c == nil {
		code := "bad_request"
		if status == http.StatusForbidden {
			code = "forbidden"
		}
		return nil, &denial{status, code, reason}
	}
	e.bind(c, g, r, transportSSE)
	return c, nil
}

// maxResumeID bounds the Last-Event-ID a connection keeps: longer ones
// are no Herald position, and only their start is echoed in herald.gap.
const maxResumeID = 512

// resumeFrom is the position a client asks to resume after. Without
// history it is ignored. It is never refused: an id Herald cannot use
// becomes a herald.gap event with reason malformed, because a browser's
// EventSource gives up for good after a 4xx.
func (e *Edge) resumeFrom(lastID string) string {
	if e.hist == nil {
		return ""
	}
	if len(lastID) > maxResumeID {
		lastID = lastID[:maxResumeID]
	}
	return lastID
}

// validateIdentity checks the name, group and offered clientId a client
// asks for (SSE and WebSocket alike).
func validateIdentity(name, group, offered string) error {
	for _, check := range []error{policy.ValidateName(name), policy.ValidateGroup(group), policy.ValidateClientID(offered)} {
		if check != nil {
			return check
		}
	}
	return nil
}

// identify applies the signing rules to a validated identity and returns
// the connection for it: with no offered clientId one is assigned (and
// signed when signing is on); an offered one must verify when signing is
// on and must not look signed when it is off. On failure it returns a nil
// conn with the HTTP status (403) and a reason for the client. SSE and
// WebSocket connections share it, so both follow the same rules.
func (e *Edge) identify(r *http.Request, name, group, offered, lastID string) (*conn, int, string) {
	ua, ip := r.UserAgent(), remoteIP(r)
	var id, shown string
	switch {
	case offered == "":
		id = policy.NewClientID()
		shown = id
		if e.cfg.Signing.Enabled() {
			shown = e.cfg.Signing.Sign(id, ua, ip)
		}
	case e.cfg.Signing.Enabled():
		raw, err := e.cfg.Signing.Verify(offered, ua, ip)
		if err != nil {
			reason := "clientId signature does not verify"
			if errors.Is(err, policy.ErrNotSigned) {
				reason = "clientId must be signed (s:<id>.<signature>) when signing is on"
			} else if errors.Is(err, policy.ErrMalformedSigned) {
				reason = "clientId is not a well-formed signed id"
			}
			return nil, http.StatusForbidden, reason
		}
		id, shown = raw, offered
	case strings.HasPrefix(offered, policy.SignedPrefix):
		return nil, http.StatusForbidden, policy.ErrSignedWhileSigningOff.Error()
	default:
		id, shown = offered, offered
	}

	serial := e.serial.Add(1)
	now := time.Now().UnixNano()
	c := &conn{
		e:      e,
		token:  e.cfg.EdgeID + "-" + strconv.FormatUint(serial, 10),
		since:  now,
		name:   name,
		group:  group,
		gkey:   strings.ToLower(group),
		id:     id,
		shown:  shown,
		lastID: lastID,
		chosen: offered != "",
		done:   make(chan struct{}),
		space:  make(chan struct{}, 1),
	}
	c.res.on = e.hist != nil
	c.drainFn = c.drain
	c.lastSend.Store(now)
	return c, 0, ""
}

// remoteIP is the peer address as used in strict signing: "127.0.0.1", "::1".
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// acceptsEventStream reports whether an Accept header admits text/event-stream.
// Pode compares the whole value; Herald also takes it as one entry of a list.
func acceptsEventStream(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && mt == "text/event-stream" {
				return true
			}
		}
	}
	return false
}

// headers writes the SSE response head fields (all but the status line).
func (e *Edge) headers(h http.Header, c *conn, http1 bool) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	if http1 {
		h.Set("Connection", "keep-alive")
	}
	h.Set("X-Accel-Buffering", "no")
	if e.cfg.AllowAllOrigins {
		h.Set("Access-Control-Allow-Origin", "*")
	}
	h.Set("X-Pode-Sse-Client-Id", c.shown)
	h.Set("X-Pode-Sse-Name", c.name)
	if c.group != "" {
		h.Set("X-Pode-Sse-Group", c.group)
	}
}

// serveHijacked serves an HTTP/1.x stream on the hijacked socket: the
// response head, retry: and pode.open are its first frame, written once
// the connection is registered. The stream has no length and ends when the
// socket closes, as Pode's does. The handler goroutine (and its buffers) is
// released: the connection is left to its reader and on-demand writer.
func (e *Edge) serveHijacked(nc net.Conn, c *conn, s streamSetup) {
	_ = nc.SetDeadline(time.Time{})
	c.kind = "sse_h1"
	c.spawn = true
	t := &netTransport{nc: nc, raw: directConn(nc), timeout: e.cfg.WriteTimeout}
	c.t, c.direct = t, t.raw != nil

	h := http.Header{}
	e.headers(h, c, true)
	h.Set("Date", httpDate(time.Now()))
	head := make([]byte, 0, 640)
	head = append(head, "HTTP/1.1 200 OK\r\n"...)
	for _, k := range []string{"Content-Type", "Cache-Control", "Connection", "X-Accel-Buffering",
		"Access-Control-Allow-Origin", "X-Pode-Sse-Client-Id", "X-Pode-Sse-Name", "X-Pode-Sse-Group", "Date"} {
		if v := h.Get(k); v != "" {
			head = append(head, k...)
			head = append(head, ": "...)
			head = append(head, v...)
			head = append(head, "\r\n"...)
		}
	}
	head = append(head, "\r\n"...)
	first := func(openID string) []byte {
		return append(head, s.openFrame(e, c, c.openID(openID))...)
	}
	replay, ok := e.start(c, first)
	if !ok {
		_ = c.t.write([][]byte{[]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nedge cannot subscribe right now; retry\n")})
		_ = nc.Close()
		return
	}
	// Watched before the writer starts: a connection that ends at once (a
	// Local stream nobody answers) then finds its watch entry set, never
	// one being written.
	if !e.gone.watch(nc, c) {
		go c.readUntilGone(nc)
	}
	if s.placed != nil {
		s.placed(c)
	}
	e.begin(c, replay)
}

// serveStream serves the connection inside net/http (HTTP/2, or with
// hijacking off). The handler goroutine is the connection's writer.
func (e *Edge) serveStream(w http.ResponseWriter, r *http.Request, c *conn, s streamSetup) {
	// The body deadline does not apply to the stream: on HTTP/1.x net/http
	// reads the socket in the background, and a read that times out would
	// cancel the request.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	c.kind = "sse_h1"
	if r.ProtoMajor >= 2 {
		c.kind = "sse_h2"
	}
	c.wake = make(chan struct{}, 1)
	c.t = &streamTransport{w: w, rc: http.NewResponseController(w), timeout: e.cfg.WriteTimeout}
	e.headers(w.Header(), c, r.ProtoMajor == 1)
	replay, ok := e.start(c, func(openID string) []byte { return s.openFrame(e, c, c.openID(openID)) })
	if !ok {
		http.Error(w, "edge cannot subscribe right now; retry", http.StatusServiceUnavailable)
		return
	}
	if s.placed != nil {
		s.placed(c)
	}
	e.begin(c, replay)
	ctx := r.Context()
	for {
		select {
		case <-c.wake:
			c.drain()
		case <-ctx.Done():
			c.abort(ReasonGone)
		case <-c.done:
			return
		}
	}
}

// start registers a connection before the client learns it is connected:
// the writer is held while the connection is indexed and its NATS
// subscriptions are confirmed, so that an event published once the client
// sees pode.open (or the WebSocket handshake) reaches it. With history on,
// live frames wait meanwhile, and the connection is placed at the stream
// position read after its subscriptions (see place). first builds the
// first frame (the response head and pode.open, or nil) from the pode.open
// id. The caller releases the connection with begin once its transport is
// ready; replay tells begin whether a resume or a gap event must run. On
// failure nothing was registered.
func (e *Edge) start(c *conn, first func(openID string) []byte) (replay, ok bool) {
	c.hold()
	if c.res.on {
		c.mu.Lock()
		c.res.replaying = true // live frames wait until the connection is placed
		c.mu.Unlock()
	}
	if err := e.register(c); err != nil {
		e.log.Error("could not subscribe for connection", "name", c.name, "err", err)
		e.m.rejections.WithLabelValues("internal").Inc()
		e.adm.leave(c.ipSlot)
		return false, false
	}
	e.m.connects.WithLabelValues(c.kind).Inc()
	e.m.connections.WithLabelValues(c.kind).Inc()
	var openID string
	if c.res.on && e.hist.Open() {
		// The read is sent after the subscriptions, so it confirms them.
		st, err := e.hist.Fresh()
		known := err == nil
		if !known {
			st, known = e.hist.Known()
		}
		openID, replay = c.place(st, known)
	} else {
		if c.res.on {
			openID, replay = c.place(broker.HistoryState{}, false)
		}
		ctx, cancel := context.WithTimeout(context.Background(), confirmTimeout)
		err := e.feed.Confirm(ctx)
		cancel()
		if err != nil && e.warn.Allow("confirm") {
			e.log.Warn("NATS did not confirm new subscriptions; events right after connect may be missed", "err", err)
		}
	}
	if f := first(openID); f != nil && !c.first(f) {
		c.abort(ReasonSlow) // what queued while it started left no room for pode.open
	}
	e.log.Debug("connection opened", "name", c.name, "group", c.group, "clientId", c.id, "transport", c.kind)
	return replay, true
}

// begin releases a started connection's writer and switches it to live
// delivery: it runs the resume (or gap event) place asked for, or queues
// the live frames that arrived while it started.
func (e *Edge) begin(c *conn, replay bool) {
	c.release()
	if !c.res.on { // history off, or a Local connection
		return
	}
	if replay {
		e.resync(c, causeResume)
		return
	}
	if live, err := c.goLive(); !live && err == nil {
		e.resync(c, causeGap) // those frames show a missed event
	}
}

// reject answers a refused connection attempt with a plain-text reason.
func (e *Edge) reject(w http.ResponseWriter, status int, code, reason string) {
	e.m.rejections.WithLabelValues(code).Inc()
	http.Error(w, reason, status)
}

// dateCache holds the Date header value of the current second: formatting
// it for every connection was 6% of the edge's CPU in a connect storm.
var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	unix  int64
	value string
}

// httpDate returns now as an HTTP Date header value.
func httpDate(now time.Time) string {
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.unix == sec {
		return d.value
	}
	d := &cachedDate{unix: sec, value: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.value
}
