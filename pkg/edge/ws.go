package edge

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/policy"
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
	g, denied := e.authorize(r, transportWS, policy.Identity{Name: name, Group: group, ClientID: offered})
	if denied != nil {
		e.adm.leave(place)
		e.refuseAuth(w, r, denied, transportWS)
		return
	}
	c, status, reason := e.identify(r, g.Name, g.Group, g.offered(e, r), e.resumeFrom(lastID))
	if c == nil {
		e.adm.leave(place)
		e.reject(w, status, "forbidden", reason)
		return
	}
	e.bind(c, g, r, transportWS)
	c.ipSlot = place

	// The connection is registered, and its NATS interest confirmed,
	// before the handshake answers: an event published once the client
	// sees its socket open reaches it. The 101 response is the first
	// frame of the connection's queue. Herald offers one subprotocol, so
	// the client gets herald.v1 exactly when it asked for it.
	c.kind = "ws"
	c.format = formatWSText
	if offersSubprotocol(r, WSSubprotocol) {
		c.format = formatWSEnvelope
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		e.adm.leave(place)
		e.reject(w, http.StatusInternalServerError, "internal", "the connection cannot be taken over")
		return
	}
	_ = nc.SetDeadline(time.Time{}) // the server's deadlines do not apply to the stream
	var early []byte                // what the client sent after its request, before the 101
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ = brw.Reader.Peek(n)
		early = append([]byte(nil), early...)
	}
	c.spawn = true
	ws := &wsState{c: c, nc: nc, raw: directConn(nc), peerClose: make(chan struct{})}
	ws.parser.limit = e.cfg.WSReadLimit
	c.ws = ws
	t := &netTransport{nc: nc, raw: ws.raw, timeout: e.cfg.WriteTimeout, ws: ws}
	c.t, c.direct = t, t.raw != nil
	head := wsResponseHead(r.Header.Get("Sec-WebSocket-Key"), c)
	first := func(openID string) []byte {
		if c.format != formatWSEnvelope {
			return head // Pode's raw signals have no hello message
		}
		return append(head, encodeEvent(formatWSEnvelope, openID, "pode.open", openData(c.shown, c.group, c.name))...)
	}
	replay, ok := e.start(c, first)
	if !ok {
		_ = t.write([][]byte{[]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nedge cannot subscribe right now; retry\n")})
		_ = nc.Close()
		return
	}
	// The socket joins the watcher before the connection begins: once it
	// has begun it may end at any moment, and the watcher's bookkeeping
	// must be in place by then.
	watched := ws.watch(e.gone, early)
	e.begin(c, replay)
	ws.startReading(watched)
}

// wsResponseHead is the 101 response that completes a handshake.
func wsResponseHead(key string, c *conn) []byte {
	b := make([]byte, 0, 384)
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = append(b, wsAccept(strings.TrimSpace(key))...)
	if c.format == formatWSEnvelope {
		b = append(b, "\r\nSec-WebSocket-Protocol: "+WSSubprotocol...)
	}
	b = append(b, "\r\nX-Pode-Signal-Client-Id: "...)
	b = append(b, c.shown...)
	b = append(b, "\r\nX-Pode-Signal-Name: "...)
	b = append(b, c.name...)
	if c.group != "" {
		b = append(b, "\r\nX-Pode-Signal-Group: "...)
		b = append(b, c.group...)
	}
	return append(b, "\r\n\r\n"...)
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
