package natsserver

import (
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// User is a credential the server accepts once Config.Users is set, and
// what a client holding it may do. Exactly one of Password (with Name),
// Token or Nkey authenticates it.
type User struct {
	// Name is the user name a client sends with Password; with Token or
	// Nkey it only labels the client in the server's logs and monitoring.
	// Required with Password; unique among the users with a password.
	Name string
	// Password authenticates Name: plain text, or a bcrypt hash
	// ("$2a$11$…", as `nats server passwd` prints), compared as
	// nats-server compares its own.
	Password string
	// Token authenticates a client that sends only a token (nats.Token):
	// plain text or a bcrypt hash. Unique among the users.
	Token string
	// Nkey is the user's public nkey ("U…", 56 characters); the client
	// proves it holds the seed by signing the server's nonce
	// (nats.Nkey, nats.NkeyOptionFromSeed). Unique among the users.
	Nkey string
	// Permissions limit what the user may publish and subscribe to. nil
	// allows everything.
	Permissions *Permissions
}

// Permissions are the subjects a user may publish to and subscribe to
// (wildcards allowed); everything else is denied. Subscribing includes
// queue subscriptions. A client receives the replies to its requests
// only on an inbox it may subscribe to.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// Responses lets the user answer the requests it receives: one
	// publish to each request's reply subject, within 2 minutes, wherever
	// that subject is (nats-server's allow_responses). Default false.
	Responses bool
}

// kind names the user's way of authenticating, for errors and logs.
func (u User) kind() string {
	switch {
	case u.Nkey != "":
		return "nkey"
	case u.Token != "":
		return "token"
	}
	return "password"
}

// validateUsers checks Config.Users: each authenticates one way, names,
// tokens and nkeys are unique, and every permission is a valid subject.
// Errors never repeat a password or token.
func validateUsers(users []User) error {
	bad := func(i int, format string, args ...any) error {
		return &ConfigError{Field: "Users[" + strconv.Itoa(i) + "]", Err: fmt.Errorf(format, args...)}
	}
	names, tokens, keys := map[string]int{}, map[string]int{}, map[string]int{}
	for i, u := range users {
		ways := 0
		for _, set := range []bool{u.Password != "", u.Token != "", u.Nkey != ""} {
			if set {
				ways++
			}
		}
		switch {
		case ways == 0:
			return bad(i, "needs a Password (with a Name), a Token or an Nkey")
		case ways > 1:
			return bad(i, "has more than one of Password, Token and Nkey")
		case strings.ContainsFunc(u.Name, isSpaceOrControl):
			return bad(i, "Name %q contains whitespace or a control character", u.Name)
		case u.Password != "" && u.Name == "":
			return bad(i, "a Password needs a Name")
		case strings.ContainsFunc(u.Password+u.Token, isSpaceOrControl):
			return bad(i, "the %s contains whitespace or a control character", u.kind())
		}
		if u.Password != "" {
			if j, dup := names[u.Name]; dup {
				return bad(i, "Name %q is also Users[%d]'s", u.Name, j)
			}
			names[u.Name] = i
		}
		if u.Token != "" {
			if j, dup := tokens[u.Token]; dup {
				return bad(i, "the token is also Users[%d]'s", j)
			}
			tokens[u.Token] = i
		}
		if u.Nkey != "" {
			if strings.HasPrefix(u.Nkey, "S") {
				return bad(i, "Nkey is a seed, which stays with the client: give its public key (U…)")
			}
			if !nkeys.IsValidPublicUserKey(u.Nkey) {
				return bad(i, "Nkey %q is not a public user nkey (U…, 56 characters)", u.Nkey)
			}
			if j, dup := keys[u.Nkey]; dup {
				return bad(i, "Nkey %q is also Users[%d]'s", u.Nkey, j)
			}
			keys[u.Nkey] = i
		}
		if p := u.Permissions; p != nil {
			for _, list := range [][]string{p.Publish, p.Subscribe} {
				for _, s := range list {
					if !server.IsValidSubject(s) {
						return bad(i, "permission %q is not a valid subject", s)
					}
				}
			}
		}
	}
	return nil
}

// authenticator checks clients against Config.Users (nats-server's custom
// authentication): user and password, token, or nkey, then gives the
// client its user's permissions. Users of nats-server's own configuration
// cannot mix tokens with users, nor give a token permissions.
type authenticator struct {
	byName map[string]*authUser // users with a password
	byNkey map[string]*authUser
	tokens []*authUser
}

type authUser struct {
	label  string // Name, or the kind and index: "token user 2"
	secret string // password or token
	user   *server.User
}

var _ server.Authentication = (*authenticator)(nil)

func newAuthenticator(users []User) *authenticator {
	a := &authenticator{byName: map[string]*authUser{}, byNkey: map[string]*authUser{}}
	for i, u := range users {
		label := u.Name
		if label == "" {
			label = u.kind() + " user " + strconv.Itoa(i)
			if u.Nkey != "" {
				label = u.Nkey
			}
		}
		au := &authUser{label: label, user: &server.User{Username: label, Permissions: serverPermissions(u.Permissions)}}
		switch {
		case u.Nkey != "":
			a.byNkey[u.Nkey] = au
		case u.Token != "":
			au.secret = u.Token
			a.tokens = append(a.tokens, au)
		default:
			au.secret = u.Password
			a.byName[u.Name] = au
		}
	}
	return a
}

// serverPermissions turns p into nats-server's permissions: allow lists
// for both directions (an empty list allows nothing).
func serverPermissions(p *Permissions) *server.Permissions {
	if p == nil {
		return nil
	}
	sp := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: append([]string{}, p.Publish...)},
		Subscribe: &server.SubjectPermission{Allow: append([]string{}, p.Subscribe...)},
	}
	if p.Responses {
		// nats-server's defaults for allow_responses: true.
		sp.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: 2 * time.Minute}
	}
	return sp
}

// Check authenticates a client by the first credential it sent: an nkey
// (with the nonce signed), a user name with its password, or a token.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	var u *authUser
	switch {
	case o.Nkey != "":
		u = a.byNkey[o.Nkey]
		if u == nil || !verifyNonce(o.Nkey, o.Sig, c.GetNonce()) {
			return false
		}
	case o.Username != "":
		u = a.byName[o.Username]
		if u == nil || !sameSecret(u.secret, o.Password) {
			return false
		}
	case o.Token != "":
		for _, t := range a.tokens { // every token is compared: the time does not say which matched
			if sameSecret(t.secret, o.Token) && u == nil {
				u = t
			}
		}
		if u == nil {
			return false
		}
	default:
		return false
	}
	c.RegisterUser(u.user)
	return true
}

// verifyNonce reports whether sig (base64, URL or standard alphabet) is
// the nkey's signature of nonce.
func verifyNonce(nkey, sig string, nonce []byte) bool {
	if len(nonce) == 0 {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	pub, err := nkeys.FromPublicKey(nkey)
	if err != nil {
		return false
	}
	return pub.Verify(nonce, raw) == nil
}

// bcryptPrefix is how nats-server recognises a bcrypt hash.
var bcryptPrefix = regexp.MustCompile(`^\$2[abxy]\$\d{2}\$.*`)

// sameSecret compares a client's password or token with the configured
// one: a bcrypt hash by bcrypt, plain text in constant time.
func sameSecret(configured, given string) bool {
	if bcryptPrefix.MatchString(configured) {
		return bcrypt.CompareHashAndPassword([]byte(configured), []byte(given)) == nil
	}
	return subtle.ConstantTimeCompare([]byte(configured), []byte(given)) == 1
}
