package policy

import (
	"strings"
	"unicode/utf8"
)

// Limits on identity and event fields, in bytes.
const (
	MaxIdentityLen = 256 // name, group, clientId (a signed clientId may be longer by its signature)
	MaxSignedLen   = MaxIdentityLen + 64
	MaxEventIDLen  = 256
	MaxEventType   = 128
)

// ValidateName checks a connection or target name: 1..MaxIdentityLen bytes of
// valid UTF-8 without control characters.
func ValidateName(name string) error {
	if name == "" {
		return identityErr("name", "required")
	}
	return checkText("name", name, MaxIdentityLen, ErrInvalidIdentity)
}

// ValidateGroup checks a group; empty means none and is valid.
func ValidateGroup(group string) error {
	if group == "" {
		return nil
	}
	return checkText("group", group, MaxIdentityLen, ErrInvalidIdentity)
}

// ValidateClientID checks a clientId in raw or signed form; empty means
// "assign one" and is valid.
func ValidateClientID(id string) error {
	if id == "" {
		return nil
	}
	max := MaxIdentityLen
	if strings.HasPrefix(id, SignedPrefix) {
		max = MaxSignedLen
	}
	return checkText("clientId", id, max, ErrInvalidIdentity)
}

// ValidateEventID checks an event id: no CR, LF or NUL (they would inject
// SSE fields), at most MaxEventIDLen bytes, valid UTF-8.
func ValidateEventID(id string) error {
	return checkText("id", id, MaxEventIDLen, ErrInvalidField)
}

// ValidateEventType checks an event type like ValidateEventID.
func ValidateEventType(typ string) error {
	return checkText("event", typ, MaxEventType, ErrInvalidField)
}

func identityErr(field, reason string) error {
	return &FieldError{Field: field, Reason: reason, kind: ErrInvalidIdentity}
}

func checkText(field, s string, max int, kind error) error {
	if len(s) > max {
		return &FieldError{Field: field, Reason: "longer than " + itoa(max) + " bytes", kind: kind}
	}
	if !utf8.ValidString(s) {
		return &FieldError{Field: field, Reason: "not valid UTF-8", kind: kind}
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return &FieldError{Field: field, Reason: "contains a control character (CR, LF, NUL, ...)", kind: kind}
		}
	}
	return nil
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
