package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Lifecycle events: an edge publishes one connect event when a connection
// is registered and one disconnect event when it is closed for good, on
//
//	<prefix>.sys.lifecycle.<event>.<edge>.<name>.<group>.<clientId>
//
// (tokens escaped as in event subjects: the group lowercased, "_" when
// there is none; the raw clientId). The body is a JSON LifecycleEvent. A
// connection is identified by its Conn token: a clientId can have two
// tokens for a moment (a reconnect that replaces the older connection), a
// token never has two connects without a disconnect between them, except
// after a lost edge comes back (Restored).
//
// When an edge dies without closing its connections, an edge that watched
// it publishes their disconnects with reason ReasonEdgeLost (see
// watch.go's companion, lifecycle_watch.go).

// Lifecycle event types (LifecycleEvent.Event and the subject's first token).
const (
	EventConnect    = "connect"
	EventDisconnect = "disconnect"
)

// ReasonEdgeLost is the disconnect reason an edge reports for the
// connections of an edge that stopped answering without closing them.
// Every other reason is one of the edge's close reasons.
const ReasonEdgeLost = "edge_lost"

// Lifecycle headers: every lifecycle message carries the connection's
// token and the publishing edge's event counter, so that a watching edge
// reads them without decoding the body.
const (
	// HeaderSeq is the edge's lifecycle counter: 1, 2, 3… per edge
	// incarnation, in publication order. Absent on edge_lost events.
	HeaderSeq = "Herald-Seq"
)

// LifecycleEvent is the body of a lifecycle message: the event, the
// connection (ConnInfo's fields, flat in the JSON) and what a disconnect
// adds.
type LifecycleEvent struct {
	// Event is EventConnect or EventDisconnect.
	Event string `json:"event"`
	// ConnInfo is the connection: its edge, its cluster-wide token (Conn),
	// its identity (the group as the client gave it, the clientId as the
	// client was shown it: the signed form when signing is on), its
	// transport and when it connected.
	ConnInfo
	// Reason (disconnect) is the close reason's code, or ReasonEdgeLost.
	Reason string `json:"reason,omitempty"`
	// DisconnectedAt (disconnect) is when it closed; for ReasonEdgeLost,
	// when its edge was last heard from.
	DisconnectedAt *time.Time `json:"disconnectedAt,omitempty"`
	// DurationMS (disconnect) is DisconnectedAt − connectedAt in milliseconds.
	DurationMS int64 `json:"durationMs,omitempty"`
	// Restored (connect) marks a connection announced again by an edge
	// that other edges had reported lost (it was cut off from NATS, not
	// dead): its clients were still connected.
	Restored bool `json:"restored,omitempty"`
	// ReportedBy (ReasonEdgeLost) is the edge that published the event.
	ReportedBy string `json:"reportedBy,omitempty"`
	// Seq is the edge's lifecycle counter (HeaderSeq); 0 on edge_lost events.
	Seq uint64 `json:"seq,omitempty"`
}

// ConnInfo describes one connection, as presence answers and lifecycle
// events report it.
type ConnInfo struct {
	// Edge is the edge that holds (or held) it.
	Edge string `json:"edge"`
	// Conn is its cluster-wide token: one connection, never reused.
	Conn string `json:"conn"`
	// Name, Group and ClientID are its identity: the group as the client
	// gave it, the clientId as the client was shown it.
	Name     string `json:"name"`
	Group    string `json:"group"`
	ClientID string `json:"clientId"`
	// Transport is "sse_h1", "sse_h2" or "ws".
	Transport string `json:"transport"`
	// Since is when it connected.
	Since time.Time `json:"connectedAt"`
}

// LifecycleSubject is the subject of a lifecycle event.
func (s Subjects) LifecycleSubject(event, edge, name, group, clientID string) string {
	return s.sys + "lifecycle." + event + "." + EscapeToken(edge) + "." + s.tokens(Address{Name: name, Group: group, ClientID: clientID})
}

// LifecycleAll matches every lifecycle event: <prefix>.sys.lifecycle.>
func (s Subjects) LifecycleAll() string { return s.sys + "lifecycle.>" }

// LifecycleOfEdge matches the lifecycle events of one edge.
func (s Subjects) LifecycleOfEdge(edge string) string {
	return s.sys + "lifecycle.*." + EscapeToken(edge) + ".>"
}

// LifecycleOfName matches the lifecycle events of one connection name, of
// every edge: <prefix>.sys.lifecycle.*.*.<name>.>
func (s Subjects) LifecycleOfName(name string) string {
	return s.sys + "lifecycle.*.*." + EscapeToken(name) + ".>"
}

// ParseLifecycle parses a lifecycle subject.
func (s Subjects) ParseLifecycle(subject string) (event, edge string, a Address, err error) {
	rest, ok := strings.CutPrefix(subject, s.sys+"lifecycle.")
	if !ok {
		return "", "", Address{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	ev, rest, ok1 := strings.Cut(rest, ".")
	ed, rest, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || (ev != EventConnect && ev != EventDisconnect) {
		return "", "", Address{}, fmt.Errorf("%w: %q is not a lifecycle subject", ErrBadSubject, subject)
	}
	if edge, err = UnescapeToken(ed); err != nil {
		return "", "", Address{}, err
	}
	a, err = parseTokens(subject, rest)
	return ev, edge, a, err
}

// appendConnEvent appends the JSON body of a lifecycle event for c.
func appendConnEvent(b []byte, event string, c *ConnInfo, d *disconnect, restored bool, seq uint64) []byte {
	b = append(b, `{"event":`...)
	b = appendJSON(b, event)
	b = append(b, `,"edge":`...)
	b = appendJSON(b, c.Edge)
	b = append(b, `,"conn":`...)
	b = appendJSON(b, c.Conn)
	b = append(b, `,"name":`...)
	b = appendJSON(b, c.Name)
	b = append(b, `,"group":`...)
	b = appendJSON(b, c.Group)
	b = append(b, `,"clientId":`...)
	b = appendJSON(b, c.ClientID)
	b = append(b, `,"transport":`...)
	b = appendJSON(b, c.Transport)
	b = append(b, `,"connectedAt":"`...)
	b = c.Since.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if d != nil {
		b = append(b, `,"reason":`...)
		b = appendJSON(b, d.reason)
		b = append(b, `,"disconnectedAt":"`...)
		b = d.at.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","durationMs":`...)
		b = strconv.AppendInt(b, max(d.at.Sub(c.Since).Milliseconds(), 0), 10)
		if d.reportedBy != "" {
			b = append(b, `,"reportedBy":`...)
			b = appendJSON(b, d.reportedBy)
		}
	}
	if restored {
		b = append(b, `,"restored":true`...)
	}
	if seq > 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
	}
	return append(b, '}')
}

// disconnect is what a disconnect event adds to a connection's info.
type disconnect struct {
	reason     string
	at         time.Time
	reportedBy string
}

const hexDigits = "0123456789abcdef"

// appendJSON appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSON(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// DecodeLifecycle decodes a lifecycle message's body.
func DecodeLifecycle(m *nats.Msg) (LifecycleEvent, error) {
	var ev LifecycleEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return LifecycleEvent{}, fmt.Errorf("broker: lifecycle event on %s: %w", m.Subject, err)
	}
	if ev.Event != EventConnect && ev.Event != EventDisconnect {
		return LifecycleEvent{}, fmt.Errorf("broker: lifecycle event on %s: unknown event %q", m.Subject, ev.Event)
	}
	return ev, nil
}

// lifecycle publishes one edge's lifecycle events in order, numbering
// them. The numbering and the publication happen under one lock, so that
// the order on the wire is the order of the numbers, and a heartbeat that
// carries the last number tells a watcher whether it missed one.
type lifecycle struct {
	nc       *nats.Conn
	subjects Subjects
	edge     string
	inc      string // the edge's incarnation (HeaderIncarnation)

	mu  sync.Mutex
	seq uint64      // guarded by mu
	buf []byte      // guarded by mu: the body being built (nats.go copies it)
	hdr nats.Header // guarded by mu: the headers, reused likewise
}

// publish publishes one event for c (d nil: a connect).
func (l *lifecycle) publish(c *ConnInfo, d *disconnect, restored bool) error {
	event := EventConnect
	if d != nil {
		event = EventDisconnect
	}
	subject := l.subjects.LifecycleSubject(event, l.edge, c.Name, c.Group, c.ClientID)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	l.buf = appendConnEvent(l.buf[:0], event, c, d, restored, l.seq)
	if l.hdr == nil {
		l.hdr = nats.Header{HeaderConn: {""}, HeaderSeq: {""}, HeaderIncarnation: {l.inc}}
	}
	l.hdr[HeaderConn][0], l.hdr[HeaderSeq][0] = c.Conn, strconv.FormatUint(l.seq, 10)
	m := nats.Msg{Subject: subject, Data: l.buf, Header: l.hdr}
	if err := l.nc.PublishMsg(&m); err != nil {
		return natsError(err)
	}
	return nil
}

// current returns the number of the last event published.
func (l *lifecycle) current() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// LifecycleStreamConfig configures the optional JetStream stream that
// keeps lifecycle events, so that a backend that subscribes late or
// restarts reads what it missed (a durable consumer on the stream).
type LifecycleStreamConfig struct {
	// Stream is the stream name. Default: the subject prefix in upper case
	// with dots as underscores, plus "_LIFECYCLE" ("HERALD_LIFECYCLE").
	Stream string
	// MaxAge is how long events are kept. Required: positive.
	MaxAge time.Duration
	// Replicas is the replication factor: 1 on one node, 3 in a cluster.
	// Default 1.
	Replicas int
}

// Validate reports the first bad field.
func (c LifecycleStreamConfig) Validate() error {
	switch {
	case c.MaxAge <= 0:
		return errors.New("broker: lifecycle stream MaxAge must be positive")
	case c.Replicas < 0 || c.Replicas > 5:
		return errors.New("broker: lifecycle stream Replicas must be 1 to 5")
	case strings.ContainsAny(c.Stream, ". *>"):
		return fmt.Errorf("broker: lifecycle stream name %q must not contain '.', '*', '>' or spaces", c.Stream)
	}
	return nil
}

// StreamConfig returns the JetStream configuration of the stream: every
// lifecycle subject, limits retention by age, file storage.
func (c LifecycleStreamConfig) StreamConfig(s Subjects) jetstream.StreamConfig {
	name := c.Stream
	if name == "" {
		name = strings.ToUpper(strings.ReplaceAll(s.Prefix(), ".", "_")) + "_LIFECYCLE"
	}
	return jetstream.StreamConfig{
		Name:        name,
		Description: "Herald connection lifecycle events",
		Subjects:    []string{s.LifecycleAll()},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		Replicas:    max(c.Replicas, 1),
		Storage:     jetstream.FileStorage,
	}
}

// EnsureLifecycleStream creates the lifecycle stream when it does not
// exist. An existing stream is used as it is (whoever created it owns its
// limits), but it must store the lifecycle subjects.
func EnsureLifecycleStream(ctx context.Context, nc *nats.Conn, s Subjects, c LifecycleStreamConfig) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	sc := c.StreamConfig(s)
	st, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, sc.Name)
		}
	}
	if err != nil {
		return "", fmt.Errorf("broker: lifecycle stream %s: %w", sc.Name, err)
	}
	if got := st.CachedInfo().Config.Subjects; !slices.Contains(got, sc.Subjects[0]) {
		return "", fmt.Errorf("broker: stream %s exists with subjects %v, want %s among them", sc.Name, got, sc.Subjects[0])
	}
	return sc.Name, nil
}
