package natsserver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/herald-push/herald/pkg/natsserver"
)

// newUserKey returns a user nkey pair: the seed a client keeps, the
// public key the server is given.
func newUserKey(t *testing.T) (seed []byte, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = kp.Seed()
	public, _ = kp.PublicKey()
	return seed, public
}

// nkeyOption connects with the user nkey whose seed is seed.
func nkeyOption(t *testing.T, seed []byte) nats.Option {
	t.Helper()
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) })
}

// A server with Users admits exactly their credentials — a user name with
// its password (plain or bcrypt), a token, an nkey that signs the nonce —
// and refuses everyone else.
func TestUsersAuthenticate(t *testing.T) {
	seed, public := newUserKey(t)
	otherSeed, _ := newUserKey(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("hashed-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.Start(natsserver.Config{
		Port:      natsserver.RandomPort,
		JetStream: true,
		DataDir:   t.TempDir(),
		Users: []natsserver.User{
			{Name: "alice", Password: "alice-secret"},
			{Name: "bob", Password: string(hash)},
			{Name: "tokens", Token: "token-one"},
			{Token: "token-two"},
			{Nkey: public},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	for _, tc := range []struct {
		name string
		opts []nats.Option
		ok   bool
	}{
		{"password", []nats.Option{nats.UserInfo("alice", "alice-secret")}, true},
		{"bcrypt password", []nats.Option{nats.UserInfo("bob", "hashed-secret")}, true},
		{"token", []nats.Option{nats.Token("token-one")}, true},
		{"second token", []nats.Option{nats.Token("token-two")}, true},
		{"nkey", []nats.Option{nkeyOption(t, seed)}, true},
		{"no credentials", nil, false},
		{"wrong password", []nats.Option{nats.UserInfo("alice", "alice-secreT")}, false},
		{"another user's password", []nats.Option{nats.UserInfo("alice", "hashed-secret")}, false},
		{"the bcrypt hash itself", []nats.Option{nats.UserInfo("bob", string(hash))}, false},
		{"unknown user", []nats.Option{nats.UserInfo("mallory", "alice-secret")}, false},
		{"wrong token", []nats.Option{nats.Token("token-three")}, false},
		{"a password as a token", []nats.Option{nats.Token("alice-secret")}, false},
		{"unknown nkey", []nats.Option{nkeyOption(t, otherSeed)}, false},
		{"known nkey, signed by another", []nats.Option{nats.Nkey(public, func(nonce []byte) ([]byte, error) {
			kp, _ := nkeys.FromSeed(otherSeed)
			return kp.Sign(nonce)
		})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(srv.ClientURL(), append(tc.opts, nats.Timeout(5*time.Second))...)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				defer nc.Close()
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("refused with %v, want an authorization error", err)
			}
		})
	}

	// An authenticated client without permissions uses JetStream.
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("alice", "alice-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "s.x", []byte("x")); err != nil {
		t.Fatalf("acked publish: %v", err)
	}
}

// A user's Permissions allow exactly their subjects: a publish elsewhere
// never reaches a subscriber and a subscription elsewhere is refused, each
// reported to the client as a permissions violation.
func TestUserPermissions(t *testing.T) {
	srv, err := natsserver.Start(natsserver.Config{
		Port: natsserver.RandomPort,
		Users: []natsserver.User{
			{Name: "limited", Password: "limited-secret", Permissions: &natsserver.Permissions{
				Publish:   []string{"allowed.>"},
				Subscribe: []string{"mine.*"},
			}},
			{Name: "admin", Password: "admin-secret"},
			{Name: "responder", Password: "responder-secret", Permissions: &natsserver.Permissions{
				Subscribe: []string{"svc"}, Responses: true,
			}},
			{Name: "mute", Password: "mute-secret", Permissions: &natsserver.Permissions{
				Subscribe: []string{"svc"},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	violations := make(chan error, 16)
	limited, err := nats.Connect(srv.ClientURL(), nats.UserInfo("limited", "limited-secret"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer limited.Close()
	admin, err := nats.Connect(srv.ClientURL(), nats.UserInfo("admin", "admin-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	watch, err := admin.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}

	violation := func(what string) {
		t.Helper()
		select {
		case err := <-violations:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: error %v, want a permissions violation", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no permissions violation reported", what)
		}
	}

	if err := limited.Publish("denied.x", []byte("no")); err != nil {
		t.Fatal(err)
	}
	violation("publish denied.x")
	if err := limited.Publish("allowed.x", []byte("yes")); err != nil {
		t.Fatal(err)
	}
	if m, err := watch.NextMsg(5 * time.Second); err != nil || m.Subject != "allowed.x" {
		t.Fatalf("first message the admin sees: %v %v, want allowed.x (denied.x never delivered)", m, err)
	}

	if _, err := limited.SubscribeSync("other.x"); err != nil {
		t.Fatal(err)
	}
	violation("subscribe other.x")
	sub, err := limited.SubscribeSync("mine.x")
	if err != nil {
		t.Fatal(err)
	}
	if err := limited.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Publish("mine.x", []byte("for you")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "for you" {
		t.Fatalf("allowed subscription: %v %v", m, err)
	}

	// Responses: a user that may publish nowhere answers a request it
	// received, once; without Responses its answer goes nowhere.
	for _, tc := range []struct {
		user    string
		answers bool
	}{{"responder", true}, {"mute", false}} {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(tc.user, tc.user+"-secret"))
		if err != nil {
			t.Fatal(err)
		}
		svc, err := nc.Subscribe("svc", func(m *nats.Msg) { _ = m.Respond([]byte("answer")) })
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		m, err := admin.Request("svc", []byte("question"), time.Second)
		if tc.answers && (err != nil || string(m.Data) != "answer") {
			t.Errorf("%s: request answered %v, %v; want its answer", tc.user, m, err)
		}
		if !tc.answers && err == nil {
			t.Errorf("%s: answered a request without Responses", tc.user)
		}
		_ = svc.Unsubscribe()
		nc.Close()
	}
}

func TestUsersValidate(t *testing.T) {
	_, public := newUserKey(t)
	seed, _ := newUserKey(t)
	perms := func(pub ...string) *natsserver.Permissions { return &natsserver.Permissions{Publish: pub} }
	for _, tc := range []struct {
		name  string
		users []natsserver.User
		field string
		want  string
	}{
		{"no credential", []natsserver.User{{Name: "a"}}, "Users[0]", "needs a Password"},
		{"two credentials", []natsserver.User{{Name: "a", Password: "secret-pw", Token: "secret-tok"}}, "Users[0]", "more than one"},
		{"password without a name", []natsserver.User{{Password: "secret-pw"}}, "Users[0]", "needs a Name"},
		{"duplicate name", []natsserver.User{{Name: "a", Password: "secret-pw"}, {Name: "a", Password: "secret-other"}}, "Users[1]", "Users[0]"},
		{"duplicate token", []natsserver.User{{Token: "secret-tok"}, {Token: "secret-tok"}}, "Users[1]", "Users[0]"},
		{"duplicate nkey", []natsserver.User{{Nkey: public}, {Nkey: public}}, "Users[1]", "Users[0]"},
		{"a seed for an nkey", []natsserver.User{{Nkey: string(seed)}}, "Users[0]", "seed"},
		{"not an nkey", []natsserver.User{{Nkey: "UABC"}}, "Users[0]", "public user nkey"},
		{"space in a name", []natsserver.User{{Name: "a b", Password: "secret-pw"}}, "Users[0]", "whitespace"},
		{"space in a password", []natsserver.User{{Name: "a", Password: "secret pw"}}, "Users[0]", "whitespace"},
		{"bad subject", []natsserver.User{{Token: "secret-tok", Permissions: perms("a..b")}}, "Users[0]", "not a valid subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := natsserver.Config{Users: tc.users}.Validate()
			var ce *natsserver.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want a *ConfigError on %s saying %q", err, tc.field, tc.want)
			}
			for _, secret := range []string{"secret-pw", "secret-tok", "secret-other", "secret pw", string(seed)} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q shows a secret", err)
				}
			}
		})
	}
	ok := natsserver.Config{Users: []natsserver.User{
		{Name: "a", Password: "pw"}, {Token: "tok", Permissions: perms("x.>")}, {Name: "label", Nkey: public},
	}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid users: %v", err)
	}
}
