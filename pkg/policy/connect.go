package policy

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Who may connect, and in which scope: two tables keyed by connection name
// pattern, configured like broadcast levels ("*=token,Public=open").

// ConnectMode says how the edge decides whether a request may become a
// connection of a name.
type ConnectMode uint8

const (
	// ModeOpen lets anyone who reaches the edge connect (the default).
	ModeOpen ConnectMode = iota
	// ModeToken requires a token the app signed (TokenVerifier): its
	// claims say which names, group and clientId the connection takes.
	ModeToken
	// ModeBackend asks the app's backend over NATS; it allows (and may
	// assign the identity) or denies.
	ModeBackend
)

func (m ConnectMode) String() string {
	switch m {
	case ModeToken:
		return "token"
	case ModeBackend:
		return "backend"
	}
	return "open"
}

// ParseConnectMode parses "open", "token" or "backend" (case-insensitive).
func ParseConnectMode(s string) (ConnectMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "open":
		return ModeOpen, nil
	case "token":
		return ModeToken, nil
	case "backend":
		return ModeBackend, nil
	}
	return 0, fmt.Errorf("policy: unknown connect mode %q (want open, token or backend)", s)
}

// Scope says whether a connection is Global (addressable by name, group
// and clientId from anywhere) or Local (request-scoped: only the backend
// answering its request writes to it), as Pode's -Scope.
type Scope uint8

const (
	// ScopeGlobal connections are registered and addressable (the default).
	ScopeGlobal Scope = iota
	// ScopeLocal connections are not addressable: the edge asks a backend
	// for the stream and ends the connection when the backend does.
	ScopeLocal
	// ScopeEither lets the request choose with scope=local; Global otherwise.
	ScopeEither
)

func (s Scope) String() string {
	switch s {
	case ScopeLocal:
		return "local"
	case ScopeEither:
		return "either"
	}
	return "global"
}

// ParseScope parses "global", "local" or "either" (case-insensitive).
func ParseScope(s string) (Scope, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "global":
		return ScopeGlobal, nil
	case "local":
		return ScopeLocal, nil
	case "either":
		return ScopeEither, nil
	}
	return 0, fmt.Errorf("policy: unknown scope %q (want global, local or either)", s)
}

// ConnectModes maps connection names to connect modes. The zero value
// is open for every name. It is immutable and safe for concurrent use.
type ConnectModes struct{ r nameRules[ConnectMode] }

// ParseConnectModes parses comma-separated "pattern=mode" pairs, e.g.
// "*=token,Public=open,/tasks/*=backend". See NamePatterns for how a name
// finds its rule.
func ParseConnectModes(spec string) (ConnectModes, error) {
	r, err := parseNameRules(spec, "connect mode", ParseConnectMode)
	return ConnectModes{r}, err
}

// Mode returns the mode in force for name.
func (m ConnectModes) Mode(name string) ConnectMode { return m.r.lookup(name) }

// Uses reports whether any rule selects mode.
func (m ConnectModes) Uses(mode ConnectMode) bool { return m.r.uses(mode) }

// String returns the rules in the form ParseConnectModes reads.
func (m ConnectModes) String() string { return m.r.String() }

// Scopes maps connection names to scopes. The zero value is Global for
// every name. It is immutable and safe for concurrent use.
type Scopes struct{ r nameRules[Scope] }

// ParseScopes parses comma-separated "pattern=scope" pairs, e.g.
// "Reports=local,/tasks/*=either".
func ParseScopes(spec string) (Scopes, error) {
	r, err := parseNameRules(spec, "scope", ParseScope)
	return Scopes{r}, err
}

// Scope returns the scope configured for name.
func (s Scopes) Scope(name string) Scope { return s.r.lookup(name) }

// Uses reports whether any rule selects scope.
func (s Scopes) Uses(scope Scope) bool { return s.r.uses(scope) }

// String returns the rules in the form ParseScopes reads.
func (s Scopes) String() string { return s.r.String() }

// ErrScope is matched by the error of a request whose scope parameter
// its name does not allow.
var ErrScope = fmt.Errorf("policy: scope not allowed")

// Local decides whether a request for name is a Local connection: the
// name's scope, or with ScopeEither the request's scope parameter
// ("local" or "global", case-insensitive; empty means global). A scope
// parameter the name does not allow is an error matching ErrScope.
func (s Scopes) Local(name, requested string) (bool, error) {
	want := strings.ToLower(requested)
	if want != "" && want != "local" && want != "global" {
		return false, fmt.Errorf("%w: scope %q is not local or global", ErrScope, requested)
	}
	switch s.Scope(name) {
	case ScopeLocal:
		if want == "global" {
			return false, fmt.Errorf("%w: %q connections are local", ErrScope, name)
		}
		return true, nil
	case ScopeEither:
		return want == "local", nil
	}
	if want == "local" {
		return false, fmt.Errorf("%w: %q connections are global", ErrScope, name)
	}
	return false, nil
}

// NamePatterns documents how the connect-mode and scope tables find the
// rule of a name: a rule for the exact name wins; then the longest
// pattern that matches (path.Match syntax: "/tasks/*" matches "/tasks/a"
// but not "/tasks/a/b"); then "*"; then the default (open, global).
const NamePatterns = "exact name, then the longest matching path.Match pattern, then *"

// nameRules is a table of name patterns to values.
type nameRules[T comparable] struct {
	exact    map[string]T
	patterns []nameRule[T] // longest first
	any      T
	hasAny   bool
}

type nameRule[T any] struct {
	pattern string
	v       T
}

func parseNameRules[T comparable](spec, what string, parse func(string) (T, error)) (nameRules[T], error) {
	r := nameRules[T]{exact: map[string]T{}}
	seen := map[string]bool{}
	err := eachPair(spec, what, what, func(k, v string) error {
		if seen[k] {
			return fmt.Errorf("policy: %s of %q is given twice", what, k)
		}
		seen[k] = true
		val, err := parse(v)
		if err != nil {
			return err
		}
		switch {
		case k == AnyName:
			r.any, r.hasAny = val, true
		case strings.ContainsAny(k, `*?[\`):
			if _, err := path.Match(k, ""); err != nil {
				return fmt.Errorf("policy: pattern %q: %v", k, err)
			}
			r.patterns = append(r.patterns, nameRule[T]{k, val})
		default:
			if err := ValidateName(k); err != nil {
				return err
			}
			r.exact[k] = val
		}
		return nil
	})
	if err != nil {
		return nameRules[T]{}, err
	}
	slices.SortStableFunc(r.patterns, func(a, b nameRule[T]) int { return len(b.pattern) - len(a.pattern) })
	return r, nil
}

func (r nameRules[T]) lookup(name string) T {
	if v, ok := r.exact[name]; ok {
		return v
	}
	for _, p := range r.patterns {
		if ok, _ := path.Match(p.pattern, name); ok {
			return p.v
		}
	}
	return r.any // the zero value when no "*" rule: open, global
}

func (r nameRules[T]) uses(v T) bool {
	if r.hasAny && r.any == v {
		return true
	}
	for _, x := range r.exact {
		if x == v {
			return true
		}
	}
	for _, p := range r.patterns {
		if p.v == v {
			return true
		}
	}
	return false
}

// String lists the rules as "pattern=value" pairs: "*" first, then
// patterns, then exact names, each group sorted.
func (r nameRules[T]) String() string {
	var parts []string
	if r.hasAny {
		parts = append(parts, fmt.Sprintf("*=%v", r.any))
	}
	for _, p := range r.patterns {
		parts = append(parts, fmt.Sprintf("%s=%v", p.pattern, p.v))
	}
	names := make([]string, 0, len(r.exact))
	for k := range r.exact {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s=%v", k, r.exact[k]))
	}
	return strings.Join(parts, ",")
}
