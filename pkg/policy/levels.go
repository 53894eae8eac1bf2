package policy

import (
	"fmt"
	"strings"
)

// Level is a broadcast level: how narrow a send to a name must be.
type Level uint8

const (
	// LevelName (the default) allows sends to a whole name.
	LevelName Level = iota
	// LevelGroup requires at least one group or one clientId.
	LevelGroup
	// LevelClientID requires at least one clientId.
	LevelClientID
)

// AnyName is the key that sets the level for every name without its own.
const AnyName = "*"

func (l Level) String() string {
	switch l {
	case LevelGroup:
		return "group"
	case LevelClientID:
		return "clientid"
	default:
		return "name"
	}
}

func (l Level) requirement() string {
	switch l {
	case LevelGroup:
		return "a group or clientId is required"
	case LevelClientID:
		return "a clientId is required"
	default:
		return "no restriction"
	}
}

// ParseLevel parses "name", "group" or "clientid" (case-insensitive).
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "name", "":
		return LevelName, nil
	case "group":
		return LevelGroup, nil
	case "clientid":
		return LevelClientID, nil
	}
	return 0, fmt.Errorf("policy: unknown broadcast level %q (want name, group or clientid)", s)
}

// Levels maps names to broadcast levels with Pode's precedence: a level set
// for the exact name wins over AnyName ("*"), which wins over LevelName.
// A Levels is immutable once built and safe for concurrent use.
// The zero value allows every send.
type Levels struct {
	byName map[string]Level
}

// NewLevels builds Levels from a map of name (or "*") to level.
func NewLevels(m map[string]Level) Levels {
	c := make(map[string]Level, len(m))
	for k, v := range m {
		c[k] = v
	}
	return Levels{byName: c}
}

// ParseLevels parses comma-separated "name=level" pairs, e.g.
// "*=group,Orders=clientid". Space around names, levels and commas is
// ignored; a pair without a name or a level is an error.
func ParseLevels(spec string) (Levels, error) {
	m := map[string]Level{}
	err := eachPair(spec, "broadcast level", "level", func(k, v string) error {
		l, err := ParseLevel(v)
		if err != nil {
			return err
		}
		m[k] = l
		return nil
	})
	if err != nil {
		return Levels{}, err
	}
	return NewLevels(m), nil
}

// eachPair calls f with each "name=value" pair of a comma-separated spec.
// Space around names, values and commas is ignored, around "=" too
// ("Orders = group" names "Orders", not "Orders "); a pair without a name
// or a value is an error (an empty value is refused rather than read as
// the most permissive one). what and value name the pair and its value in
// that error.
func eachPair(spec, what, value string, f func(k, v string) error) error {
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return fmt.Errorf("policy: %s %q: want name=%s", what, part, value)
		}
		if err := f(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Level returns the level in force for name.
func (ls Levels) Level(name string) Level {
	if l, ok := ls.byName[name]; ok {
		return l
	}
	if l, ok := ls.byName[AnyName]; ok {
		return l
	}
	return LevelName
}

// Check reports whether a send to name with or without groups and clientIds
// is allowed. It returns a *LevelError naming the name and level otherwise.
func (ls Levels) Check(name string, hasGroup, hasClientID bool) error {
	l := ls.Level(name)
	switch {
	case l == LevelGroup && !hasGroup && !hasClientID,
		l == LevelClientID && !hasClientID:
		return &LevelError{Name: name, Level: l}
	}
	return nil
}

// Map returns a copy of the configured levels.
func (ls Levels) Map() map[string]Level {
	c := make(map[string]Level, len(ls.byName))
	for k, v := range ls.byName {
		c[k] = v
	}
	return c
}
