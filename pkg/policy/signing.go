package policy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// SignedPrefix starts every signed clientId.
const SignedPrefix = "s:"

// Signer signs and verifies clientIds exactly as Pode does:
//
//	s:<id>.<base64-std-padded(HMAC-SHA256(key, id))>
//
// where key is the secret, or in strict mode "secret;UserAgent;RemoteIP".
// The zero Signer has signing off.
type Signer struct {
	// Secret is the HMAC secret. Empty means signing is off.
	Secret string
	// Strict binds signatures to the client's User-Agent and IP.
	Strict bool
}

// Enabled reports whether signing is on.
func (s Signer) Enabled() bool { return s.Secret != "" }

// Key returns the HMAC key string for a client: the secret, or in strict
// mode "secret;userAgent;remoteIP" (a missing User-Agent gives "secret;;ip").
func (s Signer) Key(userAgent, remoteIP string) string {
	if !s.Strict {
		return s.Secret
	}
	return s.Secret + ";" + userAgent + ";" + remoteIP
}

// Sign returns the signed form of id for a client.
func (s Signer) Sign(id, userAgent, remoteIP string) string {
	return Sign(id, s.Key(userAgent, remoteIP))
}

// Verify checks a signed value for a client and returns the raw id.
// With signing off nothing verifies: it fails with ErrSignedWhileSigningOff
// for an "s:" value and ErrNotSigned otherwise.
func (s Signer) Verify(signed, userAgent, remoteIP string) (string, error) {
	if !s.Enabled() {
		// The key would be "" (or ";UA;IP" in strict mode), which anyone can
		// compute, so any forged "s:" value would verify.
		if strings.HasPrefix(signed, SignedPrefix) {
			return "", ErrSignedWhileSigningOff
		}
		return "", ErrNotSigned
	}
	return Unsign(signed, s.Key(userAgent, remoteIP))
}

// Sign returns "s:<id>.<sig>" with sig = base64(HMAC-SHA256(key, id)).
func Sign(id, key string) string {
	return SignedPrefix + id + "." + signature(id, key)
}

func signature(id, key string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(id))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// SplitSigned splits "s:<id>.<sig>" at the last "." without checking the
// signature. It fails with ErrNotSigned or ErrMalformedSigned.
func SplitSigned(value string) (id, sig string, err error) {
	rest, ok := strings.CutPrefix(value, SignedPrefix)
	if !ok {
		return "", "", ErrNotSigned
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 {
		return "", "", ErrMalformedSigned
	}
	return rest[:i], rest[i+1:], nil
}

// Unsign verifies value against key in constant time and returns the raw id.
func Unsign(value, key string) (string, error) {
	id, sig, err := SplitSigned(value)
	if err != nil {
		return "", err
	}
	if !hmac.Equal([]byte(sig), []byte(signature(id, key))) {
		return "", ErrBadSignature
	}
	return id, nil
}

// RawID returns the id part of a signed value ("s:<id>.<sig>" → "<id>"), or
// value unchanged when it is not in signed form. It does not verify.
// Producers are trusted: subjects use the raw id.
func RawID(value string) string {
	if id, _, err := SplitSigned(value); err == nil {
		return id
	}
	return value
}

// NewClientID returns a random 16-byte id formatted as a lowercase
// 8-4-4-4-12 GUID string, as Pode does.
func NewClientID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}
