package broker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Herald's NATS header names. Edges read the envelope headers
// case-insensitively, because NATS header names are case-sensitive and
// clients differ in how they case them.
const (
	// HeaderEvent is the event type; empty or absent means "message".
	HeaderEvent = "Herald-Event"
	// HeaderID is the producer's event id (part of the SSE id: line).
	HeaderID = "Herald-Id"
	// HeaderControl asks edges to act instead of delivering: ControlClose
	// on an event subject closes the matching connections.
	HeaderControl = "Herald-Control"

	// HeaderConn names the connection that sent a replace notice (an
	// edge's own traffic on the sys.conn subjects).
	HeaderConn = "Herald-Conn"
	// HeaderSince is that connection's connect time, unix nanoseconds.
	HeaderSince = "Herald-Since"

	// HeaderSenderName is the name of the WebSocket connection that sent
	// an inbound message (herald.in subjects).
	HeaderSenderName = "Herald-Sender-Name"
	// HeaderSenderGroup is its group as the client gave it; absent when none.
	HeaderSenderGroup = "Herald-Sender-Group"
	// HeaderSenderClientID is its raw (unsigned) clientId.
	HeaderSenderClientID = "Herald-Sender-Client-Id"
)

// Headers JetStream sets on the messages the history stream republishes.
const (
	// HeaderSequence is the message's position in the stream.
	HeaderSequence = "Nats-Sequence"
	// HeaderLastSequence is the position of the previous message on the
	// same exact subject (0 for the first).
	HeaderLastSequence = "Nats-Last-Sequence"
)

// Control values of HeaderControl.
const (
	// ControlClose closes the connections an event subject matches.
	ControlClose = "close"
	// ControlReplace is an edge's notice that a connection with a name and
	// clientId opened: other edges close the one it replaces.
	ControlReplace = "replace"
)

// Event is what a producer sends: an optional id and type, and the data,
// sent to clients as-is (a JSON value stays JSON).
type Event struct {
	ID   string
	Type string
	Data []byte
}

// Kind says what a received message asks of an edge.
type Kind uint8

// Message kinds.
const (
	// KindInvalid is a message the edge cannot use; Message.Reject says why.
	KindInvalid Kind = iota
	// KindEvent is an event to deliver to the connections Addr matches.
	KindEvent
	// KindClose closes the connections Addr matches (each receives
	// pode.close first).
	KindClose
	// KindReplace is another edge's notice of a new connection with
	// Addr's name and clientId: the older one with that identity closes.
	KindReplace
)

// Reasons a message is KindInvalid. They are metric labels.
const (
	RejectBadSubject = "bad_subject" // not a Herald subject of the expected kind
	RejectNoSequence = "no_sequence" // a live message without a valid stream position
	RejectBadControl = "bad_control" // an unknown control value, or a control no edge would send
)

// Message is a NATS message decoded once, where it enters Herald: where it
// goes, what it carries, and its position in the history stream.
type Message struct {
	Kind Kind
	// Addr is the event's address (group lowercased, clientId raw). For
	// KindReplace, the new connection's name and clientId.
	Addr Address
	// Event is the event of a KindEvent message.
	Event Event
	// Seq is the message's position in the history stream; 0 when history
	// is off. Prev is the position of the previous message on the same
	// subject (0 for the first).
	Seq, Prev uint64
	// Conn and Since identify the connection that sent a KindReplace
	// notice: its cluster-wide token and its connect time (unix nanoseconds).
	Conn  string
	Since int64
	// Reject says why a KindInvalid message cannot be used (Reject*
	// constants) and Err gives the detail.
	Reject string
	Err    error
}

// invalidMsg is a KindInvalid message.
func invalidMsg(reason string, err error) Message {
	return Message{Kind: KindInvalid, Reject: reason, Err: err}
}

// NewMsg builds the NATS message for an event on subject.
func NewMsg(subject string, ev Event) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: ev.Data}
	if ev.ID != "" || ev.Type != "" {
		m.Header = nats.Header{}
		if ev.Type != "" {
			m.Header[HeaderEvent] = []string{ev.Type}
		}
		if ev.ID != "" {
			m.Header[HeaderID] = []string{ev.ID}
		}
	}
	return m
}

// NewCloseMsg builds the control message that closes the connections
// matching subject (each receives pode.close first).
func NewCloseMsg(subject string) *nats.Msg {
	return &nats.Msg{Subject: subject, Header: nats.Header{HeaderControl: []string{ControlClose}}}
}

// HeaderValue returns the first value of header key, matched case-insensitively.
func HeaderValue(h nats.Header, key string) string {
	if len(h) == 0 {
		return ""
	}
	if v, ok := h[key]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// DecodeEvent reads the envelope of a NATS message. A message with no
// headers is a plain "message" event whose data is the body. control is
// the lowercased HeaderControl value ("" for an event).
func DecodeEvent(m *nats.Msg) (ev Event, control string) {
	ev.Data = m.Data
	if len(m.Header) == 0 {
		return ev, ""
	}
	ev.Type = HeaderValue(m.Header, HeaderEvent)
	ev.ID = HeaderValue(m.Header, HeaderID)
	control = strings.ToLower(strings.TrimSpace(HeaderValue(m.Header, HeaderControl)))
	return ev, control
}

// LiveSequence reads the stream position and the previous position on the
// same subject from a republished message's headers. Only the values
// JetStream wrote count: it appends its own after any a producer set, so
// the last value of each header is JetStream's. A position must be
// positive and after the previous one.
func LiveSequence(h nats.Header) (seq, prev uint64, ok bool) {
	seq, ok = lastUint(h, HeaderSequence)
	if !ok || seq == 0 {
		return 0, 0, false
	}
	if _, present := h[HeaderLastSequence]; present {
		if prev, ok = lastUint(h, HeaderLastSequence); !ok || prev >= seq {
			return 0, 0, false
		}
	}
	return seq, prev, true
}

// lastUint parses the last value of header key (exact case: JetStream's own).
func lastUint(h nats.Header, key string) (uint64, bool) {
	v := h[key]
	if len(v) == 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(v[len(v)-1], 10, 64)
	return n, err == nil
}

var errEmptyIdentity = errors.New("a replace notice needs a name and a clientId")

// Decode turns a NATS message an edge receives into a Message: an event or
// a close on s's event subjects (with live, s is the Live() scheme and the
// message must carry the stream position JetStream republished it with),
// or another edge's connection notice on the sys.conn subjects. Anything
// else is KindInvalid with the reason. Decode never fails otherwise and
// keeps references to m's subject, headers and data.
func (s Subjects) Decode(m *nats.Msg, live bool) Message {
	if s.IsSysConn(m.Subject) {
		return s.decodeReplace(m)
	}
	return s.decodeEvent(m, live)
}

// decodeEvent decodes a message on an event subject (ev or live): its
// address, envelope and, when positioned, its stream position.
func (s Subjects) decodeEvent(m *nats.Msg, positioned bool) Message {
	addr, err := s.ParseEvent(m.Subject)
	if err != nil {
		return invalidMsg(RejectBadSubject, err)
	}
	msg := Message{Kind: KindEvent, Addr: addr}
	if positioned {
		var ok bool
		if msg.Seq, msg.Prev, ok = LiveSequence(m.Header); !ok {
			return invalidMsg(RejectNoSequence, fmt.Errorf("%s has no valid %s", m.Subject, HeaderSequence))
		}
	}
	var control string
	msg.Event, control = DecodeEvent(m)
	switch control {
	case "":
	case ControlClose:
		msg.Kind, msg.Event = KindClose, Event{}
	default:
		bad := invalidMsg(RejectBadControl, fmt.Errorf("unknown %s value %q", HeaderControl, control))
		bad.Seq, bad.Prev = msg.Seq, msg.Prev
		return bad
	}
	return msg
}

// decodeReplace decodes an edge's connection notice on a sys.conn subject.
// A notice must name one connection exactly: a name, a clientId and the
// sender's token and connect time; anything else is KindInvalid.
func (s Subjects) decodeReplace(m *nats.Msg) Message {
	name, id, err := s.ParseSysConn(m.Subject)
	if err != nil {
		return invalidMsg(RejectBadControl, err)
	}
	if name == "" || id == "" {
		return invalidMsg(RejectBadControl, errEmptyIdentity)
	}
	if c := HeaderValue(m.Header, HeaderControl); c != ControlReplace {
		return invalidMsg(RejectBadControl, fmt.Errorf("connection notice with %s %q", HeaderControl, c))
	}
	conn := HeaderValue(m.Header, HeaderConn)
	since, err := strconv.ParseInt(HeaderValue(m.Header, HeaderSince), 10, 64)
	if conn == "" || err != nil || since <= 0 {
		return invalidMsg(RejectBadControl, fmt.Errorf("connection notice without a valid %s and %s", HeaderConn, HeaderSince))
	}
	return Message{Kind: KindReplace, Addr: Address{Name: name, ClientID: id}, Conn: conn, Since: since}
}

// Conn is the NATS connection Herald runs on: nats.go's *nats.Conn. Code
// that hands a connection to Herald (edge.New) names it through this alias,
// so that only this package speaks NATS.
type Conn = nats.Conn
