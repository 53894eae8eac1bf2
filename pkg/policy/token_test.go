package policy_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-push/herald/pkg/policy"
)

// The fixed clock of these tests, and keys that never change, so that the
// fuzz corpus holds tokens that stay valid at that clock.
var (
	testNow    = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes
	testEdKey  = ed25519.NewKeyFromSeed([]byte("herald-test-ed25519-seed-32bytes"))
)

var rsaOnce = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func pemOf(t testing.TB, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkix(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "PUBLIC KEY", der)
}

// claims builds a token body at testNow, valid for ttl.
func claims(ttl time.Duration, herald map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "user-42", "iat": testNow.Unix(), "exp": testNow.Add(ttl).Unix()}
	if herald != nil {
		c["herald"] = herald
	}
	return c
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func verifier(t testing.TB, c policy.TokenConfig) *policy.TokenVerifier {
	t.Helper()
	v, err := policy.NewTokenVerifier(c)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var orders = map[string]any{"names": []string{"Orders"}}

func TestTokenVerify(t *testing.T) {
	rsaKey := rsaOnce()
	edPub := testEdKey.Public()
	all := verifier(t, policy.TokenConfig{Secret: testSecret,
		PublicKeys: append(pkix(t, &rsaKey.PublicKey), pkix(t, edPub)...)})
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	good := claims(time.Minute, orders)

	// alg:none, hand-made: the library refuses to sign it without its unsafe key.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1999999999,"herald":{"names":["Orders"]}}`)) + "."
	// Algorithm confusion: HS256 keyed with the RSA public key's PEM, the
	// classic attack on verifiers that take the key type from the token.
	confusion := sign(t, jwt.SigningMethodHS256, pkix(t, &rsaKey.PublicKey), good)

	for _, tc := range []struct {
		name string
		raw  string
		want error // nil: valid
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, []byte(testSecret), good), nil},
		{"RS256", sign(t, jwt.SigningMethodRS256, rsaKey, good), nil},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, testEdKey, good), nil},
		{"HS256 wrong secret", sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), good), policy.ErrTokenInvalid},
		{"RS256 another key", sign(t, jwt.SigningMethodRS256, otherRSA, good), policy.ErrTokenInvalid},
		{"EdDSA another key", sign(t, jwt.SigningMethodEdDSA, otherEd, good), policy.ErrTokenInvalid},
		{"alg none", none, policy.ErrTokenInvalid},
		{"HS256 keyed with the RSA public key", confusion, policy.ErrTokenInvalid},
		{"HS384 not accepted", sign(t, jwt.SigningMethodHS384, []byte(testSecret), good), policy.ErrTokenInvalid},
		{"RS512 not accepted", sign(t, jwt.SigningMethodRS512, rsaKey, good), policy.ErrTokenInvalid},
		{"PS256 not accepted", sign(t, jwt.SigningMethodPS256, rsaKey, good), policy.ErrTokenInvalid},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(-time.Minute, orders)), policy.ErrTokenExpired},
		{"no exp", sign(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"herald": orders}), policy.ErrTokenInvalid},
		{"nbf in the future", sign(t, jwt.SigningMethodHS256, []byte(testSecret),
			jwt.MapClaims{"exp": testNow.Add(time.Hour).Unix(), "nbf": testNow.Add(time.Minute).Unix(), "herald": orders}), policy.ErrTokenInvalid},
		{"iat in the future", sign(t, jwt.SigningMethodHS256, []byte(testSecret),
			jwt.MapClaims{"exp": testNow.Add(time.Hour).Unix(), "iat": testNow.Add(time.Minute).Unix(), "herald": orders}), policy.ErrTokenInvalid},
		{"no herald claim", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(time.Minute, nil)), policy.ErrTokenInvalid},
		{"no names", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(time.Minute, map[string]any{"group": "a"})), policy.ErrTokenInvalid},
		{"signed clientId claim", sign(t, jwt.SigningMethodHS256, []byte(testSecret),
			claims(time.Minute, map[string]any{"names": []string{"A"}, "clientId": "s:x.sig"})), policy.ErrTokenInvalid},
		{"control character in a name", sign(t, jwt.SigningMethodHS256, []byte(testSecret),
			claims(time.Minute, map[string]any{"names": []string{"A\r\nB"}})), policy.ErrTokenInvalid},
		{"names of the wrong type", sign(t, jwt.SigningMethodHS256, []byte(testSecret),
			claims(time.Minute, map[string]any{"names": "Orders"})), policy.ErrTokenInvalid},
		{"garbage", "not.a.token", policy.ErrTokenInvalid},
		{"empty", "", policy.ErrTokenInvalid},
		{"oversized", strings.Repeat("a", policy.MaxTokenLen+1), policy.ErrTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := all.Verify(tc.raw, testNow)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Subject != "user-42" || c.Names[0] != "Orders" || !c.Expires.Equal(testNow.Add(time.Minute)) {
					t.Fatalf("claims %+v", c)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), tc.raw) && tc.raw != "" {
				t.Fatalf("the error repeats the token: %v", err)
			}
		})
	}
}

// A verifier accepts only the algorithms it holds keys for: an RS256 or
// HS256 token never verifies at an edge configured with Ed25519 keys alone.
func TestTokenWrongKeyType(t *testing.T) {
	edOnly := verifier(t, policy.TokenConfig{PublicKeys: pkix(t, testEdKey.Public())})
	if got := edOnly.Methods(); len(got) != 1 || got[0] != "EdDSA" {
		t.Fatalf("methods %v", got)
	}
	good := claims(time.Minute, orders)
	for name, raw := range map[string]string{
		"RS256": sign(t, jwt.SigningMethodRS256, rsaOnce(), good),
		"HS256": sign(t, jwt.SigningMethodHS256, []byte(testSecret), good),
		// HMAC keyed with the Ed25519 public key's raw bytes.
		"HS256 confusion": sign(t, jwt.SigningMethodHS256, []byte(testEdKey.Public().(ed25519.PublicKey)), good),
	} {
		if _, err := edOnly.Verify(raw, testNow); !errors.Is(err, policy.ErrTokenInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestTokenClockSkew(t *testing.T) {
	v := verifier(t, policy.TokenConfig{Secret: testSecret, Leeway: 30 * time.Second})
	expiredBy := func(d time.Duration) string {
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"exp": testNow.Add(-d).Unix(), "herald": orders})
	}
	if _, err := v.Verify(expiredBy(20*time.Second), testNow); err != nil {
		t.Fatalf("expired 20 s ago, within a 30 s leeway: %v", err)
	}
	if _, err := v.Verify(expiredBy(40*time.Second), testNow); !errors.Is(err, policy.ErrTokenExpired) {
		t.Fatalf("expired 40 s ago: %v", err)
	}
	early := sign(t, jwt.SigningMethodHS256, []byte(testSecret),
		jwt.MapClaims{"exp": testNow.Add(time.Hour).Unix(), "nbf": testNow.Add(20 * time.Second).Unix(), "herald": orders})
	if _, err := v.Verify(early, testNow); err != nil {
		t.Fatalf("nbf 20 s ahead, within the leeway: %v", err)
	}
}

func TestTokenAudienceIssuer(t *testing.T) {
	v := verifier(t, policy.TokenConfig{Secret: testSecret, Audience: "herald", Issuer: "https://app.example"})
	mk := func(aud, iss string) string {
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret),
			jwt.MapClaims{"exp": testNow.Add(time.Hour).Unix(), "aud": aud, "iss": iss, "herald": orders})
	}
	if _, err := v.Verify(mk("herald", "https://app.example"), testNow); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{mk("other", "https://app.example"), mk("herald", "https://evil.example")} {
		if _, err := v.Verify(raw, testNow); !errors.Is(err, policy.ErrTokenInvalid) {
			t.Errorf("accepted: %v", err)
		}
	}
}

func TestNewTokenVerifierRefuses(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	priv, _ := x509.MarshalPKCS8PrivateKey(testEdKey)
	for name, c := range map[string]policy.TokenConfig{
		"nothing":          {},
		"short secret":     {Secret: "short"},
		"1024-bit RSA":     {PublicKeys: pkix(t, &small.PublicKey)},
		"a private key":    {PublicKeys: pemOf(t, "PRIVATE KEY", priv)},
		"not PEM":          {PublicKeys: []byte("ssh-ed25519 AAAA")},
		"negative leeway":  {Secret: testSecret, Leeway: -time.Second},
		"broken PEM block": {PublicKeys: pemOf(t, "PUBLIC KEY", []byte("nonsense"))},
	} {
		if _, err := policy.NewTokenVerifier(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// PKCS#1 and certificates are public keys too.
	pkcs1 := pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaOnce().PublicKey))
	if _, err := policy.NewTokenVerifier(policy.TokenConfig{PublicKeys: pkcs1}); err != nil {
		t.Errorf("PKCS#1: %v", err)
	}
}

func TestTokenGrant(t *testing.T) {
	for _, tc := range []struct {
		name   string
		claims policy.TokenClaims
		want   policy.Identity
		got    policy.Identity // zero: refused
	}{
		{"name only", policy.TokenClaims{Names: []string{"A"}}, policy.Identity{Name: "A"}, policy.Identity{Name: "A"}},
		{"name not allowed", policy.TokenClaims{Names: []string{"A"}}, policy.Identity{Name: "B"}, policy.Identity{}},
		{"any name", policy.TokenClaims{Names: []string{"*"}}, policy.Identity{Name: "B"}, policy.Identity{Name: "B"}},
		{"group assigned", policy.TokenClaims{Names: []string{"A"}, Group: "admins"}, policy.Identity{Name: "A"}, policy.Identity{Name: "A", Group: "admins"}},
		{"group repeated in another case", policy.TokenClaims{Names: []string{"A"}, Group: "admins"}, policy.Identity{Name: "A", Group: "ADMINS"}, policy.Identity{Name: "A", Group: "admins"}},
		{"group contradicted", policy.TokenClaims{Names: []string{"A"}, Group: "admins"}, policy.Identity{Name: "A", Group: "users"}, policy.Identity{}},
		{"group without a claim", policy.TokenClaims{Names: []string{"A"}}, policy.Identity{Name: "A", Group: "admins"}, policy.Identity{}},
		{"any group", policy.TokenClaims{Names: []string{"A"}, Group: "*"}, policy.Identity{Name: "A", Group: "x"}, policy.Identity{Name: "A", Group: "x"}},
		{"clientId assigned", policy.TokenClaims{Names: []string{"A"}, ClientID: "c1"}, policy.Identity{Name: "A"}, policy.Identity{Name: "A", ClientID: "c1", Assigned: true}},
		{"clientId repeated signed", policy.TokenClaims{Names: []string{"A"}, ClientID: "c1"}, policy.Identity{Name: "A", ClientID: "s:c1.sig"}, policy.Identity{Name: "A", ClientID: "c1", Assigned: true}},
		{"clientId contradicted", policy.TokenClaims{Names: []string{"A"}, ClientID: "c1"}, policy.Identity{Name: "A", ClientID: "c2"}, policy.Identity{}},
		{"clientId offered without a claim", policy.TokenClaims{Names: []string{"A"}}, policy.Identity{Name: "A", ClientID: "victim"}, policy.Identity{}},
		{"any clientId", policy.TokenClaims{Names: []string{"A"}, ClientID: "*"}, policy.Identity{Name: "A", ClientID: "mine"}, policy.Identity{Name: "A", ClientID: "mine"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.claims.Grant(tc.want)
			if tc.got == (policy.Identity{}) {
				if !errors.Is(err, policy.ErrTokenForbidden) {
					t.Fatalf("granted %+v (%v)", got, err)
				}
				return
			}
			if err != nil || got != tc.got {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.got)
			}
		})
	}
}

// FuzzTokenVerify: no input panics, and nothing verifies but the tokens
// signed here: a mutation never forges a signature, changes an algorithm
// into one accepted, or decodes two ways.
func FuzzTokenVerify(f *testing.F) {
	v := verifier(f, policy.TokenConfig{Secret: testSecret, PublicKeys: pkix(f, testEdKey.Public())})
	good := claims(time.Hour, map[string]any{"names": []string{"Orders", "*"}, "group": "g", "clientId": "*"})
	signed := map[string]bool{
		sign(f, jwt.SigningMethodHS256, []byte(testSecret), good): true,
		sign(f, jwt.SigningMethodEdDSA, testEdKey, good):          true,
	}
	for s := range signed {
		f.Add(s)
		f.Add(s[:len(s)-2])
		f.Add(strings.Replace(s, ".", "..", 1))
	}
	f.Add(sign(f, jwt.SigningMethodHS256, []byte(testSecret), claims(-time.Hour, orders)))
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(raw, testNow)
		if err == nil && !signed[raw] {
			t.Fatalf("verified a token nobody signed: %q → %+v", raw, c)
		}
		if err != nil && !errors.Is(err, policy.ErrTokenInvalid) && !errors.Is(err, policy.ErrTokenExpired) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

// FuzzTokenGrant: whatever the claims and the request, a grant never
// contradicts the claims.
func FuzzTokenGrant(f *testing.F) {
	f.Add("A", "g", "c", "A", "", "")
	f.Add("*", "*", "*", "B", "G", "s:c.x")
	f.Add("A", "", "", "A", "g", "c")
	f.Fuzz(func(t *testing.T, name, group, clientID, wantName, wantGroup, wantClientID string) {
		c := policy.TokenClaims{Names: []string{name}, Group: group, ClientID: clientID}
		got, err := c.Grant(policy.Identity{Name: wantName, Group: wantGroup, ClientID: wantClientID})
		if err != nil {
			if !errors.Is(err, policy.ErrTokenForbidden) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if got.Name != wantName || (name != "*" && got.Name != name) {
			t.Fatalf("name %q granted by %q for %q", got.Name, name, wantName)
		}
		switch group {
		case "*":
			if got.Group != wantGroup {
				t.Fatalf("group %q, asked %q", got.Group, wantGroup)
			}
		default:
			if got.Group != group {
				t.Fatalf("group %q, claim %q", got.Group, group)
			}
		}
		switch clientID {
		case "*":
			if got.ClientID != wantClientID || got.Assigned {
				t.Fatalf("clientId %+v, offered %q", got, wantClientID)
			}
		case "":
			if got.ClientID != "" || wantClientID != "" {
				t.Fatalf("clientId %+v granted without a claim (offered %q)", got, wantClientID)
			}
		default:
			if got.ClientID != clientID || !got.Assigned {
				t.Fatalf("clientId %+v, claim %q", got, clientID)
			}
		}
	})
}

// BenchmarkTokenVerify is the cost of one connection's token check, per
// algorithm (go test -bench TokenVerify ./pkg/policy/).
func BenchmarkTokenVerify(b *testing.B) {
	rsaKey := rsaOnce()
	v := verifier(b, policy.TokenConfig{Secret: testSecret,
		PublicKeys: append(pkix(b, &rsaKey.PublicKey), pkix(b, testEdKey.Public())...)})
	c := claims(time.Hour, map[string]any{"names": []string{"Orders"}, "group": "admins", "clientId": "user-42"})
	for _, tc := range []struct {
		alg string
		raw string
	}{
		{"HS256", sign(b, jwt.SigningMethodHS256, []byte(testSecret), c)},
		{"RS256", sign(b, jwt.SigningMethodRS256, rsaKey, c)},
		{"EdDSA", sign(b, jwt.SigningMethodEdDSA, testEdKey, c)},
	} {
		b.Run(tc.alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tc.raw, testNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
