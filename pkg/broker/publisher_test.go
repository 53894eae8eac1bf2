package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

const waitMsg = 5 * time.Second

// wire is a publisher and a plain nats.go subscriber watching everything
// under the publisher's prefix, on separate connections.
type wire struct {
	pub    *broker.Publisher
	nc     *nats.Conn // the publisher's connection
	sub    *nats.Subscription
	prefix string
}

func newWire(t *testing.T, o *broker.PublisherOptions) *wire {
	t.Helper()
	e := natstest.StartServer(t)
	return newWireOn(t, e.ClientURL(), o)
}

func newWireOn(t *testing.T, url string, o *broker.PublisherOptions) *wire {
	t.Helper()
	prefix := broker.DefaultPrefix
	if o != nil && o.Prefix != "" {
		prefix = o.Prefix
	}
	sc := natstest.Connect(t, url)
	sub, err := sc.SubscribeSync(prefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	nc := natstest.Connect(t, url)
	p, err := broker.NewPublisher(nc, o)
	if err != nil {
		t.Fatal(err)
	}
	return &wire{pub: p, nc: nc, sub: sub, prefix: prefix}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// next returns the next message the subscriber sees.
func (w *wire) next(t *testing.T) *nats.Msg {
	t.Helper()
	m, err := w.sub.NextMsg(waitMsg)
	if err != nil {
		t.Fatalf("no message: %v", err)
	}
	return m
}

// expectSubjects reads exactly len(want) messages with these subjects, in
// order, then proves nothing else was published: a sentinel sent on the
// publisher's connection afterwards must be the next message.
func (w *wire) expectSubjects(t *testing.T, want ...string) []*nats.Msg {
	t.Helper()
	msgs := make([]*nats.Msg, 0, len(want))
	for i, s := range want {
		m := w.next(t)
		if m.Subject != s {
			t.Fatalf("message %d: subject %q, want %q", i, m.Subject, s)
		}
		msgs = append(msgs, m)
	}
	w.expectNothing(t)
	return msgs
}

func (w *wire) expectNothing(t *testing.T) {
	t.Helper()
	sentinel := w.prefix + ".test.sentinel"
	if err := w.nc.Publish(sentinel, nil); err != nil {
		t.Fatal(err)
	}
	if m := w.next(t); m.Subject != sentinel {
		t.Fatalf("unexpected message on %q (headers %v) before the sentinel", m.Subject, m.Header)
	}
}

func TestPublisherSubjects(t *testing.T) {
	signed := policy.Sign("abc", "secret")
	tests := []struct {
		name   string
		prefix string
		target broker.Target
		want   []string
	}{
		{"name only", "", broker.Target{Name: "chat"},
			[]string{"herald.ev.chat._._"}},
		{"groups lowercased and de-duplicated", "", broker.Target{Name: "chat", Groups: []string{"Admins", "ops", "ADMINS"}},
			[]string{"herald.ev.chat.admins._", "herald.ev.chat.ops._"}},
		{"clientIds", "", broker.Target{Name: "chat", ClientIDs: []string{"c1", "c2", "c1"}},
			[]string{"herald.ev.chat._.c1", "herald.ev.chat._.c2"}},
		{"groups and clientIds are AND pairs", "", broker.Target{Name: "chat", Groups: []string{"g1", "g2"}, ClientIDs: []string{"c1", "c2"}},
			[]string{"herald.ev.chat.g1.c1", "herald.ev.chat.g1.c2", "herald.ev.chat.g2.c1", "herald.ev.chat.g2.c2"}},
		{"signed clientId reduced to raw", "", broker.Target{Name: "chat", ClientIDs: []string{signed, "abc"}},
			[]string{"herald.ev.chat._.abc"}},
		{"all names", "", broker.Target{AllNames: true},
			[]string{"herald.ev._._._"}},
		{"all names, one group", "", broker.Target{AllNames: true, Groups: []string{"G"}},
			[]string{"herald.ev._.g._"}},
		{"odd tokens escaped", "", broker.Target{Name: "my.app name", Groups: []string{"_"}, ClientIDs: []string{"x*y>z%"}},
			[]string{"herald.ev.my%2Eapp%20name.%5F.x%2Ay%3Ez%25"}},
		{"name that is the any token", "", broker.Target{Name: "_"},
			[]string{"herald.ev.%5F._._"}},
		{"custom prefix", "acme.push", broker.Target{Name: "chat", Groups: []string{"g"}},
			[]string{"acme.push.ev.chat.g._"}},
	}
	e := natstest.StartServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWireOn(t, e.ClientURL(), &broker.PublisherOptions{Prefix: tt.prefix})
			ev := broker.Event{ID: "7", Type: "update", Data: []byte(`{"a":1}`)}
			n, err := w.pub.Publish(ctxT(t), tt.target, ev)
			if err != nil || n != len(tt.want) {
				t.Fatalf("Publish = %d, %v; want %d, nil", n, err, len(tt.want))
			}
			for _, m := range w.expectSubjects(t, tt.want...) {
				if got := m.Header[broker.HeaderEvent]; len(got) != 1 || got[0] != "update" {
					t.Errorf("%s: %s = %q, want [update]", m.Subject, broker.HeaderEvent, got)
				}
				if got := m.Header[broker.HeaderID]; len(got) != 1 || got[0] != "7" {
					t.Errorf("%s: %s = %q, want [7]", m.Subject, broker.HeaderID, got)
				}
				if got := m.Header[broker.HeaderControl]; got != nil {
					t.Errorf("%s: unexpected %s %q", m.Subject, broker.HeaderControl, got)
				}
				if string(m.Data) != `{"a":1}` {
					t.Errorf("%s: data %q", m.Subject, m.Data)
				}
			}
		})
	}
}

func TestPublisherPlainEventHasNoHeaders(t *testing.T) {
	w := newWire(t, nil)
	// A context without deadline: the flush is bounded by FlushTimeout.
	if n, err := w.pub.Publish(context.Background(), broker.Target{Name: "chat"}, broker.Event{Data: []byte("hi")}); n != 1 || err != nil {
		t.Fatalf("Publish = %d, %v", n, err)
	}
	m := w.expectSubjects(t, "herald.ev.chat._._")[0]
	if len(m.Header) != 0 || string(m.Data) != "hi" {
		t.Fatalf("headers %v data %q, want none and hi", m.Header, m.Data)
	}
}

func TestPublisherAddresses(t *testing.T) {
	w := newWire(t, nil)
	signed := policy.Sign("id-1", "k")
	got, err := w.pub.Addresses(broker.Target{Name: "n", Groups: []string{"G", "g"}, ClientIDs: []string{signed, "id-1", "id-2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []broker.Address{{Name: "n", Group: "G", ClientID: "id-1"}, {Name: "n", Group: "G", ClientID: "id-2"}}
	if len(got) != len(want) {
		t.Fatalf("Addresses = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Addresses[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	all, err := w.pub.Addresses(broker.Target{AllNames: true})
	if err != nil || len(all) != 1 || !all[0].AllNames() {
		t.Fatalf("AllNames addresses = %+v, %v", all, err)
	}
	if w.pub.Subjects().Prefix() != broker.DefaultPrefix {
		t.Fatalf("prefix %q", w.pub.Subjects().Prefix())
	}
}

func TestPublisherBroadcastLevels(t *testing.T) {
	tests := []struct {
		name    string
		levels  string
		target  broker.Target
		blocked string // the name in the *policy.LevelError; "" means allowed
		n       int
	}{
		{"group level blocks a whole name", "chat=group", broker.Target{Name: "chat"}, "chat", 0},
		{"group level allows a group", "chat=group", broker.Target{Name: "chat", Groups: []string{"g"}}, "", 1},
		{"group level allows a clientId", "chat=group", broker.Target{Name: "chat", ClientIDs: []string{"c"}}, "", 1},
		{"other names unaffected", "chat=group", broker.Target{Name: "news"}, "", 1},
		{"star clientid blocks a group", "*=clientid", broker.Target{Name: "x", Groups: []string{"g"}}, "x", 0},
		{"star clientid allows group and clientId", "*=clientid", broker.Target{Name: "x", Groups: []string{"g"}, ClientIDs: []string{"c"}}, "", 1},
		{"exact name wins over star", "*=clientid,open=name", broker.Target{Name: "open"}, "", 1},
		{"all names blocked by one explicit name", "secret=clientid", broker.Target{AllNames: true}, "secret", 0},
		{"all names with a group still blocked by it", "secret=clientid", broker.Target{AllNames: true, Groups: []string{"g"}}, "secret", 0},
		{"all names with clientIds allowed", "secret=clientid", broker.Target{AllNames: true, ClientIDs: []string{"c1", "c2"}}, "", 2},
		{"all names blocked by star", "*=group", broker.Target{AllNames: true}, "*", 0},
		{"all names with a group allowed", "*=group,public=name", broker.Target{AllNames: true, Groups: []string{"g"}}, "", 1},
	}
	e := natstest.StartServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			levels, err := policy.ParseLevels(tt.levels)
			if err != nil {
				t.Fatal(err)
			}
			w := newWireOn(t, e.ClientURL(), &broker.PublisherOptions{Levels: levels})
			for _, op := range []struct {
				name string
				do   func() (int, error)
			}{
				{"Publish", func() (int, error) {
					return w.pub.Publish(ctxT(t), tt.target, broker.Event{Data: []byte("x")})
				}},
				{"Close", func() (int, error) { return w.pub.Close(ctxT(t), tt.target) }},
			} {
				n, err := op.do()
				if tt.blocked == "" {
					if err != nil || n != tt.n {
						t.Fatalf("%s = %d, %v; want %d, nil", op.name, n, err, tt.n)
					}
					for range n {
						w.next(t)
					}
					w.expectNothing(t)
					continue
				}
				if n != 0 {
					t.Errorf("%s published %d messages", op.name, n)
				}
				var be *broker.Error
				if !errors.As(err, &be) || be.Code != broker.CodeBroadcastLevel {
					t.Fatalf("%s error %v, want CodeBroadcastLevel", op.name, err)
				}
				if !errors.Is(err, policy.ErrBroadcastLevel) || !errors.Is(err, broker.ErrBroadcastLevel) {
					t.Fatalf("%s error %v does not match policy.ErrBroadcastLevel and broker.ErrBroadcastLevel", op.name, err)
				}
				var le *policy.LevelError
				if !errors.As(err, &le) || le.Name != tt.blocked {
					t.Fatalf("%s error %v: LevelError %+v, want name %q", op.name, err, le, tt.blocked)
				}
				w.expectNothing(t)
			}
		})
	}
}

func TestPublisherInvalid(t *testing.T) {
	ok := broker.Target{Name: "chat"}
	tests := []struct {
		name   string
		target broker.Target
		ev     broker.Event
		field  string
		kind   error // the policy sentinel the error also matches, if any
	}{
		{"empty name", broker.Target{}, broker.Event{}, "name", policy.ErrInvalidIdentity},
		{"name with CRLF", broker.Target{Name: "a\r\nb"}, broker.Event{}, "name", policy.ErrInvalidIdentity},
		{"name with AllNames", broker.Target{Name: "a", AllNames: true}, broker.Event{}, "name", nil},
		{"empty group", broker.Target{Name: "a", Groups: []string{"ok", ""}}, broker.Event{}, "group", nil},
		{"group with LF", broker.Target{Name: "a", Groups: []string{"a\nb"}}, broker.Event{}, "group", policy.ErrInvalidIdentity},
		{"empty clientId", broker.Target{Name: "a", ClientIDs: []string{""}}, broker.Event{}, "clientId", nil},
		{"clientId with NUL", broker.Target{Name: "a", ClientIDs: []string{"c\x00"}}, broker.Event{}, "clientId", policy.ErrInvalidIdentity},
		{"clientId too long", broker.Target{Name: "a", ClientIDs: []string{strings.Repeat("x", policy.MaxIdentityLen+1)}}, broker.Event{}, "clientId", policy.ErrInvalidIdentity},
		{"event id with CRLF", ok, broker.Event{ID: "1\r\nevent: evil"}, "id", policy.ErrInvalidField},
		{"event id not UTF-8", ok, broker.Event{ID: "\xff"}, "id", policy.ErrInvalidField},
		{"event type with LF", ok, broker.Event{Type: "a\nb"}, "event", policy.ErrInvalidField},
	}
	w := newWire(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := w.pub.Publish(ctxT(t), tt.target, tt.ev)
			var be *broker.Error
			if n != 0 || !errors.As(err, &be) || be.Code != broker.CodeInvalid || be.Field != tt.field {
				t.Fatalf("Publish = %d, %v; want 0 and CodeInvalid on %q", n, err, tt.field)
			}
			if !errors.Is(err, broker.ErrInvalid) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not match ErrInvalid or name the field", err)
			}
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Fatalf("error %v does not match %v", err, tt.kind)
			}
			if tt.field != "id" && tt.field != "event" { // target errors apply to Close too
				if _, err := w.pub.Close(ctxT(t), tt.target); !errors.As(err, &be) || be.Field != tt.field {
					t.Fatalf("Close error %v, want CodeInvalid on %q", err, tt.field)
				}
			}
			w.expectNothing(t)
		})
	}
}

func TestPublisherTooLarge(t *testing.T) {
	e := natstest.StartServer(t)
	tests := []struct {
		name string
		max  int
		size int
		ok   bool
	}{
		{"default limit exactly", 0, broker.DefaultMaxDataBytes, true},
		{"default limit plus one", 0, broker.DefaultMaxDataBytes + 1, false},
		{"custom limit plus one", 10, 11, false},
		{"over the server's max payload", 4 << 20, 2 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWireOn(t, e.ClientURL(), &broker.PublisherOptions{MaxDataBytes: tt.max})
			n, err := w.pub.Publish(ctxT(t), broker.Target{Name: "chat"}, broker.Event{Data: make([]byte, tt.size)})
			if tt.ok {
				if n != 1 || err != nil {
					t.Fatalf("Publish = %d, %v", n, err)
				}
				if m := w.expectSubjects(t, "herald.ev.chat._._")[0]; len(m.Data) != tt.size {
					t.Fatalf("data %d bytes, want %d", len(m.Data), tt.size)
				}
				return
			}
			if n != 0 || !errors.Is(err, &broker.Error{Code: broker.CodeTooLarge}) || !errors.Is(err, broker.ErrTooLarge) {
				t.Fatalf("Publish = %d, %v; want 0 and CodeTooLarge", n, err)
			}
			w.expectNothing(t)
		})
	}
}

func TestPublisherUnavailable(t *testing.T) {
	w := newWire(t, nil)
	target := broker.Target{Name: "chat", Groups: []string{"a", "b"}}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n, err := w.pub.Publish(ctx, target, broker.Event{})
	if n != 0 || !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled ctx = %d, %v; want 0, unavailable wrapping context.Canceled", n, err)
	}
	w.expectNothing(t)

	w.nc.Close()
	n, err = w.pub.Publish(ctxT(t), target, broker.Event{Data: []byte("x")})
	var be *broker.Error
	if n != 0 || !errors.As(err, &be) || be.Code != broker.CodeUnavailable || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("Publish on a closed connection = %d, %v; want 0, CodeUnavailable wrapping nats.ErrConnectionClosed", n, err)
	}
	if _, err := w.pub.Close(ctxT(t), target); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Close on a closed connection: %v", err)
	}
}

func TestPublisherClose(t *testing.T) {
	w := newWire(t, nil)
	n, err := w.pub.Close(ctxT(t), broker.Target{Name: "chat", Groups: []string{"g"}, ClientIDs: []string{policy.Sign("c1", "k")}})
	if n != 1 || err != nil {
		t.Fatalf("Close = %d, %v", n, err)
	}
	m := w.expectSubjects(t, "herald.ev.chat.g.c1")[0]
	if got := m.Header[broker.HeaderControl]; len(got) != 1 || got[0] != broker.ControlClose {
		t.Fatalf("%s = %q, want [close]", broker.HeaderControl, got)
	}
	if len(m.Data) != 0 || m.Header[broker.HeaderEvent] != nil {
		t.Fatalf("close message carries data %q or an event type %v", m.Data, m.Header)
	}
	if _, control := broker.DecodeEvent(m); control != broker.ControlClose {
		t.Fatalf("DecodeEvent control %q", control)
	}
}

func TestNewPublisherOptions(t *testing.T) {
	nc := natstest.Connect(t, natstest.StartServer(t).ClientURL())
	tests := []struct {
		name  string
		nc    *nats.Conn
		o     *broker.PublisherOptions
		field string
	}{
		{"nil conn", nil, nil, "nc"},
		{"bad prefix", nc, &broker.PublisherOptions{Prefix: "a b"}, "PublisherOptions.Prefix"},
		{"wildcard prefix", nc, &broker.PublisherOptions{Prefix: "a.>"}, "PublisherOptions.Prefix"},
		{"negative max data", nc, &broker.PublisherOptions{MaxDataBytes: -1}, "PublisherOptions.MaxDataBytes"},
		{"negative flush timeout", nc, &broker.PublisherOptions{FlushTimeout: -time.Second}, "PublisherOptions.FlushTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := broker.NewPublisher(tt.nc, tt.o)
			var be *broker.Error
			if p != nil || !errors.As(err, &be) || be.Code != broker.CodeInvalid || be.Field != tt.field {
				t.Fatalf("NewPublisher = %v, %v; want CodeInvalid on %q", p, err, tt.field)
			}
		})
	}
	if _, err := broker.NewPublisher(nc, &broker.PublisherOptions{}); err != nil {
		t.Fatalf("zero options: %v", err)
	}
}

func TestError(t *testing.T) {
	cause := errors.New("boom")
	tests := []struct {
		err  *broker.Error
		text string
		is   error
	}{
		{&broker.Error{Code: broker.CodeInvalid, Field: "name", Err: cause}, "broker: invalid name: boom", broker.ErrInvalid},
		{&broker.Error{Code: broker.CodeBroadcastLevel, Err: cause}, "broker: broadcast level: boom", broker.ErrBroadcastLevel},
		{&broker.Error{Code: broker.CodeTooLarge, Err: cause}, "broker: too large: boom", broker.ErrTooLarge},
		{&broker.Error{Code: broker.CodeUnavailable}, "broker: unavailable", broker.ErrUnavailable},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.text {
			t.Errorf("Error() = %q, want %q", got, tt.text)
		}
		if !errors.Is(tt.err, tt.is) || !errors.Is(tt.err, &broker.Error{Code: tt.err.Code}) {
			t.Errorf("%v does not match its code", tt.err)
		}
		for _, other := range []error{broker.ErrInvalid, broker.ErrBroadcastLevel, broker.ErrTooLarge, broker.ErrUnavailable} {
			if other != tt.is && errors.Is(tt.err, other) {
				t.Errorf("%v matches %v", tt.err, other)
			}
		}
		if tt.err.Err != nil && (!errors.Is(tt.err, cause) || tt.err.Unwrap() != cause) {
			t.Errorf("%v does not unwrap to its cause", tt.err)
		}
	}
	if errors.Is(cause, broker.ErrInvalid) || errors.Is(&broker.Error{Code: broker.CodeInvalid}, (*broker.Error)(nil)) {
		t.Error("unrelated errors match")
	}
}

// A prepared send is checked once and sent as often as asked, to the same
// subjects, in order; nothing leaves before Send.
func TestPublisherPrepareSend(t *testing.T) {
	w := newWire(t, nil)
	a, err := w.pub.Prepare(broker.Target{Name: "Orders", Groups: []string{"A", "a", "b"}}, broker.Event{Type: "t", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.pub.PrepareClose(broker.Target{Name: "Orders", ClientIDs: []string{"c1"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() != 2 || c.Len() != 1 {
		t.Fatalf("Len = %d and %d, want 2 (groups compare case-insensitively) and 1", a.Len(), c.Len())
	}
	w.expectNothing(t)
	n, err := w.pub.Send(ctxT(t), a, c, a)
	if err != nil || n != 5 {
		t.Fatalf("Send = %d, %v; want 5, nil", n, err)
	}
	msgs := w.expectSubjects(t, "herald.ev.Orders.a._", "herald.ev.Orders.b._", "herald.ev.Orders._.c1",
		"herald.ev.Orders.a._", "herald.ev.Orders.b._")
	if broker.HeaderValue(msgs[2].Header, broker.HeaderControl) != broker.ControlClose || broker.HeaderValue(msgs[0].Header, broker.HeaderEvent) != "t" {
		t.Fatalf("headers %v and %v", msgs[0].Header, msgs[2].Header)
	}
}

// One send may not expand to more addresses than MaxAddresses: the
// product is refused before anything is built.
func TestPublisherMaxAddresses(t *testing.T) {
	w := newWire(t, &broker.PublisherOptions{MaxAddresses: 6})
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("c%d", i)
		}
		return out
	}
	if _, err := w.pub.Prepare(broker.Target{Name: "N", Groups: []string{"a", "b"}, ClientIDs: ids(3)}, broker.Event{Data: []byte("x")}); err != nil {
		t.Fatalf("2 × 3 addresses: %v", err)
	}
	_, err := w.pub.Publish(ctxT(t), broker.Target{Name: "N", Groups: []string{"a", "b"}, ClientIDs: ids(4)}, broker.Event{Data: []byte("x")})
	if !errors.Is(err, broker.ErrTooLarge) || !strings.Contains(err.Error(), "8 addresses") {
		t.Fatalf("2 × 4 addresses: %v, want too_large naming 8 addresses", err)
	}
	w.expectNothing(t)
	if _, err := broker.NewPublisher(w.nc, &broker.PublisherOptions{MaxAddresses: -1}); !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("negative MaxAddresses: %v", err)
	}
}

// The edges' own publishes: a connection notice on the sys subject of
// the name and raw clientId, and a client's message on the inbound
// subject of its verified identity.
func TestPublisherEdgePublishes(t *testing.T) {
	w := newWire(t, nil)
	if err := w.pub.AnnounceConn("Orders", policy.Sign("c1", "k"), "edge-7", 1700000000000000001); err != nil {
		t.Fatal(err)
	}
	if err := w.pub.PublishInbound(broker.Address{Name: "/chat", Group: "Room A", ClientID: "c2"}, []byte(`{"message":1}`)); err != nil {
		t.Fatal(err)
	}
	msgs := w.expectSubjects(t, "herald.sys.conn.Orders.c1", "herald.in./chat.room%20a.c2")
	m := broker.MustSubjects("").Decode(msgs[0], false)
	if m.Kind != broker.KindReplace || m.Conn != "edge-7" || m.Since != 1700000000000000001 || m.Addr.ClientID != "c1" {
		t.Fatalf("the notice decodes as %+v", m)
	}
	h := msgs[1].Header
	if h.Get(broker.HeaderSenderName) != "/chat" || h.Get(broker.HeaderSenderGroup) != "Room A" || h.Get(broker.HeaderSenderClientID) != "c2" || string(msgs[1].Data) != `{"message":1}` {
		t.Fatalf("inbound headers %v, data %q", h, msgs[1].Data)
	}
}
