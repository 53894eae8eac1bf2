package edge

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// Who may connect. Every route that turns a request into a connection
// asks authorize, after admission and before the identity is settled:
//
//	grant, refused := e.authorize(r, transportSSE, policy.Identity{Name: n, Group: g, ClientID: offered})
//	if refused != nil { e.refuseAuth(w, r, refused, transportSSE); return }
//	c, status, reason := e.identify(r, grant.Name, grant.Group, grant.offered(e, r), lastID)
//	e.bind(c, grant)
//
// authorize applies the name's connect mode (Config.ConnectAuth) and scope
// (Config.Scopes) and returns the identity the connection takes, which
// may differ from the one asked for (a token's claims or a backend decide
// it), or a refusal: 400 for a scope the name does not allow, 401 without
// a token, 403 for a token that is forged, expired, or does not allow the
// identity, the backend's status for its denial, 503 when the backend
// does not answer. A refusal never opens the door. bind then attaches what
// outlives the decision: the token's expiry and, for a Local connection,
// its stream request.
//
// How clients see a refusal: 401 and 403 are final (a browser's
// EventSource gives up for good on them, which is right: retrying the same
// token cannot succeed). A 5xx is transient: SSE clients get the answer
// admission gives (200, retry:, herald.refused with the reason), so that
// EventSource comes back by itself; WebSocket clients are upgraded and
// closed with 1013; other routes get the status with Retry-After.

// Transports that ask authorize; a backend sees the value.
const (
	transportSSE  = "sse"
	transportWS   = "ws"
	transportHTTP = "http" // a plain request guarded by a name's connect mode (task routes)
)

// Refusal reasons: the rejections metric label, and the herald.refused
// reason or WebSocket close text of a transient refusal.
const (
	refuseAuthMissing     = "auth_missing"     // 401: no token
	refuseAuthInvalid     = "auth_invalid"     // 403: malformed, forged, wrong algorithm or key, not yet valid
	refuseAuthExpired     = "auth_expired"     // 403: the token has expired
	refuseAuthForbidden   = "auth_forbidden"   // 403: the token does not allow this name, group or clientId
	refuseAuthDenied      = "auth_denied"      // the backend denied (its status)
	refuseAuthUnavailable = "auth_unavailable" // 503: no backend answered in time
)

// Results of the auth_decisions_total metric.
const (
	authAllowed     = "allowed"
	authMissing     = "missing"
	authInvalid     = "invalid"
	authExpired     = "expired"
	authForbidden   = "forbidden"
	authDenied      = "denied"
	authUnavailable = "unavailable"
	authCacheHit    = "hit"
	authCacheMiss   = "miss"
)

var authResults = map[string][]string{
	policy.ModeToken.String():   {authAllowed, authMissing, authInvalid, authExpired, authForbidden},
	policy.ModeBackend.String(): {authAllowed, authDenied, authUnavailable, authInvalid},
}

// EventClose is the SSE event sent before pode.close when the edge ends a
// connection for a reason the client should act on: {"reason":"expired"}
// (fetch a new token and reconnect) or {"reason":"unavailable"} (a Local
// stream's backend did not answer).
const EventClose = "herald.close"

// denial is a connection attempt authorize turned down.
type denial struct {
	status int    // HTTP status
	code   string // one of the refuseAuth* reasons, or bad_request
	reason string // for the client
}

// transient reports whether trying again later may succeed.
func (f *denial) transient() bool { return f.status >= 500 }

// grant is the identity authorize allows, and what outlives the decision.
type grant struct {
	policy.Identity
	local   bool      // a Local (request-scoped) connection
	subject string    // the app's user: a token's sub, a backend's subject
	expires time.Time // the token's exp; zero when nothing expires
}

// offered is the clientId to hand identify: an assigned id is signed (when
// signing is on) so that identify takes it as verified.
func (g grant) offered(e *Edge, r *http.Request) string {
	if !g.Assigned || g.ClientID == "" || !e.cfg.Signing.Enabled() {
		return g.ClientID
	}
	return e.cfg.Signing.Sign(g.ClientID, r.UserAgent(), remoteIP(r))
}

// authorizer holds what the connect modes need.
type authorizer struct {
	tokens  *policy.TokenVerifier // nil without a token key
	backend *broker.AuthClient    // nil when no name is in backend mode
	local   *broker.LocalClient   // nil when no name can be Local
}

// newAuthorizer prepares the connect modes and Local streams the
// configuration uses. Config.Validate has checked the token key.
func newAuthorizer(nc *broker.Conn, cfg Config) (*authorizer, error) {
	a := &authorizer{}
	var err error
	if cfg.Token.Enabled() {
		if a.tokens, err = policy.NewTokenVerifier(cfg.Token); err != nil {
			return nil, err
		}
	}
	if cfg.ConnectAuth.Uses(policy.ModeBackend) {
		a.backend, err = broker.NewAuthClient(nc, broker.AuthOptions{Prefix: cfg.SubjectPrefix,
			Timeout: cfg.AuthTimeout, CacheSize: cfg.AuthCacheSize})
		if err != nil {
			return nil, err
		}
	}
	if cfg.Scopes.Uses(policy.ScopeLocal) || cfg.Scopes.Uses(policy.ScopeEither) {
		if a.local, err = broker.NewLocalClient(nc, cfg.SubjectPrefix); err != nil {
			a.stop()
			return nil, err
		}
	}
	return a, nil
}

// stop releases the backend client's purge subscription.
func (a *authorizer) stop() {
	if a != nil && a.backend != nil {
		a.backend.Stop()
	}
}

// authorize decides whether the request r may become a connection with
// the identity want (validated), and which identity it takes. transport
// names the kind of route for backends and metrics.
func (e *Edge) authorize(r *http.Request, transport string, want policy.Identity) (grant, *denial) {
	local, err := e.cfg.Scopes.Local(want.Name, r.URL.Query().Get("scope"))
	if err != nil {
		return grant{}, &denial{http.StatusBadRequest, "bad_request", err.Error()}
	}
	if local && e.auth.local == nil {
		return grant{}, &denial{http.StatusBadRequest, "bad_request", "Local connections are not configured"}
	}
	switch e.cfg.ConnectAuth.Mode(want.Name) {
	case policy.ModeToken:
		return e.tokenGrant(r, want, local)
	case policy.ModeBackend:
		return e.backendGrant(r, transport, want, local)
	}
	return grant{Identity: want, local: local}, nil
}

// tokenGrant is token mode: the token's claims decide the identity.
func (e *Edge) tokenGrant(r *http.Request, want policy.Identity, local bool) (grant, *denial) {
	mode := policy.ModeToken.String()
	raw := e.requestToken(r)
	if raw == "" {
		e.m.auth.WithLabelValues(mode, authMissing).Inc()
		return grant{}, &denial{http.StatusUnauthorized, refuseAuthMissing,
			"a token is required: ?token=, Authorization: Bearer, or the " + e.cfg.TokenCookie + " cookie"}
	}
	claims, err := e.auth.tokens.Verify(raw, time.Now())
	if err == nil {
		var id policy.Identity
		if id, err = claims.Grant(want); err == nil {
			e.m.auth.WithLabelValues(mode, authAllowed).Inc()
			return grant{Identity: id, local: local, subject: claims.Subject, expires: claims.Expires}, nil
		}
	}
	result, code := authInvalid, refuseAuthInvalid
	switch {
	case errors.Is(err, policy.ErrTokenExpired):
		result, code = authExpired, refuseAuthExpired
	case errors.Is(err, policy.ErrTokenForbidden):
		result, code = authForbidden, refuseAuthForbidden
	}
	e.m.auth.WithLabelValues(mode, result).Inc()
	return grant{}, &denial{http.StatusForbidden, code, strings.TrimPrefix(err.Error(), "policy: ")}
}

// requestToken finds a request's token: the Authorization header (Bearer),
// the token query parameter (EventSource and WebSocket cannot send
// headers), or the token cookie, in that order.
func (e *Edge) requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if c, err := r.Cookie(e.cfg.TokenCookie); err == nil {
		return c.Value
	}
	return ""
}

// backendGrant is backend mode: one NATS request (or a cached answer).
func (e *Edge) backendGrant(r *http.Request, transport string, want policy.Identity, local bool) (grant, *denial) {
	mode := policy.ModeBackend.String()
	req := e.describe(r, transport, want, local)
	ans, src, err := e.auth.backend.Ask(r.Context(), req)
	if src == broker.FromCache {
		e.m.authCache.WithLabelValues(authCacheHit).Inc()
	} else {
		e.m.authCache.WithLabelValues(authCacheMiss).Inc()
	}
	if err != nil {
		result, why := authUnavailable, "no backend answered"
		if errors.Is(err, broker.ErrInvalid) {
			result, why = authInvalid, "the backend's answer is invalid"
		}
		e.m.auth.WithLabelValues(mode, result).Inc()
		if e.warn.Allow("auth_backend_" + result) {
			e.log.Warn("connect decision: "+why+"; refusing (logged once per interval)", "name", want.Name, "err", err)
		}
		return grant{}, &denial{http.StatusServiceUnavailable, refuseAuthUnavailable, why + "; try again later"}
	}
	if !ans.Allow {
		e.m.auth.WithLabelValues(mode, authDenied).Inc()
		status, reason := ans.Status, ans.Reason
		if status == 0 {
			status = http.StatusForbidden
		}
		if reason == "" {
			reason = "denied"
		}
		return grant{}, &denial{status, refuseAuthDenied, reason}
	}
	g := grant{Identity: want, local: local, subject: ans.Subject}
	if ans.Name != "" {
		g.Name = ans.Name
	}
	if ans.Group != nil {
		g.Group = *ans.Group
	}
	if ans.ClientID != nil {
		g.ClientID, g.Assigned = *ans.ClientID, true
	}
	e.m.auth.WithLabelValues(mode, authAllowed).Inc()
	return g, nil
}

// describe builds what a backend learns of a request: for a connect
// decision, and for a Local stream's request.
func (e *Edge) describe(r *http.Request, transport string, want policy.Identity, local bool) *broker.AuthRequest {
	req := &broker.AuthRequest{
		Transport: transport, Method: r.Method, Path: r.URL.Path, IP: remoteIP(r),
		Name: want.Name, Group: want.Group, ClientID: want.ClientID, Scope: policy.ScopeGlobal.String(),
		LastEventID: strings.TrimSpace(r.Header.Get("Last-Event-ID")),
	}
	if local {
		req.Scope = policy.ScopeLocal.String()
	}
	if q := r.URL.Query(); len(q) > 0 {
		req.Query = q
	}
	for _, h := range e.cfg.AuthHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			if req.Headers == nil {
				req.Headers = map[string][]string{}
			}
			req.Headers[http.CanonicalHeaderKey(h)] = v
		}
	}
	for _, c := range r.Cookies() {
		if req.Cookies == nil {
			req.Cookies = map[string]string{}
		}
		req.Cookies[c.Name] = c.Value
	}
	return req
}

// refuseAuth answers a refused connection attempt for its transport (see
// the top of this file).
func (e *Edge) refuseAuth(w http.ResponseWriter, r *http.Request, f *denial, transport string) {
	if f.transient() {
		switch transport {
		case transportSSE:
			e.refuseSSE(w, f.code)
			return
		case transportWS:
			e.refuseWS(w, r, f.code)
			return
		}
		w.Header().Set("Retry-After", fmt.Sprint(int(retryLater().Seconds())))
	}
	if f.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	e.reject(w, f.status, f.code, f.reason)
}

// connAuth is what a connection keeps of its grant.
type connAuth struct {
	expiresAt time.Time // set once by bind: the token's exp; zero when nothing expires

	mu     sync.Mutex
	expiry *time.Timer  // guarded by mu; closes the connection when its token expires
	done   bool         // guarded by mu; the connection has left: arm no timer
	local  *localStream // set once by bind: a Local stream (local.go)
}

// bind attaches to c what outlives its grant. A connection with nothing
// to keep costs nothing more.
func (e *Edge) bind(c *conn, g grant, r *http.Request, transport string) {
	if g.expires.IsZero() && !g.local {
		return
	}
	c.authz = &connAuth{expiresAt: g.expires}
	if g.local {
		c.res.on = false // no history: the backend is the stream
		req := e.describe(r, transport, g.Identity, true)
		req.Name, req.Group, req.ClientID = c.name, c.group, c.id
		c.authz.local = &localStream{req: broker.LocalRequest{AuthRequest: *req, Subject: g.subject}}
		c.lastID = ""
	}
}

// armExpiry starts the timer that closes c when its token expires (plus
// the leeway a token is verified with). It runs once c is registered, so
// that the close unregisters it.
func (e *Edge) armExpiry(c *conn) {
	a := c.authz
	if a == nil || a.expiresAt.IsZero() {
		return
	}
	d := time.Until(a.expiresAt.Add(e.auth.tokens.Leeway()))
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return
	}
	a.expiry = time.AfterFunc(d, func() { e.expire(c) })
}

// expire closes a connection whose token has expired: SSE clients are
// told why first, so that they fetch a new token before reconnecting.
func (e *Edge) expire(c *conn) {
	e.closeWith(c, ReasonExpired)
}

// closeWith closes c for reason, telling an SSE client the reason first
// (herald.close) when it is one the client should act on.
func (e *Edge) closeWith(c *conn, reason CloseReason) {
	if c.format == formatSSE {
		c.push(encodeSSE("", EventClose, []byte(`{"reason":"`+reason.Code+`"}`)), nil)
	}
	c.close(reason)
}

// unbind releases what bind attached, when c leaves: it stops the expiry
// timer and ends a Local stream. It reports whether c is a Local
// connection (which the registry never held).
func (e *Edge) unbind(c *conn) (local bool) {
	a := c.authz
	a.mu.Lock()
	a.done = true
	if a.expiry != nil {
		a.expiry.Stop()
	}
	a.mu.Unlock()
	if a.local != nil {
		e.leaveLocal(c)
		return true
	}
	return false
}
