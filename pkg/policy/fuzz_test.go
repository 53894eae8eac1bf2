package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/policy"
)

// FuzzUnsign checks Unsign against Sign: it never panics, a value it accepts
// is exactly what Sign produces for the returned id, and a value Sign
// produces always verifies to its id.
func FuzzUnsign(f *testing.F) {
	for _, v := range signingVectors {
		f.Add(v.signed, v.key)
		f.Add(v.id, v.key)
	}
	f.Add("value", "key")
	f.Add("s:value", "key")
	f.Add("s:value.random", "key")
	f.Add("s:.", "")
	f.Add("s:a.b.c.", "k")
	f.Add("s:\xff.\x00", "\xfe")
	f.Fuzz(func(t *testing.T, value, key string) {
		id, err := policy.Unsign(value, key)
		if err == nil {
			if id == "" {
				t.Fatalf("Unsign(%q) accepted an empty id", value)
			}
			if got := policy.Sign(id, key); got != value {
				t.Fatalf("Unsign(%q) = %q but Sign(%q) = %q", value, id, id, got)
			}
		} else {
			if id != "" {
				t.Fatalf("Unsign(%q) = %q with error %v", value, id, err)
			}
			if !errors.Is(err, policy.ErrNotSigned) && !errors.Is(err, policy.ErrMalformedSigned) && !errors.Is(err, policy.ErrBadSignature) {
				t.Fatalf("Unsign(%q) error %v matches no sentinel", value, err)
			}
		}

		// Treat the input as a raw id too. Pode refuses to sign an empty
		// value, and so Unsign rejects an empty id as malformed.
		if value == "" {
			return
		}
		signed := policy.Sign(value, key)
		got, err := policy.Unsign(signed, key)
		if err != nil || got != value {
			t.Fatalf("Unsign(Sign(%q)) = %q, %v", value, got, err)
		}
		if policy.RawID(signed) != value {
			t.Fatalf("RawID(Sign(%q)) = %q", value, policy.RawID(signed))
		}
		if _, err := policy.Unsign(signed, key+"x"); !errors.Is(err, policy.ErrBadSignature) {
			t.Fatalf("Unsign(Sign(%q)) with another key: err = %v, want ErrBadSignature", value, err)
		}
	})
}

// FuzzSplitSigned checks that SplitSigned splits at the last dot and that
// its parts put back together give the input.
func FuzzSplitSigned(f *testing.F) {
	for _, v := range signingVectors {
		f.Add(v.signed)
	}
	for _, s := range []string{"", "value", "s:", "s:.", "s:value", "s:value.", "s:.sig", "s:a.b.c", "s:s:a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		id, sig, err := policy.SplitSigned(value)
		switch {
		case err == nil:
			if id == "" || sig == "" {
				t.Fatalf("SplitSigned(%q) = %q, %q with an empty part", value, id, sig)
			}
			if strings.Contains(sig, ".") {
				t.Fatalf("SplitSigned(%q) signature %q contains a dot", value, sig)
			}
			if policy.SignedPrefix+id+"."+sig != value {
				t.Fatalf("SplitSigned(%q) = %q, %q does not rebuild the input", value, id, sig)
			}
			if policy.RawID(value) != id {
				t.Fatalf("RawID(%q) = %q, want %q", value, policy.RawID(value), id)
			}
		case errors.Is(err, policy.ErrNotSigned):
			if strings.HasPrefix(value, policy.SignedPrefix) {
				t.Fatalf("SplitSigned(%q) = ErrNotSigned for a value with the prefix", value)
			}
		case errors.Is(err, policy.ErrMalformedSigned):
			if !strings.HasPrefix(value, policy.SignedPrefix) {
				t.Fatalf("SplitSigned(%q) = ErrMalformedSigned for a value without the prefix", value)
			}
		default:
			t.Fatalf("SplitSigned(%q) error %v matches no sentinel", value, err)
		}
		if err != nil {
			if id != "" || sig != "" {
				t.Fatalf("SplitSigned(%q) = %q, %q with error %v", value, id, sig, err)
			}
			if policy.RawID(value) != value {
				t.Fatalf("RawID(%q) = %q, want the input unchanged", value, policy.RawID(value))
			}
		}
	})
}
