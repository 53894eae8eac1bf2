package broker_test

import (
	"errors"
	"strconv"
	"testing"

	"github.com/herald-push/herald/pkg/broker"
)

func TestParsePosition(t *testing.T) {
	for _, tc := range []struct {
		in    string
		epoch string
		seq   uint64
		ok    bool
	}{
		{"abc:1", "abc", 1, true},
		{"abc:0", "abc", 0, true},
		{"lx0k1:18446744073709551615", "lx0k1", 18446744073709551615, true},
		{"abc:12:order-7", "abc", 12, true},
		{"abc:12:with:colons", "abc", 12, true},
		{"", "", 0, false},
		{"abc", "", 0, false},
		{"abc:", "", 0, false},
		{":1", "", 0, false},
		{"ABC:1", "", 0, false},
		{"abc:-1", "", 0, false},
		{"abc:+1", "", 0, false},
		{"abc:01", "", 0, false},
		{"abc:1.5", "", 0, false},
		{"abc:18446744073709551616", "", 0, false},
		{"abc:99999999999999999999999", "", 0, false},
		{"toolongepoch12345:1", "", 0, false},
		{"a b:1", "", 0, false},
	} {
		p, err := broker.ParsePosition(tc.in)
		if tc.ok != (err == nil) || (tc.ok && (p.Epoch != tc.epoch || p.Seq != tc.seq)) {
			t.Errorf("ParsePosition(%q) = %+v, %v", tc.in, p, err)
		}
		if !tc.ok && !errors.Is(err, broker.ErrBadPosition) {
			t.Errorf("ParsePosition(%q) error %v is not ErrBadPosition", tc.in, err)
		}
	}
}

// FuzzParsePosition: never panics; whatever parses re-formats to the same
// epoch and sequence.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"abc:1", "abc:1:x", "", ":", "abc:-1", "abc:18446744073709551616", "\x00:1", "a:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := broker.ParsePosition(s)
		if err != nil {
			return
		}
		q, err := broker.ParsePosition(broker.FormatEventID(p.Epoch, p.Seq, "tail"))
		if err != nil || q != p {
			t.Fatalf("%q → %+v does not round-trip: %+v %v", s, p, q, err)
		}
		if strconv.FormatUint(p.Seq, 10) == "" {
			t.Fatal("empty sequence")
		}
	})
}
