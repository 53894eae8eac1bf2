package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/herald-push/herald/pkg/policy"
)

// PresenceSource is what an edge knows about its own connections. Its
// methods are called on NATS callback goroutines and must not block.
type PresenceSource interface {
	// Lookup calls fn for each connection of name whose raw clientId is id.
	Lookup(name, id string, fn func(ConnInfo))
	// Range calls fn for each connection of name ("" for every name) in
	// group ("" for any; compared case-insensitively).
	Range(name, group string, fn func(ConnInfo))
	// Len returns the number of connections.
	Len() int
}

// PresenceOptions configures an edge's Presence. Zero values mean the
// defaults.
type PresenceOptions struct {
	// Prefix is the first subject token(s). Default "herald".
	Prefix string
	// Edge is this edge's id, unique in the cluster. Required.
	Edge string
	// Source lists this edge's connections. Required.
	Source PresenceSource
	// Signing verifies clientIds in check requests, as the edge does.
	Signing policy.Signer
	// Heartbeat is how often the edge tells the others it is alive.
	// Default 1 s (DefaultPresenceHeartbeat).
	Heartbeat time.Duration
	// LostAfter is how long an edge may be silent before the others
	// consider it lost: they stop waiting for its answers and publish
	// edge_lost disconnects for its connections. Default 5 s. It must be
	// at least three heartbeats.
	LostAfter time.Duration
	// Timeout bounds the wait for the edges' answers to one request.
	// Default 500 ms.
	Timeout time.Duration
	// NoLifecycle turns lifecycle events off: no connect and disconnect
	// events, and this edge neither is watched nor watches others (no
	// edge_lost events for it or from it). Default false: on.
	NoLifecycle bool
	// Watchers is how many edges watch each edge, so that its connections'
	// disconnects are published when it dies. Default 2.
	Watchers int
	// Logger receives warnings. Default: none.
	Logger *slog.Logger
}

// Defaults of PresenceOptions.
const (
	DefaultPresenceHeartbeat = time.Second
	DefaultPresenceLostAfter = 5 * time.Second
	DefaultPresenceTimeout   = 500 * time.Millisecond
	DefaultPresenceWatchers  = 2
)

// presenceQueue is the queue group of the edges' request responders.
const presenceQueue = "herald-presence"

// maxCoordinating bounds the requests one edge coordinates at once.
const maxCoordinating = 256

// Presence is an edge's part in cluster-wide presence: it answers the
// other edges' gathers from its Source, coordinates the requests it takes
// from the queue group, publishes its heartbeats and lifecycle events, and
// watches its neighbours (lifecycle_watch.go).
type Presence struct {
	nc       *nats.Conn
	subjects Subjects
	o        PresenceOptions
	edge     string
	inc      string // this incarnation: a restarted edge is a new member
	log      *slog.Logger
	life     *lifecycle // nil with NoLifecycle

	subs []*nats.Subscription

	// Coordinated requests: replies to muxPrefix.<n> go to pending[n].
	muxPrefix string
	pendMu    sync.Mutex
	pending   map[string]chan *nats.Msg // guarded by pendMu
	nextReq   atomic.Uint64
	coord     chan struct{} // slots for requests being coordinated
	reqs      sync.WaitGroup

	viewMu  sync.RWMutex
	view    map[string]memberState // guarded by viewMu: what coordinators read of the members
	watched []string               // guarded by viewMu: the edges this one watches with a complete mirror

	w *watch // the membership and watching loop's state (lifecycle_watch.go)

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	byeOnce  sync.Once
}

// memberState is what a coordinator knows of another edge.
type memberState struct {
	last time.Time // when it was last heard from
}

// StartPresence starts an edge's presence on nc.
func StartPresence(nc *nats.Conn, o PresenceOptions) (*Presence, error) {
	if nc == nil || o.Source == nil || o.Edge == "" {
		return nil, errors.New("broker: StartPresence needs a connection, a Source and an Edge id")
	}
	subjects, err := NewSubjects(o.Prefix)
	if err != nil {
		return nil, err
	}
	o.Heartbeat = cmp.Or(o.Heartbeat, DefaultPresenceHeartbeat)
	o.LostAfter = cmp.Or(o.LostAfter, DefaultPresenceLostAfter)
	o.Timeout = cmp.Or(o.Timeout, DefaultPresenceTimeout)
	o.Watchers = cmp.Or(o.Watchers, DefaultPresenceWatchers)
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Presence{
		nc:        nc,
		subjects:  subjects,
		o:         o,
		edge:      o.Edge,
		inc:       strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + nuid.Next()[:6],
		log:       o.Logger,
		muxPrefix: nc.NewRespInbox() + ".",
		pending:   map[string]chan *nats.Msg{},
		coord:     make(chan struct{}, maxCoordinating),
		view:      map[string]memberState{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if !o.NoLifecycle {
		p.life = &lifecycle{nc: nc, subjects: subjects, edge: o.Edge, inc: p.inc}
	}
	p.w = newWatch(p)
	fail := func(err error) (*Presence, error) {
		p.unsubscribe()
		return nil, err
	}
	sub := func(subject, queue string, h nats.MsgHandler) error {
		s, err := nc.QueueSubscribe(subject, queue, h)
		if err != nil {
			return fmt.Errorf("broker: presence: subscribe %s: %w", subject, err)
		}
		p.subs = append(p.subs, s)
		return nil
	}
	// Order matters: the edge answers gathers and snapshots before it
	// announces itself, so that nobody waits for an edge that cannot answer.
	if err := sub(p.muxPrefix+"*", "", p.onReply); err != nil {
		return fail(err)
	}
	if err := sub(subjects.PresenceSubject(presenceGather), "", p.onGather); err != nil {
		return fail(err)
	}
	for _, op := range []string{presenceLookup, presenceList, presenceCheck} {
		if err := sub(subjects.PresenceSubject(op), presenceQueue, p.onRequest); err != nil {
			return fail(err)
		}
	}
	if p.life != nil {
		if err := sub(subjects.snapshotSubject(o.Edge), "", p.onSnapshot); err != nil {
			return fail(err)
		}
	}
	if err := p.w.subscribe(); err != nil {
		return fail(err)
	}
	// The subscriptions reach the server before the first heartbeat, which
	// follows them on the connection; an edge started while NATS is away
	// subscribes when it connects.
	go p.w.loop()
	return p, nil
}

func (o PresenceOptions) validate() error {
	switch {
	case o.Heartbeat < 0:
		return invalid("PresenceOptions.Heartbeat", errors.New("must be positive"))
	case o.LostAfter < 3*o.Heartbeat:
		return invalid("PresenceOptions.LostAfter", fmt.Errorf("%v is less than three heartbeats (%v)", o.LostAfter, 3*o.Heartbeat))
	case o.Timeout < 0:
		return invalid("PresenceOptions.Timeout", errors.New("must be positive"))
	case o.Watchers < 0:
		return invalid("PresenceOptions.Watchers", errors.New("must be positive"))
	}
	return nil
}

// Edge returns this edge's id.
func (p *Presence) Edge() string { return p.edge }

// Members returns the other edges this one has heard from within
// LostAfter, sorted.
func (p *Presence) Members() []string { return p.alive() }

// Watched returns the edges this one watches with a complete mirror of
// their connections (it publishes their disconnects if they die), sorted.
func (p *Presence) Watched() []string {
	p.viewMu.RLock()
	defer p.viewMu.RUnlock()
	return slices.Clone(p.watched)
}

// Connected publishes the connect event of c (nothing with NoLifecycle).
func (p *Presence) Connected(c *ConnInfo) error {
	if p.life == nil {
		return nil
	}
	return p.life.publish(c, nil, false)
}

// Disconnected publishes the disconnect event of c, closed at at for reason.
func (p *Presence) Disconnected(c *ConnInfo, reason string, at time.Time) error {
	if p.life == nil {
		return nil
	}
	return p.life.publish(c, &disconnect{reason: reason, at: at}, false)
}

// Bye tells the other edges that this edge is leaving cleanly: they stop
// waiting for its answers and publish nothing for it. Call it after the
// disconnects of every connection were published. It is idempotent.
func (p *Presence) Bye() {
	p.byeOnce.Do(func() { p.w.bye() })
}

// Stop ends the presence: it unsubscribes, waits for the requests being
// coordinated and ends the loop. It is idempotent.
func (p *Presence) Stop() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.unsubscribe()
	p.reqs.Wait()
}

func (p *Presence) unsubscribe() {
	for _, s := range p.subs {
		_ = s.Unsubscribe()
	}
	p.subs = nil
}

// gatherRequest is what a coordinator asks every edge.
type gatherRequest struct {
	Op       string `json:"op"` // "lookup" or "list"
	Name     string `json:"name"`
	ClientID string `json:"clientId,omitempty"` // raw, lookup
	Group    string `json:"group,omitempty"`
	After    string `json:"after,omitempty"` // list cursor
	Limit    int    `json:"limit,omitempty"`
}

// gatherReply is one edge's answer.
type gatherReply struct {
	Edge  string     `json:"edge"`
	Conns []ConnInfo `json:"conns"`
	More  bool       `json:"more,omitempty"` // the edge had more than Limit
}

// answer computes this edge's part of a gather.
func (p *Presence) answer(req *gatherRequest) gatherReply {
	r := gatherReply{Edge: p.edge, Conns: []ConnInfo{}}
	switch req.Op {
	case presenceLookup:
		p.o.Source.Lookup(req.Name, req.ClientID, func(c ConnInfo) {
			if req.Group == "" || strings.EqualFold(req.Group, c.Group) {
				r.Conns = append(r.Conns, c)
			}
		})
	case presenceList:
		id, conn, _ := parseCursor(req.After)
		p.o.Source.Range(req.Name, req.Group, func(c ConnInfo) {
			if req.After == "" || afterCursor(&c, id, conn) {
				r.Conns = append(r.Conns, c)
			}
		})
		r.Conns, r.More = pageOf(r.Conns, req.Limit)
	}
	return r
}

// onGather answers another edge's gather.
func (p *Presence) onGather(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var req gatherRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		return
	}
	b, err := json.Marshal(p.answer(&req))
	if err != nil {
		return
	}
	_ = m.Respond(b)
}

// onReply hands a gather reply to the request waiting for it.
func (p *Presence) onReply(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, p.muxPrefix)
	p.pendMu.Lock()
	ch := p.pending[id]
	p.pendMu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default: // more replies than edges: ignore
		}
	}
}

// expected returns the live edges other than this one whose answers a
// gather waits for: those heard from within half of LostAfter. An edge
// silent for longer is probably gone: its answer is taken if it comes, but
// not waited for, so that after an edge dies requests are slow (they wait
// Timeout) for half of LostAfter at most.
func (p *Presence) expected(now time.Time) map[string]bool {
	p.viewMu.RLock()
	defer p.viewMu.RUnlock()
	out := make(map[string]bool, len(p.view))
	for id, m := range p.view {
		if now.Sub(m.last) <= p.o.LostAfter/2 {
			out[id] = true
		}
	}
	return out
}

// alive returns the edges heard from within LostAfter (this one excluded).
func (p *Presence) alive() []string {
	p.viewMu.RLock()
	defer p.viewMu.RUnlock()
	out := make([]string, 0, len(p.view))
	for id := range p.view {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// gather asks every edge and returns their answers, this edge's first,
// with the coverage.
func (p *Presence) gather(ctx context.Context, req *gatherRequest) ([]gatherReply, Coverage, error) {
	own := p.answer(req)
	replies := []gatherReply{own}
	cov := Coverage{Edges: []string{p.edge}, Missing: []string{}}
	wait := p.expected(time.Now())
	delete(wait, p.edge)
	body, err := json.Marshal(req)
	if err != nil {
		return nil, cov, err
	}
	id := strconv.FormatUint(p.nextReq.Add(1), 36)
	ch := make(chan *nats.Msg, 64)
	p.pendMu.Lock()
	p.pending[id] = ch
	p.pendMu.Unlock()
	defer func() {
		p.pendMu.Lock()
		delete(p.pending, id)
		p.pendMu.Unlock()
	}()
	if err := p.nc.PublishRequest(p.subjects.PresenceSubject(presenceGather), p.muxPrefix+id, body); err != nil {
		return nil, cov, &Error{Code: CodeUnavailable, Err: err}
	}
	timer := time.NewTimer(within(ctx, p.o.Timeout))
	defer timer.Stop()
	seen := map[string]bool{p.edge: true}
	for len(wait) > 0 {
		select {
		case m := <-ch:
			var r gatherReply
			if json.Unmarshal(m.Data, &r) != nil || seen[r.Edge] {
				continue
			}
			seen[r.Edge] = true
			delete(wait, r.Edge)
			replies = append(replies, r)
			cov.Edges = append(cov.Edges, r.Edge)
		case <-timer.C:
			for e := range wait {
				cov.Missing = append(cov.Missing, e)
			}
			wait = nil
		case <-ctx.Done():
			return nil, cov, &Error{Code: CodeUnavailable, Err: ctx.Err()}
		}
	}
	// Late answers from edges not waited for (not yet known, or silent
	// for a while) that already arrived are taken.
	for more := true; more; {
		select {
		case m := <-ch:
			var r gatherReply
			if json.Unmarshal(m.Data, &r) == nil && !seen[r.Edge] {
				seen[r.Edge] = true
				replies = append(replies, r)
				cov.Edges = append(cov.Edges, r.Edge)
			}
		default:
			more = false
		}
	}
	// A silent edge that is not in this answer is missing too.
	for _, e := range p.alive() {
		if !seen[e] && !slices.Contains(cov.Missing, e) {
			cov.Missing = append(cov.Missing, e)
		}
	}
	slices.Sort(cov.Edges)
	slices.Sort(cov.Missing)
	return replies, cov, nil
}

// Lookup answers a lookup cluster-wide.
func (p *Presence) Lookup(ctx context.Context, req LookupRequest) (LookupReply, error) {
	if err := req.Validate(); err != nil {
		return LookupReply{}, err
	}
	replies, cov, err := p.gather(ctx, &gatherRequest{Op: presenceLookup, Name: req.Name, ClientID: policy.RawID(req.ClientID), Group: req.Group})
	if err != nil {
		return LookupReply{}, err
	}
	out := LookupReply{Connections: []ConnInfo{}, Coverage: cov}
	for _, r := range replies {
		out.Connections = append(out.Connections, r.Conns...)
	}
	slices.SortFunc(out.Connections, func(a, b ConnInfo) int { return a.Since.Compare(b.Since) })
	out.Connected = len(out.Connections) > 0
	return out, nil
}

// List answers one page of a list cluster-wide.
func (p *Presence) List(ctx context.Context, req ListRequest) (ListReply, error) {
	if err := req.Validate(); err != nil {
		return ListReply{}, err
	}
	replies, cov, err := p.gather(ctx, &gatherRequest{Op: presenceList, Name: req.Name, Group: req.Group, After: req.After, Limit: req.Limit})
	if err != nil {
		return ListReply{}, err
	}
	var all []ConnInfo
	more := false
	for _, r := range replies {
		all = append(all, r.Conns...)
		more = more || r.More
	}
	page, cut := pageOf(all, req.Limit)
	out := ListReply{Connections: page, Coverage: cov}
	if out.Connections == nil {
		out.Connections = []ConnInfo{}
	}
	if (cut || more) && len(page) > 0 {
		out.Next = cursorOf(&page[len(page)-1])
	}
	return out, nil
}

// Check answers a check of Pode's identity headers cluster-wide.
func (p *Presence) Check(ctx context.Context, req CheckRequest) (CheckReply, error) {
	if err := req.Validate(); err != nil {
		return CheckReply{}, err
	}
	if r, ok := req.needsLookup(); !ok {
		return r, nil
	}
	if policy.ValidateName(req.Name) != nil || policy.ValidateClientID(req.ClientID) != nil {
		// No connection can have such a name or clientId.
		return req.decide(nil, p.o.Signing), nil
	}
	replies, cov, err := p.gather(ctx, &gatherRequest{Op: presenceLookup, Name: req.Name, ClientID: policy.RawID(req.ClientID)})
	if err != nil {
		return CheckReply{}, err
	}
	var candidates []ConnInfo
	for _, r := range replies {
		candidates = append(candidates, r.Conns...)
	}
	out := req.decide(candidates, p.o.Signing)
	out.Coverage = cov
	return out, nil
}

// onRequest takes a request of the queue group and answers it on a
// goroutine of its own (at most maxCoordinating at once; beyond, it
// answers unavailable at once rather than queue).
func (p *Presence) onRequest(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	select {
	case p.coord <- struct{}{}:
	default:
		p.respondErr(m, &Error{Code: CodeUnavailable, Err: errors.New("edge busy: too many presence requests at once")})
		return
	}
	p.reqs.Add(1)
	go func() {
		defer func() { <-p.coord; p.reqs.Done() }()
		ctx, cancel := context.WithTimeout(context.Background(), 2*p.o.Timeout)
		defer cancel()
		op := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		var (
			reply any
			err   error
		)
		switch op {
		case presenceLookup:
			var req LookupRequest
			if err = decodeRequest(m.Data, &req); err == nil {
				reply, err = p.Lookup(ctx, req)
			}
		case presenceList:
			var req ListRequest
			if err = decodeRequest(m.Data, &req); err == nil {
				reply, err = p.List(ctx, req)
			}
		case presenceCheck:
			var req CheckRequest
			if err = decodeRequest(m.Data, &req); err == nil {
				reply, err = p.Check(ctx, req)
			}
		}
		if err != nil {
			p.respondErr(m, err)
			return
		}
		b, _ := json.Marshal(reply)
		_ = m.Respond(b)
	}()
}

func decodeRequest(data []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("request", fmt.Errorf("not a JSON request of this API: %v", err))
	}
	return nil
}

func (p *Presence) respondErr(m *nats.Msg, err error) {
	e := replyError{Error: err.Error(), Code: string(CodeInvalid)}
	var be *Error
	if errors.As(err, &be) {
		e.Code = string(be.Code)
	}
	b, _ := json.Marshal(e)
	_ = m.Respond(b)
}
