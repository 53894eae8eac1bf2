package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/e2e/checker"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
)

var subjects = broker.MustSubjects(broker.DefaultPrefix)

// Publisher limits.
const (
	publishTimeout  = 2 * time.Second  // one attempt
	publishBudget   = 15 * time.Second // all attempts of one value
	publishAttempts = 30
	maxPublishes    = 200_000 // bound on one publisher's loop
)

// publisher publishes unique values {"p":id,"n":counter} to one connection
// name with JetStream acknowledgements, one at a time, retrying an
// unanswered publish with the same message id (deduplicated by the
// stream), and records each outcome.
type publisher struct {
	id      string
	target  string
	subject string
	js      jetstream.JetStream
	every   time.Duration
	pad     string      // extra payload, to make events bigger
	eras    *streamEras // nil unless the run recreates the history stream

	mu   sync.Mutex
	pubs []checker.Publish // guarded by mu
	era  []int             // guarded by mu; with eras: the era of each acknowledged publish in pubs
}

func newPublisher(nc *nats.Conn, id, target string, every time.Duration, padBytes int) (*publisher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &publisher{id: id, target: target, subject: subjects.EventName(target), js: js, every: every,
		pad: strings.Repeat("x", padBytes)}, nil
}

// run publishes until stop is closed (or ctx ends).
func (p *publisher) run(ctx context.Context, stop <-chan struct{}) {
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for n := int64(0); n < maxPublishes; n++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		p.publishOne(ctx, n)
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *publisher) payload(n int64) []byte {
	if p.pad == "" {
		return checker.Payload(p.id, n)
	}
	b, _ := json.Marshal(struct {
		P string `json:"p"`
		N int64  `json:"n"`
		X string `json:"x"`
	}{p.id, n, p.pad})
	return b
}

// publishOne publishes value n and records how it ended: ok as soon as an
// attempt is acknowledged; fail only when every attempt failed with a
// definite error; unknown otherwise.
func (p *publisher) publishOne(ctx context.Context, n int64) {
	rec := checker.Publish{Publisher: p.id, N: n, Target: p.target, Outcome: checker.Fail}
	data := p.payload(n)
	msgID := fmt.Sprintf("%s-%d", p.id, n)
	deadline := time.Now().Add(publishBudget)
	era := -1
	for attempt := 0; attempt < publishAttempts; attempt++ {
		rec.Attempts++
		before := p.eras.now()
		actx, cancel := context.WithTimeout(ctx, publishTimeout)
		ack, err := p.js.Publish(actx, p.subject, data, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			rec.Outcome, rec.Seq = checker.OK, ack.Sequence
			if e, ok := p.eras.since(before); ok {
				era = e
			} else {
				// Acknowledged while the stream was being replaced: which
				// incarnation stored it is not known, so what reaches the
				// subscribers cannot be judged by position.
				rec.Outcome, rec.Seq = checker.Unknown, 0
			}
			break
		}
		if !definite(err) {
			rec.Outcome = checker.Unknown
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		t := time.NewTimer(50 * time.Millisecond) // retry pacing
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	p.mu.Lock()
	p.pubs = append(p.pubs, rec)
	p.era = append(p.era, era)
	p.mu.Unlock()
}

// definite reports errors that prove the message was not stored: nobody
// was there to store it, or the stream refused it.
func definite(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) || errors.As(err, &apiErr)
}

// history returns a copy of the record; with eras, each acknowledged
// publish names the epoch of its era.
func (p *publisher) history() []checker.Publish {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]checker.Publish(nil), p.pubs...)
	if p.eras != nil {
		for i := range out {
			if out[i].Outcome == checker.OK {
				out[i].Epoch = p.eras.epochOf(p.era[i])
			}
		}
	}
	return out
}

// acked returns how many publishes were acknowledged and the highest
// acknowledged position (with eras: in the newest era).
func (p *publisher) acked() (n int, high uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	newest := 0
	for i, r := range p.pubs {
		if r.Outcome != checker.OK {
			continue
		}
		n++
		switch {
		case p.era[i] > newest:
			newest, high = p.era[i], r.Seq
		case p.era[i] == newest:
			high = max(high, r.Seq)
		}
	}
	return n, high
}

// Subscriber limits.
const (
	maxConnects    = 1000 // bound on one subscriber's connection attempts
	backoffMin     = 50 * time.Millisecond
	backoffJitter  = 200 * time.Millisecond
	responseWithin = 5 * time.Second // an edge must answer the request within this
)

// subscriber is an SSE or WebSocket (herald.v1) client that records every
// event and reconnects like a browser's EventSource: after a connection
// ends it waits a short jittered backoff (or, once an SSE stream set
// retry:, that reconnection time, as EventSource does) and connects to the
// next edge with the last event id it saw (Last-Event-ID for SSE, the
// lastEventId query parameter for WebSocket).
//
// An edge that does not take a connection now (admission limits, drain)
// answers SSE with 200, retry: and a herald.refused event, and WebSocket
// with close 1013 and Retry-After on the handshake: the subscriber counts
// the refusal (it is no connection), waits as told and tries again.
type subscriber struct {
	id     string
	kind   string // "sse" or "ws"
	name   string
	edges  []*edgeProc
	rcvBuf int // SO_RCVBUF of its sockets; 0 for the default
	client *http.Client

	mu       sync.Mutex
	edge     int                  // guarded by mu; index of the edge to use next
	events   []checker.Event      // guarded by mu
	conns    []checker.Connection // guarded by mu
	lastID   string               // guarded by mu; what a browser would send as Last-Event-ID
	pos      uint64               // guarded by mu; highest position seen in epoch
	epoch    string               // guarded by mu; the epoch of the last id seen
	msgs     int                  // guarded by mu; message events received
	gate     chan struct{}        // guarded by mu; non-nil: paused until closed
	offline  bool                 // guarded by mu; do not reconnect while paused
	cancelC  context.CancelFunc   // guarded by mu; ends the current connection
	attempts int                  // guarded by mu; dials since the last connection
	rewrite  func(string) string  // guarded by mu; applied once to the next Last-Event-ID
	retry    time.Duration        // guarded by mu; the reconnection time an SSE stream set (retry:)
	refused  map[string]int       // guarded by mu; refusals by reason
}

func newSubscriber(id, kind, name string, edges []*edgeProc, first int, rcvBuf int) *subscriber {
	s := &subscriber{id: id, kind: kind, name: name, edges: edges, edge: first, rcvBuf: rcvBuf}
	d := &net.Dialer{Timeout: 3 * time.Second}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	s.client = &http.Client{Transport: &http.Transport{
		DialContext:           d.DialContext,
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: responseWithin,
	}}
	return s
}

// run connects and reconnects until ctx ends.
func (s *subscriber) run(ctx context.Context) {
	defer s.client.CloseIdleConnections()
	var down time.Time // when the last connection that opened ended
	for i := 0; i < maxConnects && ctx.Err() == nil; i++ {
		if !s.waitGate(ctx, true) {
			return
		}
		s.mu.Lock()
		e := s.edges[s.edge%len(s.edges)]
		lastID := s.lastID
		if s.rewrite != nil {
			lastID, s.rewrite = s.rewrite(lastID), nil
		}
		s.attempts++
		cctx, cancel := context.WithCancel(ctx)
		s.cancelC = cancel
		s.mu.Unlock()

		var opened bool
		var wait time.Duration // 0: the default backoff
		if s.kind == "ws" {
			opened, wait = s.runWS(cctx, e, lastID, down)
		} else {
			opened, wait = s.runSSE(cctx, e, lastID, down)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if opened {
			down = time.Now()
		}
		// The connection ended (or never opened): the next edge, after a
		// jittered backoff, as a browser behind a load balancer would.
		s.mu.Lock()
		s.edge++
		s.mu.Unlock()
		if wait <= 0 {
			wait = backoffMin + rand.N(backoffJitter)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// beginConn records a connection that got a stream.
func (s *subscriber) beginConn(e *edgeProc, lastID string, down time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns = append(s.conns, checker.Connection{Edge: e.name, LastEventID: lastID, DownSince: down, Attempts: s.attempts})
	s.attempts = 0
	return len(s.conns) - 1
}

func (s *subscriber) endConn(i int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[i].Closed = time.Now()
	if err != nil {
		s.conns[i].Err = err.Error()
	}
}

// maxRecorded bounds the data kept of an event that is not a value.
const maxRecorded = 1024

// record keeps one event and updates what a browser would resume from. A
// value's padding is not kept: its canonical {"p","n"} form is.
func (s *subscriber) record(conn int, typ, id, data string) {
	now := time.Now()
	if typ == checker.TypeMessage {
		var v checker.Value
		if json.Unmarshal([]byte(data), &v) == nil && v.P != "" {
			data = string(checker.Payload(v.P, v.N))
		}
	}
	if len(data) > maxRecorded {
		data = data[:maxRecorded]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[conn].Opened.IsZero() {
		s.conns[conn].Opened = now
	}
	s.events = append(s.events, checker.Event{Conn: conn, Type: typ, ID: id, Data: data, At: now})
	if id != "" {
		// EventSource keeps the last id across reconnects; an event
		// without an id: field leaves it as it was.
		s.lastID = id
		if p, err := broker.ParsePosition(id); err == nil {
			if p.Epoch != s.epoch {
				s.epoch, s.pos = p.Epoch, p.Seq // a recreated stream: positions start again
			} else {
				s.pos = max(s.pos, p.Seq)
			}
		}
	}
	if typ == checker.TypeMessage {
		s.msgs++
	}
}

// waitGate blocks while the subscriber is paused. reconnecting is true
// before a connection: an offline subscriber waits there; a merely paused
// reader waits between events. It reports false when ctx ends.
func (s *subscriber) waitGate(ctx context.Context, reconnecting bool) bool {
	s.mu.Lock()
	g, offline := s.gate, s.offline
	s.mu.Unlock()
	if g == nil || (reconnecting && !offline) {
		return true
	}
	select {
	case <-g:
		return true
	case <-ctx.Done():
		return false
	}
}

// pause stops reading (the socket stays open, so the edge's writes pile up).
func (s *subscriber) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

// goOffline closes the current connection and does not reconnect until
// resume.
func (s *subscriber) goOffline() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
	s.offline = true
	if s.cancelC != nil {
		s.cancelC()
	}
}

// tamper makes the next connection resume from f(last id) instead of the
// last id: only to check that the checker notices a lossy resume.
func (s *subscriber) tamper(f func(string) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rewrite = f
}

// resume undoes pause and goOffline.
func (s *subscriber) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
	s.offline = false
}

// runSSE runs one SSE connection to e until it ends; it reports whether
// the connection opened (a refusal is none) and how long to wait before
// the next one (0: the default backoff).
func (s *subscriber) runSSE(ctx context.Context, e *edgeProc, lastID string, down time.Time) (bool, time.Duration) {
	u := e.url + "/sse/" + url.PathEscape(s.name) + "?clientId=" + url.QueryEscape(s.id)
	h := http.Header{}
	if lastID != "" {
		h.Set("Last-Event-ID", lastID)
	}
	st, err := sseclient.Dial(ctx, s.client, u, h)
	if err != nil {
		return false, s.reconnectTime()
	}
	defer st.Close()
	ev, err := st.Next()
	if err == nil {
		s.setRetry(ev.Retry)
		if ev.Type == typeRefused {
			var r struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal([]byte(ev.Data), &r)
			s.countRefusal(r.Reason)
			return false, s.reconnectTime()
		}
	}
	conn := s.beginConn(e, lastID, down)
	for ; err == nil; ev, err = st.Next() {
		s.setRetry(ev.Retry)
		s.record(conn, ev.Type, ev.ID, ev.Data)
		if !s.waitGate(ctx, false) {
			s.endConn(conn, ctx.Err())
			return true, s.reconnectTime()
		}
	}
	s.endConn(conn, err)
	return true, s.reconnectTime()
}

// typeRefused is the event an edge that does not take a connection sends.
const typeRefused = "herald.refused"

// setRetry keeps the reconnection time a stream set, as EventSource does.
func (s *subscriber) setRetry(ms int) {
	if ms > 0 {
		s.mu.Lock()
		s.retry = time.Duration(ms) * time.Millisecond
		s.mu.Unlock()
	}
}

// reconnectTime is the SSE reconnection time in force (0 when no stream
// set one).
func (s *subscriber) reconnectTime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retry
}

func (s *subscriber) countRefusal(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused == nil {
		s.refused = map[string]int{}
	}
	s.refused[reason]++
}

// refusals returns how many times an edge refused the subscriber.
func (s *subscriber) refusals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.refused {
		n += k
	}
	return n
}

// envelope is a herald.v1 WebSocket message.
type envelope struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// runWS runs one WebSocket connection (subprotocol herald.v1) to e; it
// reports whether the connection opened (a refusal is none) and how long
// to wait before the next one (0: the default backoff).
func (s *subscriber) runWS(ctx context.Context, e *edgeProc, lastID string, down time.Time) (bool, time.Duration) {
	q := url.Values{"clientId": {s.id}}
	if lastID != "" {
		q.Set("lastEventId", lastID)
	}
	u := "ws" + strings.TrimPrefix(e.url, "http") + "/ws/" + strings.TrimPrefix(s.name, "/") + "?" + q.Encode()
	dctx, cancel := context.WithTimeout(ctx, responseWithin)
	ws, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: s.client, Subprotocols: []string{"herald.v1"}})
	cancel()
	var retryAfter time.Duration
	if resp != nil {
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
			retryAfter = time.Duration(n) * time.Second
		}
		if resp.Body != nil {
			resp.Body.Close()
		}
	}
	if err != nil {
		return false, 0
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	_, b, err := ws.Read(ctx)
	var ce websocket.CloseError
	if errors.As(err, &ce) && ce.Code == websocket.StatusTryAgainLater {
		// Refused (admission or drain): the close text is the reason.
		s.countRefusal(ce.Reason)
		return false, max(retryAfter, time.Second)
	}
	conn := s.beginConn(e, lastID, down)
	if ws.Subprotocol() != "herald.v1" {
		s.endConn(conn, fmt.Errorf("subprotocol %q, want herald.v1", ws.Subprotocol()))
		return true, 0
	}
	for ; err == nil; _, b, err = ws.Read(ctx) {
		var env envelope
		if err := json.Unmarshal(b, &env); err != nil {
			s.record(conn, "invalid", "", string(b))
			continue
		}
		typ := env.Event
		if typ == "" {
			typ = checker.TypeMessage
		}
		data := string(env.Data)
		var str string
		if json.Unmarshal(env.Data, &str) == nil {
			data = str // a string payload, as an SSE client would see it
		}
		s.record(conn, typ, env.ID, data)
		if !s.waitGate(ctx, false) {
			s.endConn(conn, ctx.Err())
			return true, 0
		}
	}
	s.endConn(conn, err)
	return true, 0
}

// snapshot returns a copy of the record.
func (s *subscriber) snapshot() checker.Subscriber {
	s.mu.Lock()
	defer s.mu.Unlock()
	return checker.Subscriber{
		ID: s.id, Kind: s.kind, Name: s.name,
		Events:      append([]checker.Event(nil), s.events...),
		Connections: append([]checker.Connection(nil), s.conns...),
	}
}

// progress returns the message events received, the highest position
// seen and the connections made so far.
func (s *subscriber) progress() (msgs int, pos uint64, conns int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs, s.pos, len(s.conns)
}

// at returns the epoch and position of the last id seen.
func (s *subscriber) at() (string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, s.pos
}

// currentEdge is the name of the edge of the latest connection.
func (s *subscriber) currentEdge() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) == 0 {
		return ""
	}
	return s.conns[len(s.conns)-1].Edge
}
