package broker_test

import (
	"bytes"
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
