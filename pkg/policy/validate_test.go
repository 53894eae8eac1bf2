package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/policy"
)

// validator describes one Validate function: the field it names in errors,
// the sentinel its errors match and its length limit.
type validator struct {
	name    string
	fn      func(string) error
	field   string
	kind    error
	max     int
	emptyOK bool
}

var validators = []validator{
	{"ValidateName", policy.ValidateName, "name", policy.ErrInvalidIdentity, policy.MaxIdentityLen, false},
	{"ValidateGroup", policy.ValidateGroup, "group", policy.ErrInvalidIdentity, policy.MaxIdentityLen, true},
	{"ValidateClientID", policy.ValidateClientID, "clientId", policy.ErrInvalidIdentity, policy.MaxIdentityLen, true},
	{"ValidateEventID", policy.ValidateEventID, "id", policy.ErrInvalidField, policy.MaxEventIDLen, true},
	{"ValidateEventType", policy.ValidateEventType, "event", policy.ErrInvalidField, policy.MaxEventType, true},
}

func TestValidate(t *testing.T) {
	const (
		accept = iota
		reject
		emptyRule // accepted unless the field is required
	)
	inputs := []struct {
		name string
		in   func(max int) string
		want int
	}{
		{"empty", func(int) string { return "" }, emptyRule},
		{"ascii", func(int) string { return "Orders-1_a b" }, accept},
		{"unicode", func(int) string { return "Bestellungen-Größe-注文-🚀" }, accept},
		{"non-ASCII separators", func(int) string { return "a\u0085b\u2028c" }, accept},
		{"at max", func(max int) string { return strings.Repeat("a", max) }, accept},
		{"at max multibyte", func(max int) string { return strings.Repeat("é", max/2) }, accept},
		{"over max", func(max int) string { return strings.Repeat("a", max+1) }, reject},
		{"over max multibyte", func(max int) string { return strings.Repeat("é", max/2+1) }, reject},
		{"CR", func(int) string { return "a\rb" }, reject},
		{"LF", func(int) string { return "a\nb" }, reject},
		{"CRLF injection", func(int) string { return "x\r\ndata: injected" }, reject},
		{"NUL", func(int) string { return "a\x00b" }, reject},
		{"tab", func(int) string { return "a\tb" }, reject},
		{"DEL", func(int) string { return "a\x7fb" }, reject},
		{"invalid UTF-8", func(int) string { return "a\xffb" }, reject},
		{"truncated UTF-8", func(int) string { return "a\xc3" }, reject},
		{"surrogate half", func(int) string { return "\xed\xa0\x80" }, reject},
	}
	for _, v := range validators {
		for _, in := range inputs {
			t.Run(v.name+"/"+in.name, func(t *testing.T) {
				s := in.in(v.max)
				err := v.fn(s)
				ok := in.want == accept || (in.want == emptyRule && v.emptyOK)
				if ok {
					if err != nil {
						t.Fatalf("%s(%q) = %v, want nil", v.name, s, err)
					}
					return
				}
				checkFieldError(t, err, v.field, v.kind)
			})
		}
	}
}

func TestValidateSignedClientID(t *testing.T) {
	raw := strings.Repeat("a", policy.MaxIdentityLen)
	signed := policy.Sign(raw, "secret")
	if len(signed) <= policy.MaxIdentityLen {
		t.Fatalf("test setup: signed value is only %d bytes", len(signed))
	}
	if err := policy.ValidateClientID(signed); err != nil {
		t.Errorf("ValidateClientID(signed id of max length) = %v, want nil", err)
	}
	if err := policy.ValidateClientID(policy.SignedPrefix + strings.Repeat("a", policy.MaxSignedLen)); err == nil {
		t.Error("ValidateClientID accepted a signed-looking value over MaxSignedLen")
	}
	// Only the clientId gets the allowance.
	checkFieldError(t, policy.ValidateName(signed), "name", policy.ErrInvalidIdentity)
}

func checkFieldError(t *testing.T, err error, field string, kind error) {
	t.Helper()
	if err == nil {
		t.Fatal("got nil error, want a *FieldError")
	}
	var fe *policy.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is %T, want *FieldError", err, err)
	}
	if fe.Field != field {
		t.Errorf("FieldError.Field = %q, want %q", fe.Field, field)
	}
	if fe.Reason == "" {
		t.Error("FieldError.Reason is empty")
	}
	if !strings.Contains(err.Error(), field) {
		t.Errorf("Error() = %q does not name the field %q", err, field)
	}
	if !errors.Is(err, kind) {
		t.Errorf("errors.Is(%v, %v) = false", err, kind)
	}
	other := policy.ErrInvalidField
	if kind == policy.ErrInvalidField {
		other = policy.ErrInvalidIdentity
	}
	if errors.Is(err, other) {
		t.Errorf("errors.Is(%v, %v) = true, want only %v", err, other, kind)
	}
	if errors.Is(err, policy.ErrBroadcastLevel) {
		t.Errorf("FieldError matches ErrBroadcastLevel")
	}
}
