package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// Client-to-server messages (PODE-WIRE.md §7.1). A client sends one text
// message holding a JSON object
//
//	{"message":<any>, "path":"/x", "clientId":"...", "group":"...", "direct":true}
//
// where only "message" is required. The edge validates it and publishes it
// to <prefix>.in.<name>.<group>.<clientId>, whose tokens are the sender's
// verified identity (never what the body claims), with the headers below
// and, as the body, the validated object re-encoded compactly. Any NATS
// subscriber can handle it and answer through the event subjects.

// Headers of an inbound message: the sender's verified identity (the
// broker's names, kept here for code that reads inbound messages).
const (
	HeaderSenderName     = broker.HeaderSenderName     // the connection's name
	HeaderSenderGroup    = broker.HeaderSenderGroup    // its group as the client gave it; absent when none
	HeaderSenderClientID = broker.HeaderSenderClientID // its raw clientId (the unsigned id)
)

// ErrorEvent is the event type of the error messages a herald.v1 client
// receives for a message the edge rejected:
//
//	{"event":"herald.error","data":{"reason":"malformed","detail":"message: required"}}
//
// reason is one of malformed, binary, unavailable (the edge could not
// publish it or its echo), and for the echo echo_denied (the target name is
// not echo-enabled), broadcast_level and invalid (the target does not
// validate).
// Clients without the subprotocol get no error message (Pode logs and
// drops such messages); every rejection is counted in
// herald_edge_ws_inbound_total or herald_edge_ws_echo_total.
const ErrorEvent = "herald.error"

// Results of herald_edge_ws_inbound_total.
const (
	inboundOK          = "ok"           // published to NATS
	inboundMalformed   = "malformed"    // not a valid message object
	inboundBinary      = "binary"       // a binary message (only text is accepted)
	inboundTooBig      = "too_big"      // over WSReadLimit: closed with 1009
	inboundRateLimited = "rate_limited" // over WSInboundRate: closed with 1008
	inboundUnavailable = "unavailable"  // NATS refused the publish
	inboundBadUTF8     = "bad_utf8"     // a text message that is not UTF-8: closed with 1007
	inboundProtocol    = "protocol"     // a frame that breaks the protocol: closed with 1002
)

// Results of herald_edge_ws_echo_total.
const (
	echoOK             = "ok"
	echoDenied         = "denied"          // the target name is not echo-enabled
	echoBroadcastLevel = "broadcast_level" // the broadcast level forbids the send
	echoInvalid        = "invalid"         // the target does not validate
	echoUnavailable    = "unavailable"     // NATS refused the publish
)

var (
	wsInboundResults = []string{inboundOK, inboundMalformed, inboundBinary, inboundTooBig, inboundRateLimited, inboundUnavailable, inboundBadUTF8, inboundProtocol}
	wsEchoResults    = []string{echoOK, echoDenied, echoBroadcastLevel, echoInvalid, echoUnavailable}
)

// inboundMessage is a validated client message.
type inboundMessage struct {
	Message  json.RawMessage `json:"message"`            // compact JSON, never null
	Path     string          `json:"path,omitempty"`     // URL-decoded, as Pode does
	ClientID string          `json:"clientId,omitempty"` // a target clientId (raw or signed)
	Group    string          `json:"group,omitempty"`
	Direct   bool            `json:"direct,omitempty"`
}

// inboundWire is the client's JSON; pointers tell absent from empty.
type inboundWire struct {
	Message  json.RawMessage `json:"message"`
	Path     *string         `json:"path"`
	ClientID *string         `json:"clientId"`
	Group    *string         `json:"group"`
	Direct   *bool           `json:"direct"`
}

// decodeInbound parses and validates a client message: exactly one JSON
// object, no fields but the five known ones (matched case-insensitively,
// as PowerShell reads them), "message" present and not null, "path",
// "clientId" and "group" strings within the identity limits, "direct" a
// boolean. null stands for an absent optional field.
func decodeInbound(b []byte) (inboundMessage, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return inboundMessage{}, errors.New("want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var w inboundWire
	if err := dec.Decode(&w); err != nil {
		return inboundMessage{}, fmt.Errorf("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return inboundMessage{}, errors.New("malformed JSON: data after the object")
	}
	raw := bytes.TrimSpace(w.Message)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return inboundMessage{}, errors.New("message: required")
	}
	var m inboundMessage
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return inboundMessage{}, fmt.Errorf("message: %v", err)
	}
	m.Message = buf.Bytes()
	if w.Path != nil && *w.Path != "" {
		p, err := url.QueryUnescape(*w.Path)
		if err != nil {
			return inboundMessage{}, errors.New("path: bad URL encoding")
		}
		if err := policy.ValidateName(p); err != nil {
			return inboundMessage{}, fmt.Errorf("path: %v", err)
		}
		m.Path = p
	}
	if w.Group != nil {
		if err := policy.ValidateGroup(*w.Group); err != nil {
			return inboundMessage{}, err
		}
		m.Group = *w.Group
	}
	if w.ClientID != nil {
		if err := policy.ValidateClientID(*w.ClientID); err != nil {
			return inboundMessage{}, err
		}
		m.ClientID = *w.ClientID
	}
	if w.Direct != nil {
		m.Direct = *w.Direct
	}
	return m, nil
}

// encode returns the message as the compact JSON object published on NATS.
func (m inboundMessage) encode() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(m) // cannot fail: Message is valid JSON
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// inboundState is a connection's inbound bookkeeping, owned by its reader.
type inboundState struct {
	lim *rate.Limiter // made on the first message: receive-only clients pay nothing
}

// handleInbound handles one client message. It reports whether the reader
// must stop because the connection is being closed.
func (e *Edge) handleInbound(c *conn, st *inboundState, binary bool, data []byte) (stop bool) {
	if !c.isOpen() {
		return true
	}
	if st.lim == nil {
		st.lim = rate.NewLimiter(rate.Limit(e.cfg.WSInboundRate), e.cfg.WSInboundBurst)
	}
	if !st.lim.Allow() {
		e.m.wsInbound.WithLabelValues(inboundRateLimited).Inc()
		if e.warn.Allow("ws_rate_limited") {
			e.log.Warn("WebSocket client over the inbound rate limit; closed with 1008 (logged once per interval)",
				"name", c.name, "clientId", c.id)
		}
		c.close(ReasonPolicy)
		return true
	}
	if binary {
		e.m.wsInbound.WithLabelValues(inboundBinary).Inc()
		e.inboundError(c, inboundBinary, "only text messages are accepted")
		return false
	}
	if !utf8.Valid(data) {
		// RFC 6455 §8.1: a text message must be UTF-8; the endpoint fails
		// the connection with 1007.
		e.m.wsInbound.WithLabelValues(inboundBadUTF8).Inc()
		c.close(ReasonBadData)
		return true
	}
	m, err := decodeInbound(data)
	if err != nil {
		e.m.wsInbound.WithLabelValues(inboundMalformed).Inc()
		if e.warn.Allow("ws_malformed") {
			e.log.Warn("malformed WebSocket client message (dropped; logged once per interval)",
				"name", c.name, "clientId", c.id, "err", err)
		}
		e.inboundError(c, inboundMalformed, err.Error())
		return false
	}

	if err := e.pub.PublishInbound(broker.Address{Name: c.name, Group: c.group, ClientID: c.id}, m.encode()); err != nil {
		e.m.wsInbound.WithLabelValues(inboundUnavailable).Inc()
		if e.warn.Allow("ws_inbound_publish") {
			e.log.Warn("could not publish a WebSocket client message (logged once per interval)", "name", c.name, "err", err)
		}
		e.inboundError(c, inboundUnavailable, "the message could not be published")
	} else {
		e.m.wsInbound.WithLabelValues(inboundOK).Inc()
	}
	if e.echoEnabled(c.name) {
		e.echo(c, m)
	}
	return false
}

// inboundError tells a herald.v1 client why its message was rejected.
// Clients of the raw format get nothing, as with Pode.
func (e *Edge) inboundError(c *conn, reason, detail string) {
	if c.format != formatWSEnvelope {
		return
	}
	data, _ := json.Marshal(struct {
		Reason string `json:"reason"`
		Detail string `json:"detail,omitempty"`
	}{reason, detail})
	c.push(encodeEvent(formatWSEnvelope, "", ErrorEvent, data), nil)
}

// echoEnabled reports whether Pode's default echo is on for name.
func (e *Edge) echoEnabled(name string) bool {
	return slices.Contains(e.cfg.WSEchoNames, name) || slices.Contains(e.cfg.WSEchoNames, policy.AnyName)
}

// echo is Pode's default handling of a client message nobody handles
// (Send-PodeSignal -Value message -Path path -Group group -ClientId clientId):
//
//   - "direct": true sends the message back to the sender only;
//   - otherwise to "path", which must be echo-enabled too; without a path,
//     to every name when "*" is enabled (as Pode does), else to the
//     sender's own name;
//   - "group" and "clientId" narrow the send.
//
// The send must pass the broadcast levels, exactly as a producer's would.
func (e *Edge) echo(c *conn, m inboundMessage) {
	data := eventData(m.Message)
	if m.Direct {
		// Pode writes straight to the sender's socket: no broadcast level.
		if c.push(encodeEvent(c.format, "", "", data), nil) {
			e.m.wsEcho.WithLabelValues(echoOK).Inc()
		}
		return
	}
	target := broker.Target{Name: c.name}
	switch {
	case m.Path != "":
		if !e.echoEnabled(m.Path) {
			e.m.wsEcho.WithLabelValues(echoDenied).Inc()
			e.inboundError(c, "echo_denied", "echo is not enabled for "+m.Path)
			return
		}
		target.Name = m.Path
	case slices.Contains(e.cfg.WSEchoNames, policy.AnyName):
		target = broker.Target{AllNames: true}
	}
	if m.Group != "" {
		target.Groups = []string{m.Group}
	}
	if m.ClientID != "" {
		target.ClientIDs = []string{m.ClientID}
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.WriteTimeout)
	defer cancel()
	_, err := e.pub.Publish(ctx, target, broker.Event{Data: data})
	switch {
	case err == nil:
		e.m.wsEcho.WithLabelValues(echoOK).Inc()
	case errors.Is(err, broker.ErrBroadcastLevel):
		e.m.wsEcho.WithLabelValues(echoBroadcastLevel).Inc()
		e.inboundError(c, echoBroadcastLevel, err.Error())
	case errors.Is(err, broker.ErrInvalid):
		e.m.wsEcho.WithLabelValues(echoInvalid).Inc()
		e.inboundError(c, echoInvalid, err.Error())
	default:
		e.m.wsEcho.WithLabelValues(echoUnavailable).Inc()
		e.inboundError(c, echoUnavailable, "the echo could not be published")
	}
}
