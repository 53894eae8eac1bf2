package broker_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	tests := []struct {
		name        string
		ev          broker.Event
		wantHeaders []string
	}{
		{"full", broker.Event{ID: "42", Type: "order", Data: []byte(`{"n":1}`)}, []string{broker.HeaderEvent, broker.HeaderID}},
		{"type only", broker.Event{Type: "order", Data: []byte("x")}, []string{broker.HeaderEvent}},
		{"id only", broker.Event{ID: "42", Data: []byte("x")}, []string{broker.HeaderID}},
		{"plain", broker.Event{Data: []byte("hello")}, nil},
		{"empty", broker.Event{}, nil},
		{"multi-line data", broker.Event{Type: "t", Data: []byte("a\nb\r\nc")}, []string{broker.HeaderEvent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := broker.NewMsg("herald.ev.Orders._._", tt.ev)
			if m.Subject != "herald.ev.Orders._._" {
				t.Errorf("Subject = %q", m.Subject)
			}
			if len(m.Header) != len(tt.wantHeaders) {
				t.Errorf("Header = %v, want keys %v", m.Header, tt.wantHeaders)
			}
			for _, h := range tt.wantHeaders {
				if _, ok := m.Header[h]; !ok {
					t.Errorf("Header lacks %q: %v", h, m.Header)
				}
			}
			ev, control := broker.DecodeEvent(m)
			if control != "" {
				t.Errorf("control = %q, want none", control)
			}
			if ev.ID != tt.ev.ID || ev.Type != tt.ev.Type || !bytes.Equal(ev.Data, tt.ev.Data) {
				t.Errorf("DecodeEvent(NewMsg(%+v)) = %+v", tt.ev, ev)
			}
		})
	}
}

func TestDecodePlainMessage(t *testing.T) {
	// What "nats pub herald.ev.Orders._._ hello" sends: no headers at all.
	for _, h := range []nats.Header{nil, {}} {
		ev, control := broker.DecodeEvent(&nats.Msg{Subject: "herald.ev.Orders._._", Data: []byte("hello"), Header: h})
		if ev.Type != "" || ev.ID != "" || string(ev.Data) != "hello" || control != "" {
			t.Errorf("DecodeEvent(plain, header %v) = %+v, %q", h, ev, control)
		}
	}
	// Headers that are not ours leave a plain message.
	ev, control := broker.DecodeEvent(&nats.Msg{Data: []byte("x"), Header: nats.Header{"Nats-Msg-Id": {"1"}}})
	if ev.Type != "" || ev.ID != "" || string(ev.Data) != "x" || control != "" {
		t.Errorf("DecodeEvent(foreign headers) = %+v, %q", ev, control)
	}
}

func TestDecodeHeadersCaseInsensitive(t *testing.T) {
	tests := []struct {
		name        string
		header      nats.Header
		typ, id     string
		wantControl string
	}{
		{"canonical", nats.Header{"Herald-Event": {"e"}, "Herald-Id": {"1"}}, "e", "1", ""},
		{"lowercase", nats.Header{"herald-event": {"e"}, "herald-id": {"1"}}, "e", "1", ""},
		{"uppercase", nats.Header{"HERALD-EVENT": {"e"}, "HERALD-ID": {"1"}}, "e", "1", ""},
		{"ID spelled as in JS clients", nats.Header{"Herald-Event": {"e"}, "Herald-ID": {"1"}}, "e", "1", ""},
		{"first value wins", nats.Header{"Herald-Id": {"1", "2"}}, "", "1", ""},
		{"empty exact key falls back", nats.Header{"Herald-Id": {}, "herald-id": {"7"}}, "", "7", ""},
		{"control close", nats.Header{"Herald-Control": {"close"}}, "", "", "close"},
		{"control Close", nats.Header{"Herald-Control": {"Close"}}, "", "", "close"},
		{"control CLOSE lowercase key", nats.Header{"herald-control": {" CLOSE "}}, "", "", "close"},
		{"control unknown passes through", nats.Header{"Herald-Control": {"Drain"}}, "", "", "drain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, control := broker.DecodeEvent(&nats.Msg{Data: []byte("d"), Header: tt.header})
			if ev.Type != tt.typ || ev.ID != tt.id || control != tt.wantControl || string(ev.Data) != "d" {
				t.Errorf("DecodeEvent = {ID:%q Type:%q Data:%q}, %q; want {ID:%q Type:%q}, %q",
					ev.ID, ev.Type, ev.Data, control, tt.id, tt.typ, tt.wantControl)
			}
		})
	}
}

func TestHeaderValue(t *testing.T) {
	h := nats.Header{"Herald-ID": {"a"}, "x-other": {"b"}, "Empty": {}}
	for key, want := range map[string]string{
		"Herald-Id": "a",
		"herald-id": "a",
		"X-Other":   "b",
		"Empty":     "",
		"Missing":   "",
	} {
		if got := broker.HeaderValue(h, key); got != want {
			t.Errorf("HeaderValue(%q) = %q, want %q", key, got, want)
		}
	}
	if got := broker.HeaderValue(nil, "Herald-Id"); got != "" {
		t.Errorf("HeaderValue(nil) = %q", got)
	}
}

func TestCloseMsg(t *testing.T) {
	m := broker.NewCloseMsg("herald.ev.Orders._.abc")
	if m.Subject != "herald.ev.Orders._.abc" || len(m.Data) != 0 {
		t.Errorf("NewCloseMsg = %q, %q", m.Subject, m.Data)
	}
	ev, control := broker.DecodeEvent(m)
	if control != broker.ControlClose {
		t.Errorf("control = %q, want %q", control, broker.ControlClose)
	}
	if ev.Type != "" || ev.ID != "" {
		t.Errorf("close message decoded as event %+v", ev)
	}
}

// Decode reads what an edge receives once, at the border: events and
// closes on the event subjects (with their stream position when live),
// other edges' connection notices, and nothing else.
func TestDecode(t *testing.T) {
	ev := broker.MustSubjects("")
	live := ev.Live()
	pos := func(h nats.Header, seq, prev string) nats.Header {
		if h == nil {
			h = nats.Header{}
		}
		h.Add(broker.HeaderSequence, seq)
		if prev != "" {
			h.Add(broker.HeaderLastSequence, prev)
		}
		return h
	}
	notice := func(control, conn, since string) nats.Header {
		return nats.Header{broker.HeaderControl: {control}, broker.HeaderConn: {conn}, broker.HeaderSince: {since}}
	}
	tests := []struct {
		name   string
		s      broker.Subjects
		live   bool
		msg    *nats.Msg
		want   broker.Kind
		reject string
		check  func(m broker.Message) string
	}{
		{name: "plain event", s: ev, msg: &nats.Msg{Subject: "herald.ev.Orders._._", Data: []byte("hi")}, want: broker.KindEvent,
			check: func(m broker.Message) string {
				if m.Addr != (broker.Address{Name: "Orders"}) || string(m.Event.Data) != "hi" || m.Seq != 0 {
					return fmt.Sprintf("%+v", m)
				}
				return ""
			}},
		{name: "event with envelope and group", s: ev, msg: &nats.Msg{Subject: "herald.ev.Orders.admins.c1", Data: []byte("x"),
			Header: nats.Header{"herald-event": {"t"}, "Herald-ID": {"7"}}}, want: broker.KindEvent,
			check: func(m broker.Message) string {
				if m.Addr != (broker.Address{Name: "Orders", Group: "admins", ClientID: "c1"}) || m.Event.Type != "t" || m.Event.ID != "7" {
					return fmt.Sprintf("%+v", m)
				}
				return ""
			}},
		{name: "all names", s: ev, msg: &nats.Msg{Subject: "herald.ev._._._"}, want: broker.KindEvent,
			check: func(m broker.Message) string {
				if !m.Addr.AllNames() {
					return "not all names"
				}
				return ""
			}},
		{name: "close", s: ev, msg: broker.NewCloseMsg("herald.ev.Orders._.c1"), want: broker.KindClose},
		{name: "unknown control", s: ev, msg: &nats.Msg{Subject: "herald.ev.Orders._._", Header: nats.Header{broker.HeaderControl: {"drain"}}},
			want: broker.KindInvalid, reject: broker.RejectBadControl},
		{name: "not a herald subject", s: ev, msg: &nats.Msg{Subject: "other.Orders._._"}, want: broker.KindInvalid, reject: broker.RejectBadSubject},
		{name: "too few tokens", s: ev, msg: &nats.Msg{Subject: "herald.ev.Orders._"}, want: broker.KindInvalid, reject: broker.RejectBadSubject},
		{name: "bad escape", s: ev, msg: &nats.Msg{Subject: "herald.ev.Or%41ders._._"}, want: broker.KindInvalid, reject: broker.RejectBadSubject},
		{name: "live event with position", s: live, live: true,
			msg: &nats.Msg{Subject: "herald.live.Orders._._", Header: pos(nil, "42", "40")}, want: broker.KindEvent,
			check: func(m broker.Message) string {
				if m.Seq != 42 || m.Prev != 40 {
					return fmt.Sprintf("seq %d prev %d", m.Seq, m.Prev)
				}
				return ""
			}},
		{name: "live event without position", s: live, live: true, msg: &nats.Msg{Subject: "herald.live.Orders._._"},
			want: broker.KindInvalid, reject: broker.RejectNoSequence},
		// A producer's own Nats-Sequence comes first; JetStream appends its
		// own after it. Only JetStream's counts.
		{name: "forged position before JetStream's", s: live, live: true,
			msg:  &nats.Msg{Subject: "herald.live.Orders._._", Header: pos(nats.Header{broker.HeaderSequence: {"999999999"}}, "5", "3")},
			want: broker.KindEvent,
			check: func(m broker.Message) string {
				if m.Seq != 5 || m.Prev != 3 {
					return fmt.Sprintf("seq %d prev %d, want JetStream's 5 and 3", m.Seq, m.Prev)
				}
				return ""
			}},
		{name: "position zero", s: live, live: true, msg: &nats.Msg{Subject: "herald.live.Orders._._", Header: pos(nil, "0", "")},
			want: broker.KindInvalid, reject: broker.RejectNoSequence},
		{name: "previous not before position", s: live, live: true, msg: &nats.Msg{Subject: "herald.live.Orders._._", Header: pos(nil, "5", "5")},
			want: broker.KindInvalid, reject: broker.RejectNoSequence},
		{name: "connection notice", s: live, live: true,
			msg: &nats.Msg{Subject: "herald.sys.conn.Orders.c1", Header: notice("replace", "edge-1", "1700000000000000000")}, want: broker.KindReplace,
			check: func(m broker.Message) string {
				if m.Addr != (broker.Address{Name: "Orders", ClientID: "c1"}) || m.Conn != "edge-1" || m.Since != 1700000000000000000 {
					return fmt.Sprintf("%+v", m)
				}
				return ""
			}},
		// "_" decodes to the empty clientId, which would match every
		// connection of the name: no edge sends that.
		{name: "notice for any clientId", s: ev, msg: &nats.Msg{Subject: "herald.sys.conn.Orders._", Header: notice("replace", "x", "9")},
			want: broker.KindInvalid, reject: broker.RejectBadControl},
		{name: "notice without since", s: ev, msg: &nats.Msg{Subject: "herald.sys.conn.Orders.c1", Header: notice("replace", "x", "soon")},
			want: broker.KindInvalid, reject: broker.RejectBadControl},
		{name: "notice with a close", s: ev, msg: &nats.Msg{Subject: "herald.sys.conn.Orders.c1", Header: notice("close", "x", "9")},
			want: broker.KindInvalid, reject: broker.RejectBadControl},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.s.Decode(tt.msg, tt.live)
			if m.Kind != tt.want || m.Reject != tt.reject {
				t.Fatalf("Decode = kind %d reject %q (%v), want kind %d reject %q", m.Kind, m.Reject, m.Err, tt.want, tt.reject)
			}
			if (m.Kind == broker.KindInvalid) != (m.Err != nil) {
				t.Errorf("Err = %v for kind %d", m.Err, m.Kind)
			}
			if tt.check != nil {
				if bad := tt.check(m); bad != "" {
					t.Error(bad)
				}
			}
		})
	}
}

// Whatever arrives on NATS, Decode returns a Message: never a panic, and a
// KindInvalid always says why.
func FuzzDecode(f *testing.F) {
	f.Add("herald.ev.Orders._._", "Herald-Event", "t", []byte("x"), false)
	f.Add("herald.live.Orders.g.c", "Nats-Sequence", "12", []byte("{}"), true)
	f.Add("herald.sys.conn.Orders.c1", "Herald-Control", "replace", []byte(""), true)
	f.Add("herald.ev.%ZZ._._", "Herald-Control", "close", []byte(""), false)
	live := broker.MustSubjects("").Live()
	ev := broker.MustSubjects("")
	f.Fuzz(func(t *testing.T, subject, key, value string, data []byte, isLive bool) {
		s := ev
		if isLive {
			s = live
		}
		m := s.Decode(&nats.Msg{Subject: subject, Header: nats.Header{key: {value}}, Data: data}, isLive)
		switch m.Kind {
		case broker.KindInvalid:
			if m.Reject == "" || m.Err == nil {
				t.Fatalf("invalid message without a reason: %+v", m)
			}
		case broker.KindEvent, broker.KindClose:
			if isLive && m.Seq == 0 {
				t.Fatalf("live message without a position: %+v", m)
			}
		case broker.KindReplace:
			if m.Addr.Name == "" || m.Addr.ClientID == "" || m.Conn == "" {
				t.Fatalf("notice without an identity: %+v", m)
			}
		default:
			t.Fatalf("unknown kind %d", m.Kind)
		}
	})
}
