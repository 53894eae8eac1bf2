package edge

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// Config configures an Edge. The zero value of every field means its
// documented default; defaults are applied in one place, by
// (*Config).withDefaults. Validate reports the first bad field as a
// *ConfigError.
//
// cmd/edge and cmd/embedded set every field from an option of the same
// meaning (internal/app's option table names the field each option fills),
// except History.DuplicateWindow: see History.
type Config struct {
	// SubjectPrefix is the first subject token. Default "herald".
	SubjectPrefix string

	// SSEPath is the route pattern of SSE connections, in net/http ServeMux
	// syntax without method or host: it starts with "/" and must contain
	// {name}; {group} is optional. Default "/sse/{name}".
	SSEPath string
	// ExtraSSERoutes adds more SSE routes, each a pattern (starting with
	// "/") plus a fixed name used when the pattern has no {name}, e.g.
	// Pode.Web's "/pode.web-dynamic/pages/{group}/sse-open" with name
	// "Pode.Web.Actions" (PodeWebRoute). No two routes, SSEPath and WSRoute
	// included, may conflict.
	ExtraSSERoutes []SSERoute

	// Signing signs assigned clientIds and verifies client-supplied ones.
	// A zero Signer (no secret) turns signing off.
	Signing policy.Signer
	// Levels are the broadcast levels enforced at the edge (and by /publish).
	Levels policy.Levels

	// PublishTokens are the bearer tokens accepted by POST /publish, each at
	// least MinPublishTokenLen characters without spaces or control
	// characters. Empty disables the endpoint (404).
	PublishTokens []string
	// MaxPublishBytes caps a /publish body and a single event's data.
	// Default 64 KiB.
	MaxPublishBytes int

	// Retry, when > 0, is sent as the SSE "retry:" field in milliseconds
	// right after the headers. Default 0 (not sent), as Pode.
	Retry time.Duration
	// PingInterval is the idle period after which pode.ping is sent.
	// Default 30 s.
	PingInterval time.Duration
	// WriteTimeout is the deadline of one write to a client. A client that
	// cannot take a write within it is closed as slow. Default 10 s.
	WriteTimeout time.Duration
	// QueueBytes and QueueMessages bound each connection's queue. A
	// connection whose queue overflows is closed with reason "slow".
	// Defaults 1 MiB and 1024.
	QueueBytes    int
	QueueMessages int

	// AllowAllOrigins adds "Access-Control-Allow-Origin: *" to SSE responses.
	AllowAllOrigins bool

	// History turns on event history (a JetStream stream, see
	// broker.History): every event carries a position as its SSE id,
	// clients resume with Last-Event-ID on any edge, and the edge fills its
	// own gaps from the stream. nil turns it off: producer ids pass through
	// unchanged and Last-Event-ID is ignored.
	//
	// History.DuplicateWindow has no option in the binaries: its default
	// (2 minutes, at most MaxAge) outlasts every retry of the edge's
	// Publisher, which ends within the publish deadline (10 s without one),
	// and a shorter window could store a retried event twice. A deployment
	// that needs another window creates the stream itself: an existing
	// stream is used as it is.
	History *broker.HistoryConfig
	// MaxReplays bounds the replays (resumes and resyncs) one edge runs at
	// once; more wait their turn. Default 64.
	MaxReplays int

	// DrainWindow spreads the closes of Shutdown uniformly over this window,
	// so that clients do not reconnect all at once. Default 0 (close at once).
	DrainWindow time.Duration

	// NoHijack keeps HTTP/1.x streams inside net/http instead of taking
	// over the socket after the response head. Hijacking (the default)
	// frees per-connection buffers; turn it off behind middleware that
	// cannot be bypassed. HTTP/2 streams are never hijacked.
	NoHijack bool

	// Admission (limits.go). A refused SSE client gets 200, retry: and a
	// herald.refused event, then the stream ends (EventSource gives up on
	// any other status); a WebSocket is closed with 1013.

	// MaxConnections caps the connections open on this edge. Default 0: a
	// tenth of the process's open-file limit is kept for everything else.
	MaxConnections int
	// MaxConnectionsPerIP caps the connections open from one client
	// address, except addresses in PerIPExempt. Default 1000; -1 turns it off.
	MaxConnectionsPerIP int
	// PerIPExempt lists the address prefixes the per-address cap does not
	// apply to: a reverse proxy, or a NAT in front of many users, connects
	// from one address. Default: loopback and the private ranges
	// (DefaultPerIPExempt); NoExemptions alone exempts none.
	PerIPExempt []string
	// ConnectRate and ConnectBurst bound how fast new connections are taken
	// (a token bucket: ConnectRate per second, bursts of ConnectBurst), so
	// that a flood is refused cheaply before any identity or NATS work.
	// Defaults 5000 per second, burst 10000; a negative rate turns it off.
	ConnectRate  float64
	ConnectBurst int

	// BodyTimeout bounds how long a request may take to send its body
	// (and the rest of a body the edge does not read): a client that
	// stalls is cut off instead of holding a goroutine and a socket. SSE
	// and WebSocket streams clear it once they start; their writes have
	// their own deadline (WriteTimeout). Default 10 s.
	BodyTimeout time.Duration

	// LogInterval bounds repeated warnings of one kind (e.g. broadcast-level
	// drops) to one per interval. Default 10 s.
	LogInterval time.Duration

	// EdgeID names this edge in logs and system messages; it must be
	// unique among the edges of a cluster and contain no spaces or control
	// characters. Default: random.
	EdgeID string

	// Presence and lifecycle events (presence.go, broker.Presence).

	// PresenceHeartbeat is how often the edge tells the other edges that
	// it is alive. Default 1 s.
	PresenceHeartbeat time.Duration
	// PresenceLostAfter is how long an edge may stay silent before the
	// others take it for lost: presence requests stop waiting for it, and
	// its watchers publish edge_lost disconnects for its connections.
	// Default 5 s; at least three heartbeats.
	PresenceLostAfter time.Duration
	// PresenceTimeout bounds the wait for the other edges' answers to a
	// presence request. Default 500 ms.
	PresenceTimeout time.Duration
	// NoLifecycle turns lifecycle events off: no connect and disconnect
	// events from this edge, and no edge_lost events for it. Presence
	// requests work either way. Default false (on).
	NoLifecycle bool
	// LifecycleStream, when set, keeps lifecycle events in a JetStream
	// stream (created if missing), so that backends read what they missed.
	// Default nil: events are published, not kept.
	LifecycleStream *broker.LifecycleStreamConfig
	// KeepClientID lets the clients of every SSE route keep their clientId
	// across reconnects by proving they owned it (sticky.go); the routes
	// of ExtraSSERoutes with KeepClientID set (PodeWebRoute) always do.
	// Default false.
	KeepClientID bool

	// WebSocket connections (ws.go, ws_inbound.go). Keep-alive pings use
	// PingInterval, writes WriteTimeout and the queue QueueBytes and
	// QueueMessages, as for SSE.

	// WSOriginPatterns lists the browser origins allowed to open WebSockets
	// besides the request's own host, against Cross-Site WebSocket
	// Hijacking. Each pattern is matched case-insensitively with path.Match
	// against the Origin's host ("*.example.com"), or against
	// "scheme://host" when the pattern contains "://". Requests without an
	// Origin header (non-browser clients) are allowed; any other origin gets
	// 403 and is never upgraded. Default none: same origin only. "*" allows
	// every origin and turns the protection off.
	WSOriginPatterns []string
	// WSReadLimit caps one client message in bytes; a larger one closes the
	// connection with 1009 (reason too_big). Default 64 KiB.
	WSReadLimit int
	// WSInboundRate and WSInboundBurst bound the messages one connection
	// may send (a token bucket: WSInboundRate per second, bursts of
	// WSInboundBurst). Over the limit the connection is closed with 1008
	// (reason policy). Defaults 20 per second, burst 40.
	WSInboundRate  float64
	WSInboundBurst int
	// WSEchoNames turns on Pode's default handling of client messages for
	// these connection names ("*" for every name): the edge re-sends the
	// message's "message" to its "path" (which must be enabled too; without
	// a path every name with "*", else the sender's own name), narrowed by
	// its "group" and "clientId", or back to the sender alone with
	// "direct": true. Sends obey the broadcast levels. Letting clients
	// broadcast is a privilege: default none.
	WSEchoNames []string

	// Who may connect (auth.go) and Local streams (local.go). README's
	// "Who may connect" describes both protocols.

	// ConnectAuth says, per connection name, who may connect: open (anyone
	// who reaches the edge), token (a token the app signed, see Token) or
	// backend (a NATS request on <prefix>.auth.<name> that the app's
	// backend answers). It guards SSE routes, WebSocket upgrades and every
	// route that calls authorize. Default: open for every name.
	ConnectAuth policy.ConnectModes
	// Token says which tokens token-mode names accept. Required (a secret
	// or public keys) when any name is in token mode.
	Token policy.TokenConfig
	// TokenCookie is the cookie a token may come in (besides ?token= and
	// Authorization: Bearer). Default "herald_token".
	TokenCookie string
	// AuthTimeout bounds the wait for a backend's connect decision; no
	// answer in time refuses the connection as unavailable. Default 2 s.
	AuthTimeout time.Duration
	// AuthHeaders are the request headers forwarded to backends (connect
	// decisions and Local-stream requests); cookies are always forwarded.
	// Default DefaultAuthHeaders.
	AuthHeaders []string
	// AuthCacheSize bounds the backend decisions an edge keeps for reuse
	// (only those the backend says may be reused). Default 10000; -1
	// turns the cache off.
	AuthCacheSize int
	// Scopes says, per connection name, whether connections are Global
	// (addressable; the default), Local (request-scoped streams from a
	// backend on <prefix>.local.<name>) or either (the request's
	// scope=local chooses).
	Scopes policy.Scopes
	// LocalIdleTimeout ends a Local stream whose backend sends nothing
	// (not even a keep-alive) for this long. Default 30 s.
	LocalIdleTimeout time.Duration

	// Async tasks (tasks.go): Pode's async routes run by workers through
	// NATS (package broker/tasks). They need History.

	// TaskRoutes are the async routes. Default none.
	TaskRoutes []TaskRoute
	// TaskPath is where a task is read (GET ?id=), stopped (DELETE ?id=)
	// and tasks are queried (POST, publish token). Default "/task".
	TaskPath string
	// TaskLease is how long a worker holds a task without renewing it
	// before the task goes to another worker. Default 30 s.
	TaskLease time.Duration
}

// SSERoute is an extra SSE route: a ServeMux pattern and a fixed name used
// when the pattern has no {name} wildcard.
type SSERoute struct {
	Pattern string
	Name    string
	// KeepClientID lets the route's clients keep their clientId across
	// reconnects (sticky.go).
	KeepClientID bool
	// ClosePattern, when set, is a POST route that closes the connection
	// of the route's name whose clientId is in the X-PODE-SSE-CLIENT-ID
	// header, as Pode.Web's sse-close route does (presence.go).
	ClosePattern string
}

// Defaults.
const (
	DefaultSSEPath         = "/sse/{name}"
	DefaultMaxPublishBytes = 64 << 10
	DefaultPingInterval    = 30 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultBodyTimeout     = 10 * time.Second
	DefaultMaxConnsPerIP   = 1000
	DefaultConnectRate     = 5000
	DefaultConnectBurst    = 10000
	DefaultQueueBytes      = 1 << 20
	DefaultQueueMessages   = 1024
	DefaultLogInterval     = 10 * time.Second
	DefaultWSReadLimit     = 64 << 10
	DefaultWSInboundRate   = 20
	DefaultWSInboundBurst  = 40
	DefaultMaxReplays      = 64
	DefaultTokenCookie     = "herald_token"
	DefaultAuthTimeout     = broker.DefaultAuthTimeout
	DefaultAuthCacheSize   = broker.DefaultAuthCacheSize
	DefaultLocalIdle       = 30 * time.Second

	// MinPublishTokenLen is the length of the shortest publish token
	// accepted.
	MinPublishTokenLen = 8
)

// DefaultPerIPExempt are the prefixes exempt from MaxConnectionsPerIP by
// default: loopback and the private ranges, where proxies usually sit.
var DefaultPerIPExempt = []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}

// DefaultAuthHeaders are the request headers forwarded to backends by default.
var DefaultAuthHeaders = []string{"Authorization", "Origin", "User-Agent"}

// NoExemptions, as the only PerIPExempt entry, exempts no address.
const NoExemptions = "none"

// PodeWebRoute is the route Pode.Web's browser code opens.
var PodeWebRoute = SSERoute{Pattern: "/pode.web-dynamic/pages/{group}/sse-open", Name: "Pode.Web.Actions",
	KeepClientID: true, ClosePattern: "POST /pode.web-dynamic/pages/{group}/sse-close"}

func (c Config) withDefaults() Config {
	c.SubjectPrefix = cmp.Or(c.SubjectPrefix, broker.DefaultPrefix)
	c.SSEPath = cmp.Or(c.SSEPath, DefaultSSEPath)
	c.MaxPublishBytes = cmp.Or(c.MaxPublishBytes, DefaultMaxPublishBytes)
	c.PingInterval = cmp.Or(c.PingInterval, DefaultPingInterval)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.MaxConnectionsPerIP = cmp.Or(c.MaxConnectionsPerIP, DefaultMaxConnsPerIP)
	if c.PerIPExempt == nil {
		c.PerIPExempt = DefaultPerIPExempt
	}
	c.ConnectRate = cmp.Or(c.ConnectRate, DefaultConnectRate)
	c.ConnectBurst = cmp.Or(c.ConnectBurst, DefaultConnectBurst)
	c.BodyTimeout = cmp.Or(c.BodyTimeout, DefaultBodyTimeout)
	c.QueueBytes = cmp.Or(c.QueueBytes, DefaultQueueBytes)
	c.QueueMessages = cmp.Or(c.QueueMessages, DefaultQueueMessages)
	c.MaxReplays = cmp.Or(c.MaxReplays, DefaultMaxReplays)
	c.LogInterval = cmp.Or(c.LogInterval, DefaultLogInterval)
	if c.EdgeID == "" {
		c.EdgeID = policy.NewClientID()[:8]
	}
	c.WSReadLimit = cmp.Or(c.WSReadLimit, DefaultWSReadLimit)
	c.WSInboundRate = cmp.Or(c.WSInboundRate, DefaultWSInboundRate)
	c.WSInboundBurst = cmp.Or(c.WSInboundBurst, DefaultWSInboundBurst)
	c.TokenCookie = cmp.Or(c.TokenCookie, DefaultTokenCookie)
	c.AuthTimeout = cmp.Or(c.AuthTimeout, DefaultAuthTimeout)
	if c.AuthHeaders == nil {
		c.AuthHeaders = DefaultAuthHeaders
	}
	c.AuthCacheSize = cmp.Or(c.AuthCacheSize, DefaultAuthCacheSize)
	c.LocalIdleTimeout = cmp.Or(c.LocalIdleTimeout, DefaultLocalIdle)
	c.TaskPath = cmp.Or(c.TaskPath, DefaultTaskPath)
	c.TaskLease = cmp.Or(c.TaskLease, DefaultTaskLease)
	c.TaskRoutes = slices.Clone(c.TaskRoutes) // the caller's slice stays as given
	for i := range c.TaskRoutes {
		c.TaskRoutes[i] = c.TaskRoutes[i].withDefaults()
	}
	c.PresenceHeartbeat = cmp.Or(c.PresenceHeartbeat, broker.DefaultPresenceHeartbeat)
	c.PresenceLostAfter = cmp.Or(c.PresenceLostAfter, broker.DefaultPresenceLostAfter)
	c.PresenceTimeout = cmp.Or(c.PresenceTimeout, broker.DefaultPresenceTimeout)
	return c
}

// ConfigError reports an invalid Config field. Validate and New return it.
type ConfigError struct {
	// Field names the field as Go code spells it: "QueueBytes",
	// "History.MaxAge", or "WSOriginPatterns[1]" for one item of a list.
	Field string
	// Err says what is wrong with the value; it does not repeat the field.
	Err error
}

// Error reads like "edge: QueueBytes: must be positive".
func (e *ConfigError) Error() string { return "edge: " + e.Field + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *ConfigError) Unwrap() error { return e.Err }

var (
	errNotPositive = errors.New("must be positive")
	errNegative    = errors.New("must not be negative")
)

// Validate reports the first bad field as a *ConfigError.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(field string, err error) error { return &ConfigError{Field: field, Err: err} }
	if _, err := broker.NewSubjects(c.SubjectPrefix); err != nil {
		return bad("SubjectPrefix", err)
	}
	if err := c.validateRoutes(); err != nil {
		return err
	}
	for _, f := range []struct {
		field string
		v     int64
		err   error // when v < 0
	}{
		{"MaxPublishBytes", int64(c.MaxPublishBytes), errNotPositive},
		{"Retry", int64(c.Retry), errNegative},
		{"PingInterval", int64(c.PingInterval), errNotPositive},
		{"WriteTimeout", int64(c.WriteTimeout), errNotPositive},
		{"BodyTimeout", int64(c.BodyTimeout), errNotPositive},
		{"QueueBytes", int64(c.QueueBytes), errNotPositive},
		{"QueueMessages", int64(c.QueueMessages), errNotPositive},
		{"MaxReplays", int64(c.MaxReplays), errNotPositive},
		{"DrainWindow", int64(c.DrainWindow), errNegative},
		{"LogInterval", int64(c.LogInterval), errNotPositive},
		{"WSReadLimit", int64(c.WSReadLimit), errNotPositive},
		{"WSInboundBurst", int64(c.WSInboundBurst), errNotPositive},
		{"MaxConnections", int64(c.MaxConnections), errNegative},
		{"MaxConnectionsPerIP", int64(c.MaxConnectionsPerIP + 1), errors.New("must be positive, or -1 for no limit")},
		{"ConnectBurst", int64(c.ConnectBurst), errNotPositive},
		{"AuthTimeout", int64(c.AuthTimeout), errNotPositive},
		{"AuthCacheSize", int64(c.AuthCacheSize + 1), errors.New("must be positive, or -1 for no cache")},
		{"LocalIdleTimeout", int64(c.LocalIdleTimeout), errNotPositive},
		{"PresenceHeartbeat", int64(c.PresenceHeartbeat), errNotPositive},
		{"PresenceTimeout", int64(c.PresenceTimeout), errNotPositive},
	} {
		if f.v < 0 {
			return bad(f.field, f.err)
		}
	}
	if r := c.WSInboundRate; r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return bad("WSInboundRate", errors.New("must be a positive number"))
	}
	if r := c.ConnectRate; math.IsNaN(r) || math.IsInf(r, 0) {
		return bad("ConnectRate", errors.New("must be a number (negative for no limit)"))
	}
	for i, p := range c.PerIPExempt {
		if p == NoExemptions && len(c.PerIPExempt) == 1 {
			continue
		}
		if _, err := netip.ParsePrefix(p); err != nil {
			return bad(fmt.Sprintf("PerIPExempt[%d]", i), fmt.Errorf("%q is not an address prefix like 10.0.0.0/8 (or %q alone)", p, NoExemptions))
		}
	}
	if c.PresenceLostAfter < 3*c.PresenceHeartbeat {
		return bad("PresenceLostAfter", fmt.Errorf("%v is less than three heartbeats (PresenceHeartbeat %v)", c.PresenceLostAfter, c.PresenceHeartbeat))
	}
	if c.LifecycleStream != nil {
		if c.NoLifecycle {
			return bad("LifecycleStream", errors.New("needs lifecycle events (NoLifecycle is set)"))
		}
		if err := c.LifecycleStream.Validate(); err != nil {
			return bad("LifecycleStream", err)
		}
	}
	if c.History != nil {
		if err := validateHistory(*c.History); err != nil {
			return err
		}
	}
	for i, t := range c.PublishTokens {
		switch {
		case len(t) < MinPublishTokenLen:
			return bad(item("PublishTokens", i), fmt.Errorf("token %d of %d is shorter than %d characters", i+1, len(c.PublishTokens), MinPublishTokenLen))
		case strings.ContainsFunc(t, isSpaceOrControl):
			return bad(item("PublishTokens", i), fmt.Errorf("token %d of %d contains a space or control character", i+1, len(c.PublishTokens)))
		}
	}
	if strings.ContainsFunc(c.EdgeID, isSpaceOrControl) {
		return bad("EdgeID", fmt.Errorf("%q contains a space or control character", c.EdgeID))
	}
	for i, p := range c.WSOriginPatterns {
		if p == "" {
			return bad(item("WSOriginPatterns", i), errors.New("is empty"))
		}
		if _, err := path.Match(p, ""); err != nil {
			return bad(item("WSOriginPatterns", i), fmt.Errorf("%q: %w", p, err))
		}
	}
	if err := c.validateAuth(); err != nil {
		return err
	}
	for i, n := range c.WSEchoNames {
		if n == policy.AnyName {
			continue
		}
		if err := policy.ValidateName(n); err != nil {
			return bad(item("WSEchoNames", i), fmt.Errorf("%q: %w", n, err))
		}
	}
	return nil
}

// validateAuth checks the connect-mode fields: token mode needs a usable
// key, and the cookie and forwarded headers must be valid names.
func (c Config) validateAuth() error {
	bad := func(field string, err error) error { return &ConfigError{Field: field, Err: err} }
	t := c.Token
	if t.Leeway < 0 {
		return bad("Token.Leeway", errNegative)
	}
	if t.Secret != "" && len(t.Secret) < policy.MinTokenSecretLen {
		return bad("Token.Secret", fmt.Errorf("%d bytes; HS256 needs at least %d", len(t.Secret), policy.MinTokenSecretLen))
	}
	if len(t.PublicKeys) > 0 {
		if _, err := policy.ParsePublicKeys(t.PublicKeys); err != nil {
			return bad("Token.PublicKeys", err)
		}
	}
	if c.ConnectAuth.Uses(policy.ModeToken) && !t.Enabled() {
		return bad("ConnectAuth", fmt.Errorf("token mode (%s) needs a token secret or public keys", c.ConnectAuth))
	}
	if !validToken(c.TokenCookie) {
		return bad("TokenCookie", fmt.Errorf("%q is not a cookie name", c.TokenCookie))
	}
	for i, h := range c.AuthHeaders {
		if !validToken(h) {
			return bad(item("AuthHeaders", i), fmt.Errorf("%q is not a header name", h))
		}
	}
	return nil
}

// validToken reports whether s is an HTTP token (RFC 9110 §5.6.2): the
// syntax of header and cookie names.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validateRoutes checks SSEPath and ExtraSSERoutes: each a valid ServeMux
// pattern, and none in conflict with another or with WSRoute (New would
// panic registering them).
func (c Config) validateRoutes() error {
	mux := http.NewServeMux()
	mux.Handle(WSRoute, http.NotFoundHandler())
	if err := registerPattern(mux, c.SSEPath); err != nil {
		return &ConfigError{Field: "SSEPath", Err: err}
	}
	if !strings.Contains(c.SSEPath, "{name}") {
		return &ConfigError{Field: "SSEPath", Err: fmt.Errorf("%q must contain {name}", c.SSEPath)}
	}
	for i, r := range c.ExtraSSERoutes {
		field := item("ExtraSSERoutes", i)
		if err := registerPattern(mux, r.Pattern); err != nil {
			return &ConfigError{Field: field, Err: err}
		}
		if r.Name == "" {
			if !strings.Contains(r.Pattern, "{name}") {
				return &ConfigError{Field: field, Err: fmt.Errorf("%q needs {name} in its pattern or a Name", r.Pattern)}
			}
		} else if err := policy.ValidateName(r.Name); err != nil {
			return &ConfigError{Field: field, Err: fmt.Errorf("name %q: %w", r.Name, err)}
		}
		if r.ClosePattern != "" {
			if r.Name == "" {
				return &ConfigError{Field: field, Err: errors.New("a close route needs a fixed Name")}
			}
			method, p, ok := strings.Cut(r.ClosePattern, " ")
			if !ok || method != http.MethodPost {
				return &ConfigError{Field: field, Err: fmt.Errorf("close route %q must start with \"POST \"", r.ClosePattern)}
			}
			if err := registerPattern(mux, p); err != nil {
				return &ConfigError{Field: field, Err: err}
			}
		}
	}
	return c.validateTasks(mux)
}

// registeredAt is the part of a ServeMux panic that points into the source.
var registeredAt = regexp.MustCompile(` \(registered at [^)]*\)`)

// registerPattern registers pattern on mux, turning ServeMux's panic for an
// invalid or conflicting pattern into an error.
func registerPattern(mux *http.ServeMux, pattern string) (err error) {
	if !strings.HasPrefix(pattern, "/") {
		return fmt.Errorf("%q must start with / (no method or host)", pattern)
	}
	return handlePattern(mux, pattern)
}

// handlePattern registers pattern (a method may precede the path) on mux,
// turning ServeMux's panic for an invalid or conflicting pattern into an
// error.
func handlePattern(mux *http.ServeMux, pattern string) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		msg := registeredAt.ReplaceAllString(fmt.Sprint(r), "")
		msg = strings.ReplaceAll(strings.ReplaceAll(msg, ":\n", ": "), "\n", " ")
		if strings.HasPrefix(msg, "parsing ") {
			err = fmt.Errorf("%q is not a valid route pattern: %s", pattern, msg)
		} else {
			err = errors.New(msg) // "pattern ... conflicts with pattern ...: both match ..."
		}
	}()
	mux.Handle(pattern, http.NotFoundHandler())
	return nil
}

// validateHistory checks the history configuration with
// broker.HistoryConfig.Validate one field at a time, so that the error
// names the field, then as a whole.
func validateHistory(h broker.HistoryConfig) error {
	for _, f := range []struct {
		field string
		one   broker.HistoryConfig
	}{
		{"History.Stream", broker.HistoryConfig{Stream: h.Stream}},
		{"History.MaxAge", broker.HistoryConfig{MaxAge: h.MaxAge}},
		{"History.MaxMsgs", broker.HistoryConfig{MaxMsgs: h.MaxMsgs}},
		{"History.MaxBytes", broker.HistoryConfig{MaxBytes: h.MaxBytes}},
		{"History.Replicas", broker.HistoryConfig{Replicas: h.Replicas}},
	} {
		if err := f.one.Validate(); err != nil {
			return &ConfigError{Field: f.field, Err: err}
		}
	}
	if err := h.Validate(); err != nil {
		return &ConfigError{Field: "History", Err: err}
	}
	return nil
}

// item names the i-th item of a list field.
func item(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }
