package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/policy"
)

// Connect decisions by the app's backend: an edge sends one NATS request
// per connection attempt of a name in backend mode, and the backend
// answers allow (optionally assigning the identity, as Pode's
// ConvertTo-PodeSseConnection does) or deny. Any language with a NATS
// client can answer; ServeAuth is the Go helper.
//
//	request  <prefix>.auth.<name>     JSON AuthRequest (reply: the edge's inbox)
//	answer   to the reply subject     JSON AuthAnswer
//	purge    <prefix>.auth-cache.purge  JSON AuthPurge, or empty: drop every cached answer
//
// An answer may say it can be reused (AuthAnswer.Cache): for how long, and
// which parts of the request it depends on. Each edge keeps such answers
// in a bounded LRU and forgets them when their time is up or when a
// backend publishes a purge.

// AuthRequest is what an edge asks the backend about one connection
// attempt. Headers holds only the headers the edge is configured to
// forward; Cookies every cookie of the request.
type AuthRequest struct {
	// Transport is "sse", "ws", or the kind of route that asks.
	Transport string `json:"transport"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	// Query is the request's query string, decoded.
	Query   map[string][]string `json:"query,omitempty"`
	Headers map[string][]string `json:"headers,omitempty"`
	Cookies map[string]string   `json:"cookies,omitempty"`
	// IP is the client's address as the edge sees it.
	IP string `json:"ip"`
	// Name, Group and ClientID are the identity the request asks for.
	Name     string `json:"name"`
	Group    string `json:"group,omitempty"`
	ClientID string `json:"clientId,omitempty"`
	// Scope is "global" or "local".
	Scope       string `json:"scope"`
	LastEventID string `json:"lastEventId,omitempty"`
}

// AuthAnswer is the backend's decision.
type AuthAnswer struct {
	// Allow lets the connection open.
	Allow bool `json:"allow"`
	// Name, when set, is the connection's name instead of the requested one.
	Name string `json:"name,omitempty"`
	// Group, when present (even ""), is the connection's group.
	Group *string `json:"group,omitempty"`
	// ClientID, when present, is the connection's raw clientId (signed by
	// the edge when signing is on); "" lets the edge assign one.
	ClientID *string `json:"clientId,omitempty"`
	// Subject names the app's user, for logs and Local-stream requests.
	Subject string `json:"subject,omitempty"`
	// Status is the HTTP status of a denial: 400 to 599, default 403. A
	// 5xx denial is answered like an unavailable backend (try again later).
	Status int `json:"status,omitempty"`
	// Reason is the text a denied client receives.
	Reason string `json:"reason,omitempty"`
	// Cache, when set with a positive TTL, lets edges reuse the answer.
	Cache *AuthCache `json:"cache,omitempty"`
}

// AuthCache says how an answer may be reused: for TTL seconds (at most
// MaxAuthCacheTTL), by requests for the same name, group, clientId, scope
// and transport whose Vary parts are equal too.
type AuthCache struct {
	// TTL is how long the answer stays valid, in seconds.
	TTL float64 `json:"ttl"`
	// Vary lists the parts of the request the answer depends on: "ip",
	// "path", "header:<name>", "cookie:<name>", "query:<name>". Empty: the
	// answer holds for every request for that identity.
	Vary []string `json:"vary,omitempty"`
	// Tags label the answer for AuthPurge.Tags (e.g. "user:42").
	Tags []string `json:"tags,omitempty"`
}

// AuthPurge is what a backend publishes on <prefix>.auth-cache.purge to
// make every edge forget cached answers: those for Names, and those with
// one of Tags. An empty message, or one with neither, forgets everything.
type AuthPurge struct {
	Names []string `json:"names,omitempty"`
	Tags  []string `json:"tags,omitempty"`
}

// MaxAuthCacheTTL caps how long an edge reuses an answer, whatever the
// backend says.
const MaxAuthCacheTTL = 5 * time.Minute

// maxAuthAnswer bounds an answer's size.
const maxAuthAnswer = 64 << 10

// Auth returns the subject of connect requests for name: <prefix>.auth.<name>.
func (s Subjects) Auth(name string) string { return s.prefix + ".auth." + EscapeToken(name) }

// AuthAll is the wildcard over every name's connect requests: <prefix>.auth.*
func (s Subjects) AuthAll() string { return s.prefix + ".auth.*" }

// AuthPurge is the subject backends publish cache purges on.
func (s Subjects) AuthPurge() string { return s.prefix + ".auth-cache.purge" }

// Validate checks an answer as an edge reads it: a denial's status in
// 400..599, assigned identity fields within Herald's limits.
func (a *AuthAnswer) Validate() error {
	if !a.Allow && a.Status != 0 && (a.Status < 400 || a.Status > 599) {
		return fmt.Errorf("status %d is not a 4xx or 5xx", a.Status)
	}
	if a.Allow {
		if err := validateAssigned(a); err != nil {
			return err
		}
	}
	if a.Cache != nil && (a.Cache.TTL < 0 || a.Cache.TTL != a.Cache.TTL) {
		return errors.New("cache.ttl must be a non-negative number of seconds")
	}
	if a.Cache != nil {
		for _, v := range a.Cache.Vary {
			if !validVary(v) {
				return fmt.Errorf("cache.vary %q: want ip, path, header:<name>, cookie:<name> or query:<name>", v)
			}
		}
	}
	return nil
}

// validateAssigned checks the identity an allow assigns.
func validateAssigned(a *AuthAnswer) error {
	if a.Name != "" {
		if err := policy.ValidateName(a.Name); err != nil {
			return err
		}
	}
	if a.Group != nil {
		if err := policy.ValidateGroup(*a.Group); err != nil {
			return err
		}
	}
	if a.ClientID != nil {
		if err := policy.ValidateClientID(*a.ClientID); err != nil {
			return err
		}
		if strings.HasPrefix(*a.ClientID, policy.SignedPrefix) {
			return errors.New("clientId: assign the raw id; the edge signs it")
		}
	}
	return nil
}

func validVary(v string) bool {
	if v == "ip" || v == "path" {
		return true
	}
	kind, name, ok := strings.Cut(v, ":")
	return ok && name != "" && (kind == "header" || kind == "cookie" || kind == "query")
}

// AuthOptions configures an AuthClient. Zero values mean the defaults.
type AuthOptions struct {
	// Prefix is the first subject token(s). Default "herald".
	Prefix string
	// Timeout bounds the wait for an answer when the caller's context has
	// no deadline. Default 2 s.
	Timeout time.Duration
	// CacheSize bounds the answers kept, and the identities whose Vary
	// lists are kept. Default 10000; negative turns the cache off.
	CacheSize int
}

// Defaults of AuthOptions.
const (
	DefaultAuthTimeout   = 2 * time.Second
	DefaultAuthCacheSize = 10000
)

// AuthSource says where an answer came from.
type AuthSource uint8

// Answer sources.
const (
	FromBackend AuthSource = iota // a backend answered this request
	FromCache                     // an answer cached from an earlier request
)

// AuthClient asks backends for connect decisions and caches what they let
// it cache. It is safe for concurrent use; Stop releases its subscription.
type AuthClient struct {
	nc       *nats.Conn
	subjects Subjects
	timeout  time.Duration
	// The cache: the Vary list last given for each identity asked about,
	// and the answers under the identity plus the values of its Vary
	// parts. Two LRUs of CacheSize each, so that per-client identities
	// (a clientId in the request) never evict each other's answers.
	varies  *lru.Cache[string, []string]  // nil: no cache
	answers *lru.Cache[string, authEntry] // nil: no cache
	gen     atomic.Uint64                 // bumped by every purge
	purge   *nats.Subscription
}

// authEntry is a cached answer.
type authEntry struct {
	answer  AuthAnswer
	name    string
	tags    []string
	expires time.Time
}

// NewAuthClient returns an AuthClient on nc. With a cache it subscribes to
// the purge subject.
func NewAuthClient(nc *nats.Conn, o AuthOptions) (*AuthClient, error) {
	if nc == nil {
		return nil, invalid("nc", errors.New("nil *nats.Conn"))
	}
	subjects, err := NewSubjects(o.Prefix)
	if err != nil {
		return nil, invalid("AuthOptions.Prefix", err)
	}
	a := &AuthClient{nc: nc, subjects: subjects, timeout: o.Timeout}
	if a.timeout <= 0 {
		a.timeout = DefaultAuthTimeout
	}
	size := o.CacheSize
	if size == 0 {
		size = DefaultAuthCacheSize
	}
	if size > 0 {
		if a.varies, err = lru.New[string, []string](size); err != nil {
			return nil, invalid("AuthOptions.CacheSize", err)
		}
		if a.answers, err = lru.New[string, authEntry](size); err != nil {
			return nil, invalid("AuthOptions.CacheSize", err)
		}
		if a.purge, err = nc.Subscribe(subjects.AuthPurge(), a.onPurge); err != nil {
			return nil, natsError(err)
		}
	}
	return a, nil
}

// Stop unsubscribes from purges. Ask still works, without a cache.
func (a *AuthClient) Stop() {
	if a.purge != nil {
		_ = a.purge.Unsubscribe()
	}
	a.gen.Add(1)
	if a.answers != nil {
		a.answers.Purge()
		a.varies.Purge()
	}
}

// Ask returns the decision for req: a cached one when an earlier answer
// allows it, otherwise the backend's. A backend that does not answer (no
// responder, ctx or the timeout ending first) is an *Error with
// CodeUnavailable; an answer that does not decode or validate,
// CodeInvalid. Neither is ever read as an allow.
func (a *AuthClient) Ask(ctx context.Context, req *AuthRequest) (AuthAnswer, AuthSource, error) {
	now := time.Now()
	primary := a.primaryKey(req)
	if a.answers != nil {
		if ans, ok := a.cached(primary, req, now); ok {
			return ans, FromCache, nil
		}
	}
	gen := a.gen.Load()
	body, err := json.Marshal(req)
	if err != nil {
		return AuthAnswer{}, FromBackend, invalid("request", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	msg, err := a.nc.RequestWithContext(ctx, a.subjects.Auth(req.Name), body)
	if err != nil {
		return AuthAnswer{}, FromBackend, &Error{Code: CodeUnavailable, Err: err}
	}
	var ans AuthAnswer
	if len(msg.Data) > maxAuthAnswer {
		return AuthAnswer{}, FromBackend, invalid("answer", fmt.Errorf("%d bytes, more than %d", len(msg.Data), maxAuthAnswer))
	}
	if err := json.Unmarshal(msg.Data, &ans); err != nil {
		return AuthAnswer{}, FromBackend, invalid("answer", err)
	}
	if err := ans.Validate(); err != nil {
		return AuthAnswer{}, FromBackend, invalid("answer", err)
	}
	if a.answers != nil && ans.Cache != nil && ans.Cache.TTL > 0 && a.gen.Load() == gen {
		a.store(primary, req, ans, now)
	}
	return ans, FromBackend, nil
}

// primaryKey identifies what a request asks for; answers for it are kept
// under it plus the values of the parts they vary on.
func (a *AuthClient) primaryKey(req *AuthRequest) string {
	return keyJoin(req.Name, strings.ToLower(req.Group), req.ClientID, req.Scope, req.Transport)
}

func (a *AuthClient) cached(primary string, req *AuthRequest, now time.Time) (AuthAnswer, bool) {
	vary, ok := a.varies.Get(primary)
	if !ok {
		return AuthAnswer{}, false
	}
	key := primary + varyKey(req, vary)
	e, ok := a.answers.Get(key)
	if !ok {
		return AuthAnswer{}, false
	}
	if !now.Before(e.expires) {
		a.answers.Remove(key)
		return AuthAnswer{}, false
	}
	return e.answer, true
}

func (a *AuthClient) store(primary string, req *AuthRequest, ans AuthAnswer, now time.Time) {
	ttl := time.Duration(ans.Cache.TTL * float64(time.Second))
	ttl = min(ttl, MaxAuthCacheTTL)
	vary := slices.Clone(ans.Cache.Vary)
	a.varies.Add(primary, vary)
	a.answers.Add(primary+varyKey(req, vary), authEntry{answer: ans, name: req.Name, tags: ans.Cache.Tags, expires: now.Add(ttl)})
}

// varyKey is the values of the parts vary names, unambiguously joined.
func varyKey(req *AuthRequest, vary []string) string {
	parts := make([]string, 0, len(vary))
	for _, v := range vary {
		kind, name, _ := strings.Cut(v, ":")
		switch kind {
		case "ip":
			parts = append(parts, req.IP)
		case "path":
			parts = append(parts, req.Path)
		case "cookie":
			parts = append(parts, req.Cookies[name])
		case "header":
			parts = append(parts, strings.Join(headerValues(req.Headers, name), "\n"))
		case "query":
			parts = append(parts, strings.Join(req.Query[name], "\n"))
		}
	}
	return keyJoin(parts...)
}

func headerValues(h map[string][]string, name string) []string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// keyJoin joins parts with their lengths, so that no two lists give one key.
func keyJoin(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// onPurge forgets the cached answers a purge names; a purge that does not
// decode forgets everything (forgetting is always safe).
func (a *AuthClient) onPurge(m *nats.Msg) {
	a.gen.Add(1)
	var p AuthPurge
	if len(m.Data) == 0 || json.Unmarshal(m.Data, &p) != nil || (len(p.Names) == 0 && len(p.Tags) == 0) {
		a.answers.Purge()
		a.varies.Purge()
		return
	}
	for _, k := range a.answers.Keys() {
		e, ok := a.answers.Peek(k)
		if !ok {
			continue
		}
		if slices.Contains(p.Names, e.name) || slices.ContainsFunc(e.tags, func(t string) bool { return slices.Contains(p.Tags, t) }) {
			a.answers.Remove(k)
		}
	}
}

// CachedAnswers returns how many answers are cached (for metrics).
func (a *AuthClient) CachedAnswers() int {
	if a.answers == nil {
		return 0
	}
	return a.answers.Len()
}

// ServeAuth answers the edges' connect requests for name ("*" for every
// name) with decide, in the queue group "herald-auth" so that several
// backend processes share the work. Unsubscribe the returned subscription
// to stop.
func ServeAuth(nc *nats.Conn, prefix, name string, decide func(AuthRequest) AuthAnswer) (*nats.Subscription, error) {
	subjects, err := NewSubjects(prefix)
	if err != nil {
		return nil, invalid("prefix", err)
	}
	subject := subjects.AuthAll()
	if name != "*" {
		subject = subjects.Auth(name)
	}
	return nc.QueueSubscribe(subject, "herald-auth", func(m *nats.Msg) {
		var req AuthRequest
		ans := AuthAnswer{Status: 400, Reason: "malformed request"}
		if err := json.Unmarshal(m.Data, &req); err == nil {
			ans = decide(req)
		}
		body, _ := json.Marshal(ans)
		_ = m.Respond(body)
	})
}

// PurgeAuthCache publishes a purge to every edge (p nil or empty: everything).
func PurgeAuthCache(nc *nats.Conn, prefix string, p *AuthPurge) error {
	subjects, err := NewSubjects(prefix)
	if err != nil {
		return invalid("prefix", err)
	}
	var body []byte
	if p != nil && (len(p.Names) > 0 || len(p.Tags) > 0) {
		body, _ = json.Marshal(p)
	}
	if err := nc.Publish(subjects.AuthPurge(), body); err != nil {
		return natsError(err)
	}
	if err := nc.Flush(); err != nil {
		return natsError(err)
	}
	return nil
}
