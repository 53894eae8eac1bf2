package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/policy"
)

// Presence over NATS: who is connected, cluster-wide.
//
// Any NATS client asks with a request on one of
//
//	<prefix>.sys.presence.lookup   {"name","clientId","group"}
//	<prefix>.sys.presence.list     {"name","group","after","limit"}
//	<prefix>.sys.presence.check    {"clientId","name","group","userAgent","ip","kind"}
//
// and receives one JSON answer (LookupReply, ListReply, CheckReply). One
// edge takes each request (a queue group) and asks every edge at once on
// <prefix>.sys.presence.gather; each answers from its own registry, and the
// coordinating edge merges the answers of every live edge it knows from
// their heartbeats. Only a live edge can answer, so a connection of an
// edge that died is not reported from the moment it died. An answer lists
// the edges that answered (Edges) and those known alive that did not
// answer in time (Missing): with Missing empty it is complete.
//
// PresenceClient is the Go SDK for these requests; every edge also
// serves them over HTTP (GET /presence, GET /presence/check).

// Presence request subjects' last token.
const (
	presenceLookup = "lookup"
	presenceList   = "list"
	presenceCheck  = "check"
	presenceGather = "gather"
)

// PresenceSubject is the subject of a presence request: op is "lookup",
// "list" or "check".
func (s Subjects) PresenceSubject(op string) string { return s.sys + "presence." + op }

// LookupRequest asks whether a clientId of a name is connected.
type LookupRequest struct {
	Name string `json:"name"`
	// ClientID may be raw or signed; connections are found by the raw id.
	ClientID string `json:"clientId"`
	// Group, when set, requires the connection to be in it (compared
	// case-insensitively).
	Group string `json:"group,omitempty"`
}

// LookupReply answers a LookupRequest. Connected is true when Connections
// is not empty: normally one connection, two for a moment while a client
// reconnects and its new connection replaces the old one.
type LookupReply struct {
	Connected   bool       `json:"connected"`
	Connections []ConnInfo `json:"connections"`
	Coverage
}

// Coverage says which edges contributed to an answer.
type Coverage struct {
	// Edges answered.
	Edges []string `json:"edges"`
	// Missing edges are alive (they sent a heartbeat recently) but did not
	// answer within the timeout: their connections are not in the answer.
	Missing []string `json:"missing"`
}

// ListRequest asks for the connections of a name, or of a group of it,
// one page at a time, ordered by clientId.
type ListRequest struct {
	Name  string `json:"name"`
	Group string `json:"group,omitempty"`
	// After is the Next of the previous page; empty for the first.
	After string `json:"after,omitempty"`
	// Limit is the page size: default DefaultListLimit, at most MaxListLimit.
	Limit int `json:"limit,omitempty"`
}

// List page sizes.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// ListReply is one page of a list. Next is empty on the last page.
type ListReply struct {
	Connections []ConnInfo `json:"connections"`
	Next        string     `json:"next,omitempty"`
	Coverage
}

// CheckRequest carries the identity headers of an HTTP request that a
// backend received, to be checked as Pode checks them: X-PODE-SSE-CLIENT-ID,
// X-PODE-SSE-NAME and X-PODE-SSE-GROUP (or the X-PODE-SIGNAL-* ones with
// Kind "signal"), and the request's User-Agent and client IP, which
// strict signing binds a signed clientId to.
type CheckRequest struct {
	ClientID  string `json:"clientId"`
	Name      string `json:"name"`
	Group     string `json:"group"`
	UserAgent string `json:"userAgent,omitempty"`
	IP        string `json:"ip,omitempty"`
	// Kind is "sse" (default: SSE connections, X-PODE-SSE-*) or "signal"
	// (WebSocket connections, X-PODE-SIGNAL-*).
	Kind string `json:"kind,omitempty"`
}

// Check kinds.
const (
	CheckSSE    = "sse"
	CheckSignal = "signal"
)

// CheckReply is Pode's answer to a request's identity headers:
//
//	204  no clientId header: not an SSE (signal) request; nothing to check
//	400  no name header: "Invalid SSE headers supplied, missing required X-Pode-Sse-Name HTTP header"
//	404  no live connection with that name and clientId in one of the
//	     groups (a comma-separated list; none means any):
//	     "The SSE client connection being referenced does not exist, Name: …, Group: …, ClientId: …"
//	400  the clientId is not valid: signing on and it does not verify
//	     (strict: for that User-Agent and IP), or signing off and it looks
//	     signed: "The X-PODE-SSE-CLIENT-ID value is not valid: …"
//	200  Identity is the live connection
//
// in Pode's order (2.13 and later). The signal kind has the same cases
// with "Signal" and X-PODE-SIGNAL-CLIENT-ID in the messages.
type CheckReply struct {
	Status   int       `json:"status"`
	Message  string    `json:"message,omitempty"`
	Identity *ConnInfo `json:"identity,omitempty"`
	Coverage
}

// replyError is the body of an answer to a request that cannot be served.
type replyError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// PresenceClient asks the edges who is connected, over NATS. It is safe
// for concurrent use and does not own the connection.
type PresenceClient struct {
	nc       *nats.Conn
	subjects Subjects
}

// NewPresenceClient returns a client for the edges under prefix ("" means
// DefaultPrefix).
func NewPresenceClient(nc *nats.Conn, prefix string) (*PresenceClient, error) {
	if nc == nil {
		return nil, invalid("nc", errors.New("nil *nats.Conn"))
	}
	s, err := NewSubjects(prefix)
	if err != nil {
		return nil, invalid("prefix", err)
	}
	return &PresenceClient{nc: nc, subjects: s}, nil
}

// Lookup asks whether req's clientId is connected, on which edge, since
// when and over which transport. Errors are *Error: CodeInvalid for a bad
// request, CodeUnavailable when no edge answers (ctx bounds the wait).
func (p *PresenceClient) Lookup(ctx context.Context, req LookupRequest) (LookupReply, error) {
	var r LookupReply
	return r, p.request(ctx, presenceLookup, req, &r)
}

// List returns one page of the connections of req's name (and group).
func (p *PresenceClient) List(ctx context.Context, req ListRequest) (ListReply, error) {
	var r ListReply
	return r, p.request(ctx, presenceList, req, &r)
}

// Check checks an HTTP request's identity headers exactly as Pode does
// (see CheckReply); an edge verifies signed clientIds with its secret.
func (p *PresenceClient) Check(ctx context.Context, req CheckRequest) (CheckReply, error) {
	var r CheckReply
	return r, p.request(ctx, presenceCheck, req, &r)
}

// PresenceAttempt bounds one attempt of a presence request. An edge
// answers within twice its -presence-timeout (1 s by default); a request
// taken by an edge that died at that moment is never answered, so after
// PresenceAttempt the client asks again (presence requests only read).
const PresenceAttempt = 2 * time.Second

func (p *PresenceClient) request(ctx context.Context, op string, req, reply any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return invalid("request", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultFlushTimeout)
		defer cancel()
	}
	for {
		actx, cancel := context.WithTimeout(ctx, PresenceAttempt)
		m, err := p.nc.RequestWithContext(actx, p.subjects.PresenceSubject(op), body)
		cancel()
		switch {
		case err == nil:
			return decodeReply(m.Data, reply)
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			continue // the edge that took it did not answer: ask again
		}
		return &Error{Code: CodeUnavailable, Err: fmt.Errorf("presence %s: %w", op, err)}
	}
}

// decodeReply decodes an answer, or the error an edge answered with.
func decodeReply(data []byte, reply any) error {
	var e replyError
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		code := CodeInvalid
		if e.Code == string(CodeUnavailable) {
			code = CodeUnavailable
		}
		return &Error{Code: code, Err: errors.New(e.Error)}
	}
	if err := json.Unmarshal(data, reply); err != nil {
		return &Error{Code: CodeUnknown, Err: fmt.Errorf("presence answer: %w", err)}
	}
	return nil
}

// Validation of requests, shared by the edges' NATS and HTTP front ends.

// Validate checks a lookup.
func (r LookupRequest) Validate() error {
	if err := policy.ValidateName(r.Name); err != nil {
		return invalid("name", err)
	}
	if r.ClientID == "" {
		return invalid("clientId", errors.New("required"))
	}
	if err := policy.ValidateClientID(r.ClientID); err != nil {
		return invalid("clientId", err)
	}
	if err := policy.ValidateGroup(r.Group); err != nil {
		return invalid("group", err)
	}
	return nil
}

// Validate checks a list request and applies the default limit.
func (r *ListRequest) Validate() error {
	if err := policy.ValidateName(r.Name); err != nil {
		return invalid("name", err)
	}
	if err := policy.ValidateGroup(r.Group); err != nil {
		return invalid("group", err)
	}
	if r.Limit < 0 || r.Limit > MaxListLimit {
		return invalid("limit", fmt.Errorf("%d is not between 1 and %d", r.Limit, MaxListLimit))
	}
	if r.Limit == 0 {
		r.Limit = DefaultListLimit
	}
	if r.After != "" {
		if _, _, err := parseCursor(r.After); err != nil {
			return invalid("after", err)
		}
	}
	return nil
}

// A list cursor is the (clientId, conn) key of the last connection of a
// page, base64url-encoded so that it is safe in a URL.

func cursorOf(c *ConnInfo) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.ClientID + "\x00" + c.Conn))
}

func parseCursor(s string) (clientID, conn string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return "", "", errors.New("not a cursor of this API")
	}
	id, c, ok := strings.Cut(string(b), "\x00")
	if !ok {
		return "", "", errors.New("not a cursor of this API")
	}
	return id, c, nil
}

// listLess orders connections for listing: by clientId, then token.
func listLess(a, b *ConnInfo) bool {
	if a.ClientID != b.ClientID {
		return a.ClientID < b.ClientID
	}
	return a.Conn < b.Conn
}

func listCmp(a, b ConnInfo) int {
	switch {
	case listLess(&a, &b):
		return -1
	case listLess(&b, &a):
		return 1
	}
	return 0
}

// afterCursor reports whether c sorts after the cursor key.
func afterCursor(c *ConnInfo, id, conn string) bool {
	if c.ClientID != id {
		return c.ClientID > id
	}
	return c.Conn > conn
}

// pageOf keeps the limit first connections (by listLess) of all, and says
// whether more followed.
func pageOf(all []ConnInfo, limit int) ([]ConnInfo, bool) {
	slices.SortFunc(all, listCmp)
	if len(all) > limit {
		return all[:limit], true
	}
	return all, false
}

// Pode's request-header check (CheckReply).

// checkMessages are Pode's texts for one kind of header.
type checkMessages struct {
	header     string // the clientId header as Pode's message names it
	noName     string
	notFound   string // with Name, Group and ClientId appended
	transports []string
}

var checkKinds = map[string]checkMessages{
	CheckSSE: {
		header:     "X-PODE-SSE-CLIENT-ID",
		noName:     "Invalid SSE headers supplied, missing required X-Pode-Sse-Name HTTP header",
		notFound:   "The SSE client connection being referenced does not exist",
		transports: []string{"sse_h1", "sse_h2"},
	},
	CheckSignal: {
		header:     "X-PODE-SIGNAL-CLIENT-ID",
		noName:     "Invalid Signal headers supplied, missing required X-Pode-Signal-Name HTTP header",
		notFound:   "The Signal client connection being referenced does not exist",
		transports: []string{"ws"},
	},
}

// Validate checks the kind of a check request.
func (r CheckRequest) Validate() error {
	if _, ok := checkKinds[r.kind()]; !ok {
		return invalid("kind", fmt.Errorf("%q is not %q or %q", r.Kind, CheckSSE, CheckSignal))
	}
	return nil
}

func (r CheckRequest) kind() string {
	if r.Kind == "" {
		return CheckSSE
	}
	return r.Kind
}

// splitGroups splits a group header as Pode does: on commas, empty
// entries dropped, nothing trimmed.
func splitGroups(h string) []string {
	var out []string
	for _, g := range strings.Split(h, ",") {
		if g != "" {
			out = append(out, g)
		}
	}
	return out
}

// forGroups is Pode's IsForGroup: no groups match every connection; a
// connection without a group matches no group.
func forGroups(c *ConnInfo, groups []string) bool {
	if len(groups) == 0 {
		return true
	}
	if c.Group == "" {
		return false
	}
	for _, g := range groups {
		if strings.EqualFold(g, c.Group) {
			return true
		}
	}
	return false
}

// needsLookup reports whether a check must look for a live connection,
// and otherwise answers it: no clientId, or no name.
func (r CheckRequest) needsLookup() (CheckReply, bool) {
	msg := checkKinds[r.kind()]
	switch {
	case r.ClientID == "":
		return CheckReply{Status: http.StatusNoContent}, false
	case r.Name == "":
		return CheckReply{Status: http.StatusBadRequest, Message: msg.noName}, false
	}
	return CheckReply{}, true
}

// decide finishes a check from the live connections of the name and raw
// clientId (candidates), as Pode orders it: the connection must exist
// with exactly that clientId in one of the groups (404), then the id must
// be valid (400).
func (r CheckRequest) decide(candidates []ConnInfo, signer policy.Signer) CheckReply {
	msg := checkKinds[r.kind()]
	groups := splitGroups(r.Group)
	var found *ConnInfo
	for i := range candidates {
		c := &candidates[i]
		if c.Name == r.Name && c.ClientID == r.ClientID && slices.Contains(msg.transports, c.Transport) && forGroups(c, groups) {
			if found == nil || c.Since.After(found.Since) {
				found = c
			}
		}
	}
	if found == nil {
		return CheckReply{Status: http.StatusNotFound, Message: fmt.Sprintf("%s, Name: %s, Group: %s, ClientId: %s",
			msg.notFound, r.Name, strings.Join(groups, ","), r.ClientID)}
	}
	if !clientIDValid(r.ClientID, signer, r.UserAgent, r.IP) {
		return CheckReply{Status: http.StatusBadRequest, Message: "The " + msg.header + " value is not valid: " + r.ClientID}
	}
	id := *found
	return CheckReply{Status: http.StatusOK, Identity: &id}
}

// clientIDValid is Pode's Test-PodeSseClientIdValid: with signing off a
// clientId is valid when it does not look signed; with signing on it must
// verify (in strict mode, for the User-Agent and IP given).
func clientIDValid(id string, signer policy.Signer, userAgent, ip string) bool {
	if id == "" {
		return false
	}
	if !signer.Enabled() {
		return !strings.HasPrefix(id, policy.SignedPrefix)
	}
	_, err := signer.Verify(id, userAgent, ip)
	return err == nil
}

// within is the time left before ctx's deadline, or d when that is sooner
// or there is none.
func within(ctx context.Context, d time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < d {
			return left
		}
	}
	return d
}
