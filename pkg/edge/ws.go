package edge

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// WebSocket connections (PODE-WIRE.md §7). They share the identity model,
// registry, subjects, policy, queue and fan-out of SSE connections; only
// the transport and the frame format differ:
//
//   - default: each event is one text message holding the raw data, as
//     Pode's Send-PodeSignal writes it;
//   - subprotocol "herald.v1": each event is {"id","event","data"}, and
//     the first message is pode.open with the connection's identity (and,
//     with history on, its position as the id).
//
// A lastEventId query parameter resumes after that event id exactly as
// SSE's Last-Event-ID does (history on); it is useful with herald.v1,
// whose messages carry the ids.
//
// The writer is the connection's on-demand writer (conn.drain); one reader
// goroutine per connection handles client messages (ws_inbound.go) and
// notices the client leaving.

// WSSubprotocol is the subprotocol that selects the envelope format.
const WSSubprotocol = "herald.v1"

// WSRoute is the WebSocket route on the edge's main handler; the name is
// "/" followed by the rest of the path ("/ws/response-times" is
// "/response-times").
const WSRoute = "/ws/{path...}"

// wsHandler upgrades requests on WSRoute.
func (e *Edge) wsHandler(w http.ResponseWriter, r *http.Request) {
	e.serveWS(w, r, "/"+r.PathValue("path"))
}

// WSHandler returns the Pode-compatible WebSocket handler, for a dedicated
// listener: every path upgrades and the name is the URL path exactly, so
// browser code written for Pode (new WebSocket("ws://host:8091/"), name
// "/") works unchanged. group and clientId query parameters are honoured
// as on WSRoute, with the same signing rules. Requests that are not
// WebSocket upgrades get 426.
func (e *Edge) WSHandler() http.Handler {
	return BodyDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.serveWS(w, r, r.URL.Path)
	}), e.cfg.BodyTimeout)
}

// serveWS checks a WebSocket handshake, upgrades it and starts the
// connection. Refusals never upgrade: 426 for a plain HTTP request, 403 for
// a foreign origin or a clientId that does not verify, 400 for a bad
// identity. A draining edge, like one over its limits, upgrades and closes
// at once with 1013 (see limits.go).
func (e *Edge) serveWS(w http.ResponseWriter, r *http.Request, name string) {
	if !isUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		e.reject(w, http.StatusUpgradeRequired, "upgrade_required",
			"this endpoint speaks WebSocket: connect with a WebSocket client (GET with Upgrade: websocket)")
		return
	}
	if status, reason := checkHandshake(r); status != 0 {
		code := "bad_request"
		switch status {
		case http.StatusUpgradeRequired:
			code = "upgrade_required"
		case http.StatusMethodNotAllowed:
			code = "method"
			w.Header().Set("Allow", http.MethodGet)
		default:
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		e.reject(w, status, code, reason)
		return
	}
	if !originAllowed(r, e.cfg.WSOriginPatterns) {
		e.reject(w, http.StatusForbidden, "origin", "origin not allowed")
		return
	}
	if e.draining.Load() {
		e.refuseWS(w, r, refuseDraining)
		return
	}
	q := r.URL.Query()
	group, offered, lastID := q.Get("group"), q.Get("clientId"), q.Get("lastEventId")
	if err := validateIdentity(name, group, offered); err != nil {
		e.reject(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	place, refused := e.adm.admit(remoteIP(r))
	if refused != "" {
		e.refuseWS(w, r, refused)
		return
	}
	c, status, reason := e.identify(r, name, group, offered, e.resumeFrom(lastID))
	if c == nil {
		e.adm.leave(place)
		e.reject(w, status, "forbidden", reason)
		return
	}
	c.ipSlot = place

	h := w.Header()
	h.Set("X-Pode-Signal-Client-Id", c.shown)
	h.Set("X-Pode-Signal-Name", c.name)
	if c.group != "" {
		h.Set("X-Pode-Signal-Group", c.group)
	}
	// The connection is registered, and its NATS interest confirmed,
	// before the handshake answers: an event published once the client
	// sees its socket open reaches it. The writer is held until the
	// socket is ours. Herald offers one subprotocol, so the client gets
	// herald.v1 exactly when it asked for it.
	c.kind = "ws"
	c.format = formatWSText
	if offersSubprotocol(r, WSSubprotocol) {
		c.format = formatWSEnvelope
	}
	c.spawn = true
	t := &wsTransport{c: c, timeout: e.cfg.WriteTimeout}
	c.t = t
	first := func(openID string) []byte {
		if c.format != formatWSEnvelope {
			return nil // Pode's raw signals have no hello message
		}
		return encodeEnvelope(openID, "pode.open", openData(c.shown, c.group, c.name))
	}
	replay, ok := e.start(c, first)
	if !ok {
		e.reject(w, http.StatusServiceUnavailable, "unavailable", "edge cannot subscribe right now; retry")
		return
	}

	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		Subprotocols:   []string{WSSubprotocol},
		OriginPatterns: e.cfg.WSOriginPatterns, // checked above too; kept as a second line
	})
	if err != nil {
		// Accept has answered (400 for a malformed handshake, 405 for a
		// method other than GET).
		e.m.rejections.WithLabelValues("bad_request").Inc()
		if hw.nc != nil {
			_ = hw.nc.Close()
		}
		c.abort(ReasonGone)
		return
	}
	_ = hw.nc.SetDeadline(time.Time{}) // the server's deadlines do not apply to the stream
	ws.SetReadLimit(int64(e.cfg.WSReadLimit))
	t.mu.Lock()
	t.ws, t.nc = ws, hw.nc
	t.mu.Unlock()
	e.begin(c, replay)
	t.startPings(e.cfg.PingInterval)
	go t.readLoop()
}

// checkHandshake checks everything websocket.Accept checks of an upgrade
// request, so that the connection is refused before it has any effect
// (registering replaces a live connection with the same clientId):
// HTTP/1.1 GET, version 13 and one Sec-WebSocket-Key of 16 bytes. It
// returns the status and reason of a refusal, or 0.
func checkHandshake(r *http.Request) (int, string) {
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return http.StatusUpgradeRequired, "WebSocket upgrades need HTTP/1.1"
	}
	if r.Method != http.MethodGet {
		return http.StatusMethodNotAllowed, "a WebSocket handshake is a GET request"
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return http.StatusBadRequest, "unsupported WebSocket version (only 13 is supported)"
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, "a WebSocket handshake needs exactly one Sec-WebSocket-Key"
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return 0, ""
}

// offersSubprotocol reports whether the handshake lists protocol.
func offersSubprotocol(r *http.Request, protocol string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == protocol {
				return true
			}
		}
	}
	return false
}

// isUpgrade reports whether r asks for a WebSocket upgrade.
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// originAllowed is the Cross-Site WebSocket Hijacking check, the same as
// websocket.Accept's: no Origin header (not a browser), the request's own
// host, or a match of one of patterns (path.Match, case-insensitive,
// against the origin's host, or "scheme://host" for patterns with "://").
// An Origin that does not parse, or "null", is refused.
func originAllowed(r *http.Request, patterns []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(r.Host, u.Host) {
		return true
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, err := path.Match(strings.ToLower(p), strings.ToLower(target)); ok && err == nil {
			return true
		}
	}
	return false
}

// hijackWriter lets websocket.Accept hijack the connection through it and
// keeps the socket, on which the transport sets its deadlines.
type hijackWriter struct {
	http.ResponseWriter
	nc net.Conn
}

// Hijack hijacks the underlying connection and remembers it.
func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.nc = nc
	return nc, brw, err
}

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// wsTransport writes a connection's frames as WebSocket text messages.
// Deadlines are set on the socket itself, so writes need no per-message
// context (and allocate nothing for one).
type wsTransport struct {
	c       *conn
	ws      *websocket.Conn
	nc      net.Conn // the hijacked socket under ws
	timeout time.Duration

	mu     sync.Mutex
	ping   *time.Timer // guarded by mu; keep-alive timer
	closed bool        // guarded by mu; close was called: no more pings
}

var _ transport = (*wsTransport)(nil)

// write sends each frame as one text message; the batch must be written
// within the write timeout.
func (t *wsTransport) write(bufs [][]byte) error {
	if err := t.nc.SetWriteDeadline(time.Now().Add(t.timeout)); err != nil {
		return err
	}
	ctx := context.Background()
	for _, b := range bufs {
		if err := t.ws.Write(ctx, websocket.MessageText, b); err != nil {
			return err // a missed deadline wraps os.ErrDeadlineExceeded: closed as slow
		}
	}
	// Clear the deadline: pings and the close handshake write too.
	return t.nc.SetWriteDeadline(time.Time{})
}

// end runs the close handshake with the reason's close code and its code
// as the reason text, bounded by the write timeout.
func (t *wsTransport) end(reason CloseReason) error {
	_ = t.nc.SetDeadline(time.Now().Add(t.timeout))
	return t.ws.Close(websocket.StatusCode(reason.WSCode), reason.Code)
}

// close closes the socket at once.
func (t *wsTransport) close() {
	t.mu.Lock()
	t.closed = true
	if t.ping != nil {
		t.ping.Stop()
	}
	ws, nc := t.ws, t.nc
	t.mu.Unlock()
	if ws == nil {
		return // the handshake never completed
	}
	// Closing the socket first unblocks any read or write in progress,
	// including a close handshake waiting on an unresponsive client.
	_ = nc.Close()
	_ = ws.CloseNow()
}

// startPings sends a WebSocket ping after each period of every without a
// successful write. A ping that gets no pong within the write timeout
// closes the connection (reason gone).
func (t *wsTransport) startPings(every time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.ping = time.AfterFunc(every, func() { t.keepAlive(every) })
}

func (t *wsTransport) keepAlive(every time.Duration) {
	idle := time.Since(time.Unix(0, t.c.lastSend.Load()))
	if idle >= every {
		ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
		err := t.ws.Ping(ctx)
		cancel()
		if err != nil {
			t.c.abort(ReasonGone)
			return
		}
		t.c.lastSend.Store(time.Now().UnixNano())
		idle = 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.ping.Reset(every - idle)
	}
}

// readLoop is the connection's reader: it hands each client message to
// handleInbound and ends the connection when the client leaves or breaks a
// limit. A close the edge starts itself (c.close) stops the loop: the
// close handshake then reads what is left.
func (t *wsTransport) readLoop() {
	c := t.c
	in := inboundState{}
	ctx := context.Background()
	for {
		typ, data, err := t.ws.Read(ctx)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				// The library has already sent close 1009.
				c.e.m.wsInbound.WithLabelValues(inboundTooBig).Inc()
				c.close(ReasonTooBig)
				return
			}
			c.abort(ReasonGone)
			return
		}
		if stop := c.e.handleInbound(c, &in, typ, data); stop {
			return
		}
	}
}
