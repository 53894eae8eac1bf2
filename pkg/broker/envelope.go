package broker

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// Envelope header names. Edges read them case-insensitively, because NATS
// header names are case-sensitive and clients differ in how they case them.
const (
	HeaderEvent   = "Herald-Event"   // event type; empty or absent means "message"
	HeaderID      = "Herald-Id"      // event id (the SSE id: line)
	HeaderControl = "Herald-Control" // "close": close the matching connections
)

// ControlClose is the HeaderControl value that closes matching connections.
const ControlClose = "close"

// Event is what a producer sends: an optional id and type, and the data,
// sent to clients as-is (a JSON value stays JSON).
type Event struct {
	ID   string
	Type string
	Data []byte
}

// Message is a decoded NATS message: where it goes and what it carries.
type Message struct {
	Addr    Address
	Event   Event
	Control string // "" for an event, ControlClose to close connections
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
// headers is a plain "message" event whose data is the body.
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
