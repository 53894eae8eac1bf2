package broker_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

func TestEscapeToken(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty is Any", "", "_"},
		{"literal Any", "_", "%5F"},
		{"ordinary", "Orders", "Orders"},
		{"ordinary punctuation", "a-b_c:d/e+f=g@h,i", "a-b_c:d/e+f=g@h,i"},
		{"underscore inside", "a_b", "a_b"},
		{"two underscores", "__", "__"},
		{"dot", ".", "%2E"},
		{"dotted", "my.dotted.id", "my%2Edotted%2Eid"},
		{"star", "*", "%2A"},
		{"star inside", "a*b", "a%2Ab"},
		{"gt", ">", "%3E"},
		{"space", " ", "%20"},
		{"tab", "\t", "%09"},
		{"CRLF", "\r\n", "%0D%0A"},
		{"percent", "%", "%25"},
		{"escape-looking", "%41", "%2541"},
		{"escaped Any looking", "%5F", "%255F"},
		{"NUL", "\x00", "%00"},
		{"DEL", "\x7f", "%7F"},
		{"tilde stays", "~", "~"},
		{"UTF-8 two bytes", "é", "%C3%A9"},
		{"UTF-8 four bytes", "🚀", "%F0%9F%9A%80"},
		{"invalid UTF-8", "\xff", "%FF"},
		{"mixed", "Größe 1.0", "Gr%C3%B6%C3%9Fe%201%2E0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := broker.EscapeToken(tt.in)
			if got != tt.want {
				t.Fatalf("EscapeToken(%q) = %q, want %q", tt.in, got, tt.want)
			}
			back, err := broker.UnescapeToken(got)
			if err != nil || back != tt.in {
				t.Errorf("UnescapeToken(%q) = %q, %v; want %q, nil", got, back, err, tt.in)
			}
		})
	}
}

func TestUnescapeTokenRejects(t *testing.T) {
	for _, tok := range []string{
		"",         // empty token
		"%2e",      // lowercase hex
		"a%c3%a9",  // lowercase hex
		"%4",       // truncated
		"%",        // truncated
		"a%",       // truncated
		"%ZZ",      // not hex
		"%G0",      // not hex
		"a.b",      // raw dot
		"*",        // raw wildcard
		">",        // raw wildcard
		"a b",      // raw space
		"a\tb",     // raw tab
		"a\x00",    // raw NUL
		"a\x7f",    // raw DEL
		"\xc3\xa9", // raw UTF-8
		"a%2",      // truncated after a byte
		"%41",      // escapes a byte that needs none
		"a%5F",     // "_" escaped inside a longer token
		"%5F%5F",   // "__" is written raw
		"%5f",      // lowercase Any escape
		"%2E%",     // valid escape then truncated
	} {
		t.Run(tok, func(t *testing.T) {
			got, err := broker.UnescapeToken(tok)
			if err == nil {
				t.Fatalf("UnescapeToken(%q) = %q, want an error", tok, got)
			}
			if !errors.Is(err, broker.ErrBadSubject) {
				t.Errorf("UnescapeToken(%q) error %v does not match ErrBadSubject", tok, err)
			}
		})
	}
}

func TestUnescapeTokenAccepts(t *testing.T) {
	for tok, want := range map[string]string{
		"_":      "",
		"%5F":    "_",
		"__":     "__",
		"a_":     "a_",
		"Orders": "Orders",
		"%25":    "%",
		"%2E%2A": ".*",
	} {
		got, err := broker.UnescapeToken(tok)
		if err != nil || got != want {
			t.Errorf("UnescapeToken(%q) = %q, %v; want %q, nil", tok, got, err, want)
		}
	}
}

func TestNewSubjects(t *testing.T) {
	for _, p := range []string{"", "herald", "acme.herald", "a.b.c", "h_1", "%"} {
		t.Run("ok/"+p, func(t *testing.T) {
			s, err := broker.NewSubjects(p)
			if err != nil {
				t.Fatalf("NewSubjects(%q): %v", p, err)
			}
			want := p
			if p == "" {
				want = broker.DefaultPrefix
			}
			if s.Prefix() != want {
				t.Errorf("Prefix() = %q, want %q", s.Prefix(), want)
			}
			if got := s.EventWildcard(); got != want+".ev.>" {
				t.Errorf("EventWildcard() = %q", got)
			}
		})
	}
	for _, p := range []string{".", "a.", ".a", "a..b", "*", "a.*", "a*", ">", "a.>", "a b", "a\tb", "a\rb", "a\nb"} {
		t.Run("bad/"+p, func(t *testing.T) {
			if s, err := broker.NewSubjects(p); err == nil {
				t.Fatalf("NewSubjects(%q) = %q, want an error", p, s.Prefix())
			}
			defer func() {
				if recover() == nil {
					t.Errorf("MustSubjects(%q) did not panic", p)
				}
			}()
			broker.MustSubjects(p)
		})
	}
}

func TestSubjects(t *testing.T) {
	s := broker.MustSubjects("")
	tests := []struct {
		name, got, want string
	}{
		{"event full", s.Event(broker.Address{Name: "Orders", Group: "Admins", ClientID: "c1"}), "herald.ev.Orders.admins.c1"},
		{"event signed client", s.Event(broker.Address{Name: "Orders", ClientID: "s:abc.SIG"}), "herald.ev.Orders._.abc"},
		{"event signed dotted client", s.Event(broker.Address{Name: "Orders", ClientID: "s:my.dotted.id.7wORP9FbI1K8KEOOPxWy04iEXFKQefnH035m6CvMuGQ="}), "herald.ev.Orders._.my%2Edotted%2Eid"},
		{"event malformed signed client kept", s.Event(broker.Address{Name: "Orders", ClientID: "s:abc"}), "herald.ev.Orders._.s:abc"},
		{"event name only", s.Event(broker.Address{Name: "Orders"}), "herald.ev.Orders._._"},
		{"event all names", s.Event(broker.Address{}), "herald.ev._._._"},
		{"event escaped", s.Event(broker.Address{Name: "a.b", Group: "G*", ClientID: "_"}), "herald.ev.a%2Eb.g%2A.%5F"},
		{"event name not lowercased", s.Event(broker.Address{Name: "ORDERS", Group: "ÉQUIPE"}), "herald.ev.ORDERS.%C3%A9quipe._"},
		{"event name", s.EventName("Orders"), "herald.ev.Orders._._"},
		{"event name escaped", s.EventName("a b"), "herald.ev.a%20b._._"},
		{"event group", s.EventGroup("Orders", "Admins"), "herald.ev.Orders.admins._"},
		{"event client", s.EventClient("Orders", "c1"), "herald.ev.Orders.*.c1"},
		{"event client signed", s.EventClient("Orders", "s:abc.SIG"), "herald.ev.Orders.*.abc"},
		{"event all names wildcard", s.EventAllNames(), "herald.ev._.>"},
		{"event wildcard", s.EventWildcard(), "herald.ev.>"},
		{"inbound", s.Inbound(broker.Address{Name: "Chat", Group: "Room1", ClientID: "s:abc.SIG"}), "herald.in.Chat.room1.abc"},
		{"sys", s.Sys("connect"), "herald.sys.connect"},
		{"sys conn", s.SysConn("a.b", "s:abc.SIG"), "herald.sys.conn.a%2Eb.abc"},
		{"sys conn name", s.SysConnName("a.b"), "herald.sys.conn.a%2Eb.*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}

	custom := broker.MustSubjects("acme.push")
	if got := custom.Event(broker.Address{Name: "n"}); got != "acme.push.ev.n._._" {
		t.Errorf("custom prefix Event = %q", got)
	}
	if got := custom.Inbound(broker.Address{Name: "n"}); got != "acme.push.in.n._._" {
		t.Errorf("custom prefix Inbound = %q", got)
	}
}

// TestSubscriptionsMatchEvents checks that the subjects edges subscribe to
// match the subjects producers publish to, and nothing else.
func TestSubscriptionsMatchEvents(t *testing.T) {
	s := broker.MustSubjects("")
	const name, group, client = "Orders", "Admins", "s:abc.SIG"
	pub := map[string]string{
		"name":        s.Event(broker.Address{Name: name}),
		"group":       s.Event(broker.Address{Name: name, Group: group}),
		"client":      s.Event(broker.Address{Name: name, ClientID: client}),
		"groupClient": s.Event(broker.Address{Name: name, Group: group, ClientID: client}),
		"allNames":    s.Event(broker.Address{Group: group}),
		"otherName":   s.Event(broker.Address{Name: "Other", ClientID: client}),
		"otherGroup":  s.Event(broker.Address{Name: name, Group: "Users", ClientID: "other"}),
	}
	tests := []struct {
		sub     string
		matches []string
	}{
		{s.EventName(name), []string{"name"}},
		{s.EventGroup(name, strings.ToUpper(group)), []string{"group"}},
		{s.EventClient(name, "abc"), []string{"client", "groupClient"}},
		{s.EventAllNames(), []string{"allNames"}},
		{s.EventWildcard(), []string{"name", "group", "client", "groupClient", "allNames", "otherName", "otherGroup"}},
	}
	for _, tt := range tests {
		t.Run(tt.sub, func(t *testing.T) {
			want := map[string]bool{}
			for _, k := range tt.matches {
				want[k] = true
			}
			for k, subj := range pub {
				if got := subjectMatches(tt.sub, subj); got != want[k] {
					t.Errorf("%s matches %s (%s) = %v, want %v", tt.sub, subj, k, got, want[k])
				}
			}
		})
	}
}

// subjectMatches reports whether a NATS subscription subject (with * and >
// wildcards) matches a literal subject.
func subjectMatches(sub, subj string) bool {
	st, lt := strings.Split(sub, "."), strings.Split(subj, ".")
	for i, tok := range st {
		if tok == ">" {
			return len(lt) > i
		}
		if i >= len(lt) || (tok != "*" && tok != lt[i]) {
			return false
		}
	}
	return len(st) == len(lt)
}

func TestParseEvent(t *testing.T) {
	s := broker.MustSubjects("")
	addrs := []broker.Address{
		{},
		{Name: "Orders"},
		{Name: "Orders", Group: "admins"},
		{Name: "Orders", ClientID: "abc"},
		{Name: "Orders", Group: "admins", ClientID: "abc"},
		{Name: "a.b", Group: "*", ClientID: ">"},
		{Name: "_", Group: "_", ClientID: "_"},
		{Name: "Größe 1", Group: "é", ClientID: "\x00\x7f%"},
		{Name: "%41", Group: "%5f", ClientID: "my.dotted.id"},
	}
	for _, a := range addrs {
		t.Run(s.Event(a), func(t *testing.T) {
			got, err := s.ParseEvent(s.Event(a))
			if err != nil || got != a {
				t.Errorf("ParseEvent(Event(%+v)) = %+v, %v", a, got, err)
			}
			if got.AllNames() != (a.Name == "") {
				t.Errorf("AllNames() = %v for name %q", got.AllNames(), a.Name)
			}
			in, err := s.ParseInbound(s.Inbound(a))
			if err != nil || in != a {
				t.Errorf("ParseInbound(Inbound(%+v)) = %+v, %v", a, in, err)
			}
			if _, err := s.ParseInbound(s.Event(a)); !errors.Is(err, broker.ErrBadSubject) {
				t.Errorf("ParseInbound(Event(...)) err = %v, want ErrBadSubject", err)
			}
		})
	}

	// Event normalises: the group is lowercased and a signed id reduced.
	got, err := s.ParseEvent(s.Event(broker.Address{Name: "N", Group: "ADMINS", ClientID: "s:abc.SIG"}))
	if want := (broker.Address{Name: "N", Group: "admins", ClientID: "abc"}); err != nil || got != want {
		t.Errorf("ParseEvent of a normalised subject = %+v, %v; want %+v", got, err, want)
	}
}

func TestParseEventRejects(t *testing.T) {
	s := broker.MustSubjects("")
	for _, subj := range []string{
		"",
		"herald",
		"herald.ev",
		"herald.ev.",
		"other.ev.a._._",
		"heraldx.ev.a._._",
		"herald.in.a._._",
		"herald.sys.a._._",
		"acme.herald.ev.a._._",
		"herald.ev.a",
		"herald.ev.a._",
		"herald.ev.a._._.x",
		"herald.ev.a._._.",
		"herald.ev.a.._",
		"herald.ev..a._",
		"herald.ev.a._.",
		"herald.ev.%2e._._",
		"herald.ev.a.%4._",
		"herald.ev.a._.%ZZ",
		"herald.ev.a._.%41",
		"herald.ev.*._._",
		"herald.ev.>",
		"herald.ev.a b._._",
	} {
		t.Run(subj, func(t *testing.T) {
			a, err := s.ParseEvent(subj)
			if !errors.Is(err, broker.ErrBadSubject) {
				t.Errorf("ParseEvent(%q) = %+v, %v; want ErrBadSubject", subj, a, err)
			}
		})
	}

	custom := broker.MustSubjects("acme.herald")
	if _, err := custom.ParseEvent("herald.ev.a._._"); !errors.Is(err, broker.ErrBadSubject) {
		t.Errorf("custom prefix parsed a default-prefix subject: %v", err)
	}
	if a, err := custom.ParseEvent("acme.herald.ev.a._._"); err != nil || a.Name != "a" {
		t.Errorf("custom prefix ParseEvent = %+v, %v", a, err)
	}
}

func FuzzTokenRoundTrip(f *testing.F) {
	for _, s := range []string{
		"", "_", "__", "Orders", ".", "*", ">", " ", "\t", "%", "%5F", "%41",
		"\x00", "\x7f", "\xff", "é", "🚀", "a.b.c", "s:abc.SIG", "Größe 1.0",
	} {
		f.Add(s)
	}
	subjects := broker.MustSubjects("")
	f.Fuzz(func(t *testing.T, s string) {
		tok := broker.EscapeToken(s)
		if !validToken(tok) {
			t.Fatalf("EscapeToken(%q) = %q is not a valid single NATS token", s, tok)
		}
		if s != "" && tok == broker.Any {
			t.Fatalf("EscapeToken(%q) = Any", s)
		}
		back, err := broker.UnescapeToken(tok)
		if err != nil || back != s {
			t.Fatalf("UnescapeToken(EscapeToken(%q)) = %q, %v", s, back, err)
		}
		// Event lowercases the group and reduces a signed clientId.
		a := broker.Address{Name: s, Group: s, ClientID: s}
		want := broker.Address{Name: s, Group: strings.ToLower(s), ClientID: policy.RawID(s)}
		got, err := subjects.ParseEvent(subjects.Event(a))
		if err != nil || got != want {
			t.Fatalf("ParseEvent(Event(%+v)) = %+v, %v; want %+v", a, got, err, want)
		}
	})
}

func FuzzUnescape(f *testing.F) {
	for _, s := range []string{
		"", "_", "%5F", "%5f", "a%5F", "%41", "%2E", "%2e", "%4", "%", "a.b", "%C3%A9", "Orders", "%25",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := broker.UnescapeToken(tok)
		if err != nil {
			if !errors.Is(err, broker.ErrBadSubject) {
				t.Fatalf("UnescapeToken(%q) error %v does not match ErrBadSubject", tok, err)
			}
			return
		}
		if tok == broker.Any {
			if s != "" {
				t.Fatalf("UnescapeToken(Any) = %q", s)
			}
			return
		}
		// Every accepted token is canonical: it is the one EscapeToken
		// writes for its meaning.
		if again := broker.EscapeToken(s); again != tok {
			t.Fatalf("UnescapeToken(%q) = %q, but EscapeToken(%q) = %q", tok, s, s, again)
		}
	})
}

// validToken reports whether tok is one literal NATS subject token: not
// empty, no separator, no wildcard, and printable ASCII without space.
func validToken(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return false
		}
	}
	return true
}
