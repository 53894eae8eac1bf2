package policy_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/policy"
)

const chromeUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"

// signingVectors are the test vectors of PODE-WIRE.md §2.4. Vector 1 is
// Pode's own unit test (Invoke-PodeValueSign -Value 'value' -Secret 'key').
var signingVectors = []struct {
	name   string
	id     string
	secret string
	strict bool
	ua, ip string
	key    string // the HMAC key string Pode builds
	signed string
}{
	{
		name: "1 pode unit test", id: "value", secret: "key", key: "key",
		signed: "s:value.kPv88V50o2uJ29sqch2a7P/f3dxcg+J/dZJZT3GTJIE=",
	},
	{
		name: "2 guid", id: "5d12f974-7b1a-4524-ab93-6afbf42c4ffa", secret: "super-secret", key: "super-secret",
		signed: "s:5d12f974-7b1a-4524-ab93-6afbf42c4ffa.8qHWZA7dMwgbAO0uW3pncXp8U6YpaOJBiaXpPFqdVlg=",
	},
	{
		name: "3 guid punctuated secret", id: "0b7f6a1e-3c2d-4e5f-8a9b-c0d1e2f3a4b5", secret: "Sup3rS3cr37!", key: "Sup3rS3cr37!",
		signed: "s:0b7f6a1e-3c2d-4e5f-8a9b-c0d1e2f3a4b5.a8V1VgG7T/7aNjXwNrc/aIq+i+RtMB/GmZiIAHVq9jQ=",
	},
	{
		name: "4 strict browser", id: "0b7f6a1e-3c2d-4e5f-8a9b-c0d1e2f3a4b5", secret: "Sup3rS3cr37!",
		strict: true, ua: chromeUA, ip: "127.0.0.1",
		key:    "Sup3rS3cr37!;" + chromeUA + ";127.0.0.1",
		signed: "s:0b7f6a1e-3c2d-4e5f-8a9b-c0d1e2f3a4b5.D56dPhudjDTHiC1PLzEq7m9fCE5tQZ1hM/14APR4B+E=",
	},
	{
		name: "5 strict no user agent ipv6", id: "0b7f6a1e-3c2d-4e5f-8a9b-c0d1e2f3a4b5", secret: "Sup3rS3cr37!",
		strict: true, ua: "", ip: "::1",
		key:    "Sup3rS3cr37!;;::1",
		signed: "s:0b7f6a1e-3c2d-4e5f-8a9b-c0d1e2f3a4b5.b+n8k9EjXadJFdTElEbCR4OUNZpSx1v8isNgmiYve0o=",
	},
	{
		name: "6 strict curl", id: "my-client-id", secret: "super-secret",
		strict: true, ua: "curl/8.5.0", ip: "192.168.1.20",
		key:    "super-secret;curl/8.5.0;192.168.1.20",
		signed: "s:my-client-id.Ntf8sRfIzfGsqQJnw9Bam5Op8IUVqnyhduy7eFRr5Ag=",
	},
	{
		name: "7 dotted id splits at last dot", id: "my.dotted.id", secret: "k", key: "k",
		signed: "s:my.dotted.id.7wORP9FbI1K8KEOOPxWy04iEXFKQefnH035m6CvMuGQ=",
	},
}

func TestSigningVectors(t *testing.T) {
	for _, v := range signingVectors {
		t.Run(v.name, func(t *testing.T) {
			s := policy.Signer{Secret: v.secret, Strict: v.strict}
			if got := s.Key(v.ua, v.ip); got != v.key {
				t.Errorf("Key = %q, want %q", got, v.key)
			}
			if got := policy.Sign(v.id, v.key); got != v.signed {
				t.Errorf("Sign(%q, key) = %q, want %q", v.id, got, v.signed)
			}
			if got := s.Sign(v.id, v.ua, v.ip); got != v.signed {
				t.Errorf("Signer.Sign = %q, want %q", got, v.signed)
			}
			id, err := s.Verify(v.signed, v.ua, v.ip)
			if err != nil || id != v.id {
				t.Errorf("Signer.Verify = %q, %v; want %q, nil", id, err, v.id)
			}
			id, err = policy.Unsign(v.signed, v.key)
			if err != nil || id != v.id {
				t.Errorf("Unsign = %q, %v; want %q, nil", id, err, v.id)
			}
			if got := policy.RawID(v.signed); got != v.id {
				t.Errorf("RawID = %q, want %q", got, v.id)
			}

			// A different secret never verifies.
			other := policy.Signer{Secret: v.secret + "x", Strict: v.strict}
			if _, err := other.Verify(v.signed, v.ua, v.ip); !errors.Is(err, policy.ErrBadSignature) {
				t.Errorf("Verify with another secret: err = %v, want ErrBadSignature", err)
			}
			if !v.strict {
				// Without strict mode the client's User-Agent and IP do not matter.
				if _, err := s.Verify(v.signed, "other-agent", "10.0.0.1"); err != nil {
					t.Errorf("non-strict Verify with another UA/IP: %v", err)
				}
				return
			}
			// Strict mode binds the signature to the User-Agent and IP.
			for _, c := range []struct{ what, ua, ip string }{
				{"user agent", v.ua + " ", v.ip},
				{"ip", v.ua, "10.9.8.7"},
				{"both", "curl/8.6.0", "::ffff:127.0.0.1"},
			} {
				if _, err := s.Verify(v.signed, c.ua, c.ip); !errors.Is(err, policy.ErrBadSignature) {
					t.Errorf("strict Verify with another %s: err = %v, want ErrBadSignature", c.what, err)
				}
			}
			// The same secret without strict mode does not verify a strict signature.
			loose := policy.Signer{Secret: v.secret}
			if _, err := loose.Verify(v.signed, v.ua, v.ip); !errors.Is(err, policy.ErrBadSignature) {
				t.Errorf("non-strict Verify of a strict signature: err = %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestUnsignRejects(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  error
	}{
		// The three negative cases of PODE-WIRE.md §2.4.
		{"no prefix", "value", policy.ErrNotSigned},
		{"no dot", "s:value", policy.ErrMalformedSigned},
		{"bad signature", "s:value.random", policy.ErrBadSignature},
		// Further malformed values.
		{"empty", "", policy.ErrNotSigned},
		{"prefix only", "s:", policy.ErrMalformedSigned},
		{"uppercase prefix", "S:value.kPv88V50o2uJ29sqch2a7P/f3dxcg+J/dZJZT3GTJIE=", policy.ErrNotSigned},
		{"empty id", "s:.kPv88V50o2uJ29sqch2a7P/f3dxcg+J/dZJZT3GTJIE=", policy.ErrMalformedSigned},
		{"empty signature", "s:value.", policy.ErrMalformedSigned},
		{"signature without padding", "s:value.kPv88V50o2uJ29sqch2a7P/f3dxcg+J/dZJZT3GTJIE", policy.ErrBadSignature},
		{"url-safe signature", "s:value.kPv88V50o2uJ29sqch2a7P_f3dxcg-J_dZJZT3GTJIE=", policy.ErrBadSignature},
		// Pode compares with PowerShell's case-insensitive -ne and would accept
		// this; Herald compares exactly, which only rejects altered values.
		{"signature case changed", "s:value.KPV88V50O2UJ29SQCH2A7P/F3DXCG+J/DZJZT3GTJIE=", policy.ErrBadSignature},
		{"id changed", "s:valuE.kPv88V50o2uJ29sqch2a7P/f3dxcg+J/dZJZT3GTJIE=", policy.ErrBadSignature},
		{"trailing byte", "s:value.kPv88V50o2uJ29sqch2a7P/f3dxcg+J/dZJZT3GTJIE= ", policy.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := policy.Unsign(tt.value, "key")
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unsign(%q) = %q, %v; want error %v", tt.value, id, err, tt.want)
			}
			if id != "" {
				t.Errorf("Unsign(%q) returned id %q with an error", tt.value, id)
			}
			s := policy.Signer{Secret: "key"}
			if _, err := s.Verify(tt.value, "ua", "127.0.0.1"); !errors.Is(err, tt.want) {
				t.Errorf("Signer.Verify(%q): err = %v, want %v", tt.value, err, tt.want)
			}
		})
	}
}

func TestSignerDisabled(t *testing.T) {
	var off policy.Signer
	if off.Enabled() {
		t.Fatal("zero Signer is enabled")
	}
	if !(policy.Signer{Secret: "k"}).Enabled() {
		t.Fatal("Signer with a secret is not enabled")
	}
	// With signing off the HMAC key would be empty (or ";UA;IP" in strict
	// mode), which anyone can compute: nothing may verify.
	for _, s := range []policy.Signer{{}, {Strict: true}} {
		forged := policy.Sign("victim", s.Key("ua", "1.2.3.4"))
		id, err := s.Verify(forged, "ua", "1.2.3.4")
		if !errors.Is(err, policy.ErrSignedWhileSigningOff) {
			t.Errorf("Strict=%v: Verify(%q) = %q, %v; want ErrSignedWhileSigningOff", s.Strict, forged, id, err)
		}
		if _, err := s.Verify("victim", "ua", "1.2.3.4"); !errors.Is(err, policy.ErrNotSigned) {
			t.Errorf("Strict=%v: Verify of an unsigned id: err = %v, want ErrNotSigned", s.Strict, err)
		}
	}
}

func TestSplitSigned(t *testing.T) {
	tests := []struct {
		value   string
		id, sig string
		err     error
	}{
		{"s:value.sig", "value", "sig", nil},
		{"s:my.dotted.id.7wORP9FbI1K8KEOOPxWy04iEXFKQefnH035m6CvMuGQ=", "my.dotted.id", "7wORP9FbI1K8KEOOPxWy04iEXFKQefnH035m6CvMuGQ=", nil},
		{"s:a.b.c", "a.b", "c", nil},
		{"s:s:a.b", "s:a", "b", nil},
		{"s:a..b", "a.", "b", nil},
		{"value", "", "", policy.ErrNotSigned},
		{"", "", "", policy.ErrNotSigned},
		{"x:a.b", "", "", policy.ErrNotSigned},
		{"s:", "", "", policy.ErrMalformedSigned},
		{"s:value", "", "", policy.ErrMalformedSigned},
		{"s:.sig", "", "", policy.ErrMalformedSigned},
		{"s:value.", "", "", policy.ErrMalformedSigned},
		{"s:.", "", "", policy.ErrMalformedSigned},
		{"s:a.b.", "", "", policy.ErrMalformedSigned},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			id, sig, err := policy.SplitSigned(tt.value)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("SplitSigned(%q) err = %v, want %v", tt.value, err, tt.err)
			}
			if id != tt.id || sig != tt.sig {
				t.Errorf("SplitSigned(%q) = %q, %q; want %q, %q", tt.value, id, sig, tt.id, tt.sig)
			}
		})
	}
}

func TestRawID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"s:abc.SIG", "abc"},
		{"s:my.dotted.id.7wORP9FbI1K8KEOOPxWy04iEXFKQefnH035m6CvMuGQ=", "my.dotted.id"},
		{"abc", "abc"},
		{"", ""},
		{"a.b", "a.b"},     // not signed form: unchanged
		{"s:abc", "s:abc"}, // malformed: unchanged
		{"s:.sig", "s:.sig"},
		{"s:abc.", "s:abc."},
		{"s:abc.forged", "abc"}, // RawID does not verify
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := policy.RawID(tt.in); got != tt.want {
				t.Errorf("RawID(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestNewClientID(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, n)
	for range n {
		id := policy.NewClientID()
		if !guidRE.MatchString(id) {
			t.Fatalf("NewClientID() = %q, want lowercase 8-4-4-4-12 hex", id)
		}
		if seen[id] {
			t.Fatalf("NewClientID() returned %q twice in %d draws", id, n)
		}
		seen[id] = true
		if err := policy.ValidateClientID(id); err != nil {
			t.Fatalf("ValidateClientID(NewClientID()) = %v", err)
		}
		if strings.HasPrefix(id, policy.SignedPrefix) {
			t.Fatalf("NewClientID() = %q looks signed", id)
		}
	}
}
