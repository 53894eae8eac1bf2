package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/pkg/broker"
)

// Who is connected: the edge's part in cluster-wide presence
// (broker.Presence answers the other edges from the registry and
// publishes the lifecycle events), its HTTP front end, and Pode.Web's
// sse-close route.
//
//	GET  /presence?name=&clientId=[&group=]           lookup  (publish token)
//	GET  /presence?name=[&group=][&after=][&limit=]   list    (publish token)
//	GET  /presence/check                              Pode's X-PODE-SSE-* check (publish token)
//	POST <route's ClosePattern>                       Pode.Web's sse-close (the page itself)

// startPresence starts the edge's presence (and the lifecycle stream when
// configured) and registers its gauges on reg.
func (e *Edge) startPresence(nc *broker.Conn, reg prometheus.Registerer) error {
	if e.cfg.LifecycleStream != nil && !e.openLifecycleStream(nc) {
		e.loops.Add(1)
		go e.lifecycleStream(nc)
	}
	p, err := broker.StartPresence(nc, broker.PresenceOptions{
		Prefix:      e.cfg.SubjectPrefix,
		Edge:        e.cfg.EdgeID,
		Source:      presenceSource{e.reg},
		Signing:     e.cfg.Signing,
		Heartbeat:   e.cfg.PresenceHeartbeat,
		LostAfter:   e.cfg.PresenceLostAfter,
		Timeout:     e.cfg.PresenceTimeout,
		NoLifecycle: e.cfg.NoLifecycle,
		Logger:      e.log.With("component", "presence"),
	})
	if err != nil {
		return err
	}
	e.presence = p
	if err := registerPresenceGauges(reg, func() float64 { return float64(len(p.Members())) },
		func() float64 { return float64(len(p.Watched())) }); err != nil {
		p.Stop()
		return err
	}
	return nil
}

// openLifecycleStream makes sure the lifecycle stream exists and reports
// whether it does: at start, so that the first connections' events are
// kept, when NATS is reachable.
func (e *Edge) openLifecycleStream(nc *broker.Conn) bool {
	s := *e.cfg.LifecycleStream
	if !nc.IsConnected() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	name, err := broker.EnsureLifecycleStream(ctx, nc, e.pub.Subjects(), s)
	cancel()
	if err != nil {
		e.log.Warn("cannot open the lifecycle stream yet; retrying", "err", err)
		return false
	}
	e.log.Info("lifecycle events kept in a stream", "stream", name, "max_age", s.MaxAge)
	return true
}

// lifecycleStream retries openLifecycleStream while NATS or JetStream
// cannot be reached (an edge starts without NATS and serves once it
// connects), until it succeeds or the edge stops.
func (e *Edge) lifecycleStream(nc *broker.Conn) {
	defer e.loops.Done()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 30*time.Second) {
		select {
		case <-e.stop:
			return
		case <-time.After(wait):
		}
		if e.openLifecycleStream(nc) {
			return
		}
	}
}

// stopPresence says goodbye (after every disconnect was published) and stops.
func (e *Edge) stopPresence() {
	e.presence.Bye()
	e.presence.Stop()
}

// info describes c for presence and lifecycle events.
func (c *conn) info() broker.ConnInfo {
	return broker.ConnInfo{Edge: c.e.cfg.EdgeID, Conn: c.token, Name: c.name, Group: c.group, ClientID: c.shown,
		Transport: c.kind, Since: time.Unix(0, c.since)}
}

// announced publishes a registered connection's connect event. The
// connection is indexed before the event is numbered (see
// broker.Presence's snapshots).
func (e *Edge) announced(c *conn) {
	info := c.info()
	if err := e.presence.Connected(&info); err != nil && e.warn.Allow("lifecycle") {
		e.log.Warn("could not publish a lifecycle event", "err", err)
	}
}

// retired publishes a closed connection's disconnect event.
func (e *Edge) retired(c *conn, reason CloseReason) {
	info := c.info()
	if err := e.presence.Disconnected(&info, reason.Code, time.Now()); err != nil && e.warn.Allow("lifecycle") {
		e.log.Warn("could not publish a lifecycle event", "err", err)
	}
}

// presenceSource answers for the edge's registry.
type presenceSource struct{ r *registry }

var _ broker.PresenceSource = presenceSource{}

func (s presenceSource) Lookup(name, id string, fn func(broker.ConnInfo)) {
	s.r.mu.RLock()
	var c *conn
	if ni := s.r.names[name]; ni != nil {
		c = ni.clients[id]
	}
	s.r.mu.RUnlock()
	if c != nil {
		fn(c.info())
	}
}

// Range copies the matching connections under the registry's lock and
// describes them outside it, so that a large listing never holds up
// registrations.
func (s presenceSource) Range(name, group string, fn func(broker.ConnInfo)) {
	var conns []*conn
	gkey := strings.ToLower(group)
	add := func(ni *nameIndex) {
		set := ni.conns
		if gkey != "" {
			set = ni.groups[gkey]
		}
		for c := range set {
			conns = append(conns, c)
		}
	}
	s.r.mu.RLock()
	if name == "" {
		for _, ni := range s.r.names {
			add(ni)
		}
	} else if ni := s.r.names[name]; ni != nil {
		add(ni)
	}
	s.r.mu.RUnlock()
	for _, c := range conns {
		fn(c.info())
	}
}

func (s presenceSource) Len() int { return s.r.len() }

// presenceRoutes adds the presence endpoints and the routes' close routes.
func (e *Edge) presenceRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /presence", e.handlePresence)
	mux.HandleFunc("GET /presence/check", e.handlePresenceCheck)
	for _, r := range e.cfg.ExtraSSERoutes {
		if r.ClosePattern != "" {
			mux.HandleFunc(r.ClosePattern, e.closeHandler(r.Name))
		}
	}
}

// tokenOK checks the publish token, answering 401 (or 404 when the edge
// has no tokens) itself.
func (e *Edge) tokenOK(w http.ResponseWriter, r *http.Request) bool {
	if len(e.cfg.PublishTokens) == 0 {
		http.NotFound(w, r)
		return false
	}
	if !e.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		writeJSONError(w, http.StatusUnauthorized, "missing or wrong publish token")
		return false
	}
	return true
}

// handlePresence answers GET /presence: a lookup with clientId, a list
// without.
func (e *Edge) handlePresence(w http.ResponseWriter, r *http.Request) {
	if !e.tokenOK(w, r) {
		return
	}
	q := r.URL.Query()
	ctx := r.Context()
	var (
		reply any
		err   error
	)
	if id := q.Get("clientId"); id != "" {
		e.m.presenceRequests.WithLabelValues("lookup").Inc()
		reply, err = e.presence.Lookup(ctx, broker.LookupRequest{Name: q.Get("name"), ClientID: id, Group: q.Get("group")})
	} else {
		e.m.presenceRequests.WithLabelValues("list").Inc()
		req := broker.ListRequest{Name: q.Get("name"), Group: q.Get("group"), After: q.Get("after")}
		if l := q.Get("limit"); l != "" {
			if req.Limit, err = strconv.Atoi(l); err != nil || req.Limit <= 0 {
				writeJSONError(w, http.StatusBadRequest, "limit: want a number from 1 to "+strconv.Itoa(broker.MaxListLimit))
				return
			}
		}
		reply, err = e.presence.List(ctx, req)
	}
	if err != nil {
		writeBrokerError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

// Headers a backend sets on GET /presence/check besides Pode's: the
// User-Agent and IP of the request it received, which strict signing
// binds a signed clientId to.
const (
	HeaderCheckUserAgent = "X-Herald-User-Agent"
	HeaderCheckIP        = "X-Herald-Client-Ip"
)

// checkRequest reads Pode's identity headers from h: the SSE ones, or the
// signal ones when only they are present.
func checkRequest(h http.Header) broker.CheckRequest {
	if h.Get("X-Pode-Sse-Client-Id") == "" && h.Get("X-Pode-Signal-Client-Id") != "" {
		return broker.CheckRequest{Kind: broker.CheckSignal, ClientID: h.Get("X-Pode-Signal-Client-Id"),
			Name: h.Get("X-Pode-Signal-Name"), Group: h.Get("X-Pode-Signal-Group")}
	}
	return broker.CheckRequest{Kind: broker.CheckSSE, ClientID: h.Get("X-Pode-Sse-Client-Id"),
		Name: h.Get("X-Pode-Sse-Name"), Group: h.Get("X-Pode-Sse-Group")}
}

// handlePresenceCheck answers GET /presence/check with Pode's status and
// message for the X-PODE-SSE-* (or X-PODE-SIGNAL-*) headers of the
// request, the User-Agent and IP taken from X-Herald-User-Agent and
// X-Herald-Client-Ip.
func (e *Edge) handlePresenceCheck(w http.ResponseWriter, r *http.Request) {
	if !e.tokenOK(w, r) {
		return
	}
	e.m.presenceRequests.WithLabelValues("check").Inc()
	req := checkRequest(r.Header)
	req.UserAgent, req.IP = r.Header.Get(HeaderCheckUserAgent), r.Header.Get(HeaderCheckIP)
	reply, err := e.presence.Check(r.Context(), req)
	if err != nil {
		writeBrokerError(w, err)
		return
	}
	if reply.Status == http.StatusNoContent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, reply.Status, reply)
}

// closeHandler is Pode.Web's sse-close route: the page asks, on unload,
// that its connection be closed. As in Pode, the request's identity
// headers are checked first (400, 404, 400 as Pode answers, with the
// request's own User-Agent and IP for strict signing); then the
// connection of that name and clientId is closed wherever it is, and the
// answer is an empty 200. Without a clientId nothing happens.
func (e *Edge) closeHandler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := checkRequest(r.Header)
		if req.Kind != broker.CheckSSE || req.ClientID == "" {
			w.WriteHeader(http.StatusOK)
			return
		}
		req.UserAgent, req.IP = r.UserAgent(), remoteIP(r)
		reply, err := e.presence.Check(r.Context(), req)
		if err != nil {
			e.m.presenceRequests.WithLabelValues("close_failed").Inc()
			http.Error(w, "presence unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if reply.Status != http.StatusOK {
			e.m.presenceRequests.WithLabelValues("close_refused").Inc()
			http.Error(w, reply.Message, reply.Status)
			return
		}
		e.m.presenceRequests.WithLabelValues("close").Inc()
		if _, err := e.pub.Close(r.Context(), broker.Target{Name: name, ClientIDs: []string{req.ClientID}}); err != nil {
			writeBrokerError(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

// writeJSON answers v as JSON, as written (no HTML escaping: results and
// names reach the client byte for byte), or 500 if v does not encode.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// writeBrokerError maps a broker error to its HTTP status.
func writeBrokerError(w http.ResponseWriter, err error) {
	status := http.StatusServiceUnavailable
	var be *broker.Error
	if errors.As(err, &be) {
		switch be.Code {
		case broker.CodeInvalid:
			status = http.StatusBadRequest
		case broker.CodeBroadcastLevel:
			status = http.StatusUnprocessableEntity
		case broker.CodeUnknown:
			status = http.StatusGatewayTimeout
		}
	}
	writeJSONError(w, status, err.Error())
}
