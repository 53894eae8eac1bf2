package policy

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Connection tokens: short-lived JWTs the app signs, that say which
// name(s), group and clientId a connection may take. The signature, the
// algorithm and the time claims are checked by github.com/golang-jwt/jwt;
// this file chooses what is accepted and what the claims mean.
//
// A token's claims (besides exp, nbf, iat, sub, aud, iss):
//
//	"herald": {
//	  "names":    ["Orders", "/chat"],  // required: the names it opens; "*" any name
//	  "group":    "admins",             // the group; absent or "": none; "*": the client's choice
//	  "clientId": "user-42"             // absent or "": the edge assigns one; "*": the client's choice
//	}
//
// exp is required: tokens are meant to live minutes, not months.

// Token errors. Callers match them with errors.Is; the message says why.
var (
	// ErrTokenInvalid: malformed, forged, signed with an algorithm or key
	// the edge does not accept, not yet valid, or for another audience or
	// issuer.
	ErrTokenInvalid = errors.New("policy: token invalid")
	// ErrTokenExpired: the token's exp has passed (beyond the leeway).
	ErrTokenExpired = errors.New("policy: token expired")
	// ErrTokenForbidden: a valid token that does not allow the requested
	// name, group or clientId.
	ErrTokenForbidden = errors.New("policy: token does not allow this connection")
)

// MaxTokenLen bounds a token in bytes; longer ones are refused before any
// decoding.
const MaxTokenLen = 8 << 10

// MinTokenSecretLen is the shortest HS256 secret accepted (256 bits, RFC 7518 §3.2).
const MinTokenSecretLen = 32

// MinRSABits is the smallest RSA public key accepted.
const MinRSABits = 2048

// AnyValue in a token's names, group or clientId leaves the choice to
// the client.
const AnyValue = "*"

// TokenConfig says which tokens a TokenVerifier accepts. The zero value
// accepts none.
type TokenConfig struct {
	// Secret verifies HS256 tokens; at least MinTokenSecretLen bytes.
	// Empty: no HS256.
	Secret string
	// PublicKeys is PEM text holding public keys (PKIX "PUBLIC KEY",
	// PKCS#1 "RSA PUBLIC KEY" or a "CERTIFICATE"): RSA keys of at least
	// MinRSABits verify RS256 tokens, Ed25519 keys EdDSA tokens. Several
	// keys may be given (key rotation): a token verifies with any of its
	// algorithm's keys. The edge never holds the app's private key.
	PublicKeys []byte
	// Audience, when set, must be one of the token's aud values.
	Audience string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Leeway is the clock skew allowed on exp, nbf and iat, and how long
	// past exp a live connection is kept. Default 0; the binaries use 5 s
	// (-token-leeway): a token minted a moment ago on a server whose clock
	// is ahead must not be refused as issued in the future.
	Leeway time.Duration
}

// Enabled reports whether any key is configured.
func (c TokenConfig) Enabled() bool { return c.Secret != "" || len(c.PublicKeys) > 0 }

// TokenVerifier checks connection tokens. It is immutable and safe for
// concurrent use.
type TokenVerifier struct {
	secret  []byte
	rsa     []*rsa.PublicKey
	ed      []ed25519.PublicKey
	methods []string
	opts    []jwt.ParserOption // all but the clock
	leeway  time.Duration
}

// NewTokenVerifier checks c and returns its verifier. It fails when no key
// is configured, a secret is too short, or PublicKeys holds anything but
// usable RSA and Ed25519 public keys.
func NewTokenVerifier(c TokenConfig) (*TokenVerifier, error) {
	if !c.Enabled() {
		return nil, errors.New("policy: no token key: set a secret (HS256) or public keys (RS256, EdDSA)")
	}
	if c.Leeway < 0 {
		return nil, errors.New("policy: token leeway must not be negative")
	}
	v := &TokenVerifier{leeway: c.Leeway}
	if c.Secret != "" {
		if len(c.Secret) < MinTokenSecretLen {
			return nil, fmt.Errorf("policy: token secret is %d bytes; HS256 needs at least %d", len(c.Secret), MinTokenSecretLen)
		}
		v.secret = []byte(c.Secret)
		v.methods = append(v.methods, jwt.SigningMethodHS256.Alg())
	}
	if len(c.PublicKeys) > 0 {
		keys, err := ParsePublicKeys(c.PublicKeys)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			switch k := k.(type) {
			case *rsa.PublicKey:
				v.rsa = append(v.rsa, k)
			case ed25519.PublicKey:
				v.ed = append(v.ed, k)
			}
		}
		if len(v.rsa) > 0 {
			v.methods = append(v.methods, jwt.SigningMethodRS256.Alg())
		}
		if len(v.ed) > 0 {
			v.methods = append(v.methods, jwt.SigningMethodEdDSA.Alg())
		}
	}
	v.opts = []jwt.ParserOption{jwt.WithValidMethods(v.methods), jwt.WithLeeway(c.Leeway),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithStrictDecoding()}
	if c.Audience != "" {
		v.opts = append(v.opts, jwt.WithAudience(c.Audience))
	}
	if c.Issuer != "" {
		v.opts = append(v.opts, jwt.WithIssuer(c.Issuer))
	}
	return v, nil
}

// ParsePublicKeys reads every PEM block of text as an RSA (at least
// MinRSABits) or Ed25519 public key. Anything else, a private key
// included, is an error naming the block.
func ParsePublicKeys(text []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for i := 1; ; i++ {
		var b *pem.Block
		b, text = pem.Decode(text)
		if b == nil {
			break
		}
		var k any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
				k = cert.PublicKey
			}
		default:
			return nil, fmt.Errorf("policy: PEM block %d is a %q; want public keys only (the edge never needs a private key)", i, b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("policy: PEM block %d: %v", i, err)
		}
		switch k := k.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < MinRSABits {
				return nil, fmt.Errorf("policy: PEM block %d: RSA key of %d bits; at least %d needed", i, k.N.BitLen(), MinRSABits)
			}
			keys = append(keys, k)
		case ed25519.PublicKey:
			keys = append(keys, k)
		default:
			return nil, fmt.Errorf("policy: PEM block %d: %T keys are not accepted (RSA for RS256, Ed25519 for EdDSA)", i, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("policy: no PEM public key found")
	}
	return keys, nil
}

// Methods returns the JWT algorithms the verifier accepts ("HS256",
// "RS256", "EdDSA").
func (v *TokenVerifier) Methods() []string { return slices.Clone(v.methods) }

// Leeway returns the clock skew allowed on exp, nbf and iat.
func (v *TokenVerifier) Leeway() time.Duration { return v.leeway }

// TokenClaims are the checked claims of a valid token.
type TokenClaims struct {
	// Subject is the sub claim (the app's user), for logs and backends.
	Subject string
	// Expires is the exp claim.
	Expires time.Time
	// Names are the connection names the token opens; AnyValue for any.
	Names []string
	// Group is the connection's group; "" none; AnyValue the client's choice.
	Group string
	// ClientID is the connection's clientId; "" assigned by the edge;
	// AnyValue the client's choice.
	ClientID string
}

// heraldClaims is the token's body as signed.
type heraldClaims struct {
	jwt.RegisteredClaims
	Herald *struct {
		Names    []string `json:"names"`
		Group    string   `json:"group"`
		ClientID string   `json:"clientId"`
	} `json:"herald"`
}

// Verify checks raw at time now: its length, algorithm, signature, exp
// (required), nbf, iat, and aud and iss when configured, then the shape of
// its herald claim. Errors match ErrTokenInvalid or ErrTokenExpired.
func (v *TokenVerifier) Verify(raw string, now time.Time) (*TokenClaims, error) {
	if len(raw) > MaxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrTokenInvalid, MaxTokenLen)
	}
	var c heraldClaims
	p := jwt.NewParser(append(v.opts, jwt.WithTimeFunc(func() time.Time { return now }))...)
	if _, err := p.ParseWithClaims(raw, &c, v.key); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, fmt.Errorf("%w: %s", ErrTokenExpired, tokenReason(err))
		}
		return nil, fmt.Errorf("%w: %s", ErrTokenInvalid, tokenReason(err))
	}
	if c.Herald == nil {
		return nil, fmt.Errorf("%w: no herald claim", ErrTokenInvalid)
	}
	if len(c.Herald.Names) == 0 {
		return nil, fmt.Errorf("%w: herald.names is empty", ErrTokenInvalid)
	}
	for _, n := range c.Herald.Names {
		if n == AnyValue {
			continue
		}
		if err := ValidateName(n); err != nil {
			return nil, fmt.Errorf("%w: herald.names: %v", ErrTokenInvalid, err)
		}
	}
	if g := c.Herald.Group; g != AnyValue {
		if err := ValidateGroup(g); err != nil {
			return nil, fmt.Errorf("%w: herald.group: %v", ErrTokenInvalid, err)
		}
	}
	if id := c.Herald.ClientID; id != AnyValue {
		if err := ValidateClientID(id); err != nil {
			return nil, fmt.Errorf("%w: herald.clientId: %v", ErrTokenInvalid, err)
		}
		if strings.HasPrefix(id, SignedPrefix) {
			return nil, fmt.Errorf("%w: herald.clientId is a signed id; give the raw id", ErrTokenInvalid)
		}
	}
	return &TokenClaims{
		Subject:  c.Subject,
		Expires:  c.ExpiresAt.Time,
		Names:    c.Herald.Names,
		Group:    c.Herald.Group,
		ClientID: c.Herald.ClientID,
	}, nil
}

// key picks the keys of the token's algorithm. The parser has already
// refused any algorithm not in v.methods, so an HS256 token never meets
// an RSA public key used as an HMAC secret (algorithm confusion).
func (v *TokenVerifier) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodHS256.Alg():
		return v.secret, nil
	case jwt.SigningMethodRS256.Alg():
		set := jwt.VerificationKeySet{}
		for _, k := range v.rsa {
			set.Keys = append(set.Keys, k)
		}
		return set, nil
	case jwt.SigningMethodEdDSA.Alg():
		set := jwt.VerificationKeySet{}
		for _, k := range v.ed {
			set.Keys = append(set.Keys, k)
		}
		return set, nil
	}
	return nil, fmt.Errorf("algorithm %q not accepted", t.Method.Alg())
}

// tokenReason is a short reason for a client, without the token.
func tokenReason(err error) string {
	for _, r := range []struct {
		err error
		why string
	}{
		{jwt.ErrTokenExpired, "token expired"},
		{jwt.ErrTokenNotValidYet, "token not valid yet (nbf)"},
		{jwt.ErrTokenUsedBeforeIssued, "token issued in the future (iat)"},
		{jwt.ErrTokenRequiredClaimMissing, "token has no exp"},
		{jwt.ErrTokenInvalidAudience, "token is for another audience"},
		{jwt.ErrTokenInvalidIssuer, "token is from another issuer"},
		{jwt.ErrTokenSignatureInvalid, "signature does not verify"},
		{jwt.ErrTokenUnverifiable, "algorithm not accepted"},
		{jwt.ErrTokenMalformed, "malformed token"},
	} {
		if errors.Is(err, r.err) {
			return r.why
		}
	}
	return "token does not verify"
}

// Identity is the name, group and clientId of a connection, as a client
// asks for it or as the app grants it.
type Identity struct {
	Name     string
	Group    string
	ClientID string
	// Assigned is set when ClientID was assigned by the app (a token claim
	// or a backend's answer) rather than offered by the client: it is a
	// raw id, which the edge signs when signing is on. An offered id
	// follows the signing rules.
	Assigned bool
}

// Grant decides the identity a connection asking for want takes under
// these claims. The claims decide: a request may leave out what they
// assign, never contradict it. Errors match ErrTokenForbidden.
//
//   - the name must be one of Names (or Names holds AnyValue);
//   - Group "" allows no group; AnyValue the requested one; any other
//     value is the group (a request naming another is refused; groups
//     compare case-insensitively);
//   - ClientID "" lets the edge assign an id (a request offering one is
//     refused: it could take over another client's id); AnyValue the
//     offered one; any other value is the id (an offered id must be it,
//     raw or signed).
func (c *TokenClaims) Grant(want Identity) (Identity, error) {
	forbid := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: %s", ErrTokenForbidden, fmt.Sprintf(format, args...))
	}
	if !slices.Contains(c.Names, want.Name) && !slices.Contains(c.Names, AnyValue) {
		return forbid("name %q is not among the token's names", want.Name)
	}
	got := Identity{Name: want.Name}
	switch c.Group {
	case AnyValue:
		got.Group = want.Group
	case "":
		if want.Group != "" {
			return forbid("the token allows no group")
		}
	default:
		if want.Group != "" && !strings.EqualFold(want.Group, c.Group) {
			return forbid("group %q is not the token's group", want.Group)
		}
		got.Group = c.Group
	}
	switch c.ClientID {
	case AnyValue:
		got.ClientID = want.ClientID
	case "":
		if want.ClientID != "" {
			return forbid("the token assigns no clientId: the edge assigns one")
		}
	default:
		if want.ClientID != "" && RawID(want.ClientID) != c.ClientID {
			return forbid("clientId is not the token's clientId")
		}
		got.ClientID, got.Assigned = c.ClientID, true
	}
	return got, nil
}
