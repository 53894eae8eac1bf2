package policy

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrNotSigned: a value that should be a signed id does not start with "s:".
	ErrNotSigned = errors.New("policy: clientId is not signed")
	// ErrMalformedSigned: a value starts with "s:" but has no "." separator or an empty id.
	ErrMalformedSigned = errors.New("policy: malformed signed clientId")
	// ErrBadSignature: the signature does not match (wrong secret, or in strict
	// mode a different User-Agent or IP).
	ErrBadSignature = errors.New("policy: clientId signature does not verify")
	// ErrSignedWhileSigningOff: a client offered an "s:" id while signing is off.
	ErrSignedWhileSigningOff = errors.New("policy: signed clientId offered but signing is off")
	// ErrBroadcastLevel is matched by every *LevelError.
	ErrBroadcastLevel = errors.New("policy: broadcast level violated")
	// ErrInvalidIdentity is matched by every *FieldError about a name, group or clientId.
	ErrInvalidIdentity = errors.New("policy: invalid identity")
	// ErrInvalidField is matched by every *FieldError about an event id or type.
	ErrInvalidField = errors.New("policy: invalid event field")
)

// LevelError reports a send that is wider than the broadcast level allows.
type LevelError struct {
	Name  string
	Level Level
}

func (e *LevelError) Error() string {
	return fmt.Sprintf("policy: broadcast level for %q is %s: %s", e.Name, e.Level, e.Level.requirement())
}

// Is makes errors.Is(err, ErrBroadcastLevel) true.
func (e *LevelError) Is(target error) bool { return target == ErrBroadcastLevel }

// FieldError names the field that failed validation and why.
type FieldError struct {
	Field  string // "name", "group", "clientId", "id", "event"
	Reason string
	kind   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("policy: invalid %s: %s", e.Field, e.Reason) }

// Is matches ErrInvalidIdentity or ErrInvalidField, whichever applies.
func (e *FieldError) Is(target error) bool { return target == e.kind }
