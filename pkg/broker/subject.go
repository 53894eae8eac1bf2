package broker

import (
	"errors"
	"fmt"
	"strings"

	"github.com/herald-push/herald/pkg/policy"
)

// DefaultPrefix is the default first subject token.
const DefaultPrefix = "herald"

// Any is the token that stands for "any" group or clientId, and for every
// name in the name position.
const Any = "_"

// ErrBadSubject reports a subject that is not a Herald subject of the expected kind.
var ErrBadSubject = errors.New("broker: not a herald subject")

const upperHex = "0123456789ABCDEF"

// EscapeToken maps any string to a valid NATS subject token, reversibly.
// '.', '*', '>', '%', whitespace and every byte outside printable ASCII are
// written as %XX (uppercase hex); a token that is exactly "_" becomes "%5F"
// so that it cannot be read as Any. The empty string maps to Any: callers
// use it for "no group" / "no clientId".
func EscapeToken(s string) string {
	if s == "" {
		return Any
	}
	if s == Any {
		return "%5F"
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func needsEscape(c byte) bool {
	return c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' || c == '%'
}

// UnescapeToken reverses EscapeToken. Any ("_") decodes to "". It rejects
// tokens that EscapeToken could not have produced (a bad %XX, lowercase hex,
// an escaped byte that needs no escape, or a raw byte that must be escaped),
// so that every subject has one meaning and every meaning one subject.
func UnescapeToken(tok string) (string, error) {
	if tok == Any {
		return "", nil
	}
	if tok == "" {
		return "", fmt.Errorf("%w: empty token", ErrBadSubject)
	}
	if !strings.Contains(tok, "%") {
		for i := 0; i < len(tok); i++ {
			if needsEscape(tok[i]) {
				return "", fmt.Errorf("%w: token %q has an unescaped byte 0x%02X", ErrBadSubject, tok, tok[i])
			}
		}
		return tok, nil
	}
	var b strings.Builder
	b.Grow(len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c == '%' {
			if i+2 >= len(tok) {
				return "", fmt.Errorf("%w: token %q has a truncated escape", ErrBadSubject, tok)
			}
			hi, ok1 := unhex(tok[i+1])
			lo, ok2 := unhex(tok[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("%w: token %q has a bad escape", ErrBadSubject, tok)
			}
			// Only bytes that EscapeToken escapes may be escaped, and "_"
			// only as the whole token "%5F": otherwise "%41" and "A" would
			// both name "A" on different subjects, and a subscriber to one
			// would miss events published to the other.
			d := hi<<4 | lo
			if !needsEscape(d) && (d != '_' || tok != "%5F") {
				return "", fmt.Errorf("%w: token %q escapes 0x%02X, which needs no escape", ErrBadSubject, tok, d)
			}
			b.WriteByte(d)
			i += 2
			continue
		}
		if needsEscape(c) {
			return "", fmt.Errorf("%w: token %q has an unescaped byte 0x%02X", ErrBadSubject, tok, c)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Address is where an event goes: a name (empty means every name), an
// optional group and an optional raw clientId. Group and ClientID together
// mean AND: that client, only while it is in that group.
type Address struct {
	Name     string
	Group    string
	ClientID string
}

// AllNames reports whether the address targets every name.
func (a Address) AllNames() bool { return a.Name == "" }

// Subjects builds and parses Herald subjects under one prefix.
type Subjects struct {
	prefix string // e.g. "herald"
	ev     string // prefix + ".ev." (prefix + ".live." for the republished view)
	in     string // prefix + ".in."
	sys    string // prefix + ".sys."
}

// NewSubjects returns the subject scheme for prefix ("" means DefaultPrefix).
// The prefix may contain dots ("acme.herald") but no wildcards or spaces.
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	for _, t := range strings.Split(prefix, ".") {
		if t == "" || strings.ContainsAny(t, "*> \t\r\n") {
			return Subjects{}, fmt.Errorf("broker: invalid subject prefix %q", prefix)
		}
	}
	return Subjects{prefix: prefix, ev: prefix + ".ev.", in: prefix + ".in.", sys: prefix + ".sys."}, nil
}

// MustSubjects is NewSubjects for known-good prefixes; it panics on error.
func MustSubjects(prefix string) Subjects {
	s, err := NewSubjects(prefix)
	if err != nil {
		panic(err)
	}
	return s
}

// Prefix returns the prefix.
func (s Subjects) Prefix() string { return s.prefix }

// Live returns the same scheme for the subjects that the history stream
// republishes events to once it has stored them: <prefix>.live.<name>.<group>.<clientId>.
// With history on, edges subscribe to these; producers keep publishing to ev.
func (s Subjects) Live() Subjects {
	s.ev = s.prefix + ".live."
	return s
}

// SysConn is the subject on which edges announce a new connection of
// (name, clientId), so that other edges close the connection it replaces.
func (s Subjects) SysConn(name, clientID string) string {
	return s.sys + "conn." + EscapeToken(name) + "." + EscapeToken(policy.RawID(clientID))
}

// SysConnName is the wildcard over the SysConn subjects of one name. An
// edge takes it once per name it holds connections of, rather than one
// subscription per connection.
func (s Subjects) SysConnName(name string) string {
	return s.sys + "conn." + EscapeToken(name) + ".*"
}

// IsSysConn reports whether subject is a SysConn subject.
func (s Subjects) IsSysConn(subject string) bool {
	return strings.HasPrefix(subject, s.sys+"conn.")
}

// ParseSysConn parses a SysConn subject.
func (s Subjects) ParseSysConn(subject string) (name, clientID string, err error) {
	rest, ok := strings.CutPrefix(subject, s.sys+"conn.")
	if !ok {
		return "", "", fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	n, c, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(c, ".") {
		return "", "", fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	if name, err = UnescapeToken(n); err != nil {
		return "", "", err
	}
	if clientID, err = UnescapeToken(c); err != nil {
		return "", "", err
	}
	return name, clientID, nil
}

// Event returns the event subject for an address. Groups are lowercased
// (group matching is case-insensitive); a signed clientId is reduced to its
// raw id.
func (s Subjects) Event(a Address) string {
	return s.ev + s.tokens(a)
}

// Inbound returns the subject for a message a client sent to the server.
func (s Subjects) Inbound(a Address) string {
	return s.in + s.tokens(a)
}

func (s Subjects) tokens(a Address) string {
	return EscapeToken(a.Name) + "." + EscapeToken(strings.ToLower(a.Group)) + "." + EscapeToken(policy.RawID(a.ClientID))
}

// EventName returns the subject of sends to a whole name: ev.<name>._._
func (s Subjects) EventName(name string) string {
	return s.ev + EscapeToken(name) + "._._"
}

// EventGroup returns the subject of sends to a group of a name: ev.<name>.<group>._
func (s Subjects) EventGroup(name, group string) string {
	return s.ev + EscapeToken(name) + "." + EscapeToken(strings.ToLower(group)) + "._"
}

// EventClient returns the wildcard subject that carries sends to one client
// of a name, with or without a group: ev.<name>.*.<clientId>
func (s Subjects) EventClient(name, clientID string) string {
	return s.ev + EscapeToken(name) + ".*." + EscapeToken(policy.RawID(clientID))
}

// appendInterest appends the subjects that carry events for a connection
// with address a (group lowercased, raw clientId): sends to its name, to
// its clientId with no group and, with a group, to the group and to the
// clientId within it. Every subject is literal: a wildcard subscription
// makes the NATS server walk its whole subject cache on every subscribe
// and unsubscribe.
func (s Subjects) appendInterest(dst []string, a Address) []string {
	dst = append(dst, s.EventName(a.Name), s.Event(Address{Name: a.Name, ClientID: a.ClientID}))
	if a.Group != "" {
		dst = append(dst, s.EventGroup(a.Name, a.Group), s.Event(a))
	}
	return dst
}

// ReplayFilters returns the event subjects that hold every stored event a
// connection with address a (group lowercased, raw clientId) may receive:
// sends to its name or to every name, to no group or its group, to no
// clientId or its clientId. They are literal (four subjects, eight with a
// group): the stream finds a literal subject's messages far cheaper than a
// wildcard's.
func (s Subjects) ReplayFilters(a Address) []string {
	groups := []string{""}
	if a.Group != "" {
		groups = append(groups, a.Group)
	}
	out := make([]string, 0, 4*len(groups))
	for _, name := range []string{a.Name, ""} {
		for _, g := range groups {
			for _, id := range []string{"", a.ClientID} {
				out = append(out, s.Event(Address{Name: name, Group: g, ClientID: id}))
			}
		}
	}
	return out
}

// EventAllNames returns the wildcard subject of sends to every name: ev._.>
func (s Subjects) EventAllNames() string { return s.ev + "_.>" }

// EventWildcard matches every event subject: ev.>
func (s Subjects) EventWildcard() string { return s.ev + ">" }

// Sys returns a system subject under prefix.sys.
func (s Subjects) Sys(rest string) string { return s.sys + rest }

// ParseEvent parses an event subject into its address.
func (s Subjects) ParseEvent(subject string) (Address, error) {
	rest, ok := strings.CutPrefix(subject, s.ev)
	if !ok {
		return Address{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	return parseTokens(subject, rest)
}

// ParseInbound parses an inbound subject into the sender's address.
func (s Subjects) ParseInbound(subject string) (Address, error) {
	rest, ok := strings.CutPrefix(subject, s.in)
	if !ok {
		return Address{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	return parseTokens(subject, rest)
}

func parseTokens(subject, rest string) (Address, error) {
	n, rest, ok1 := strings.Cut(rest, ".")
	g, c, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(c, ".") {
		return Address{}, fmt.Errorf("%w: %q does not have name.group.clientId", ErrBadSubject, subject)
	}
	var a Address
	var err error
	if a.Name, err = UnescapeToken(n); err != nil {
		return Address{}, err
	}
	if a.Group, err = UnescapeToken(g); err != nil {
		return Address{}, err
	}
	if a.ClientID, err = UnescapeToken(c); err != nil {
		return Address{}, err
	}
	return a, nil
}
