package app_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/pkg/policy"
)

// The connect options reach edge.Config: modes and scopes parsed, the key
// file read, the secret never logged.
func TestConnectOptions(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	keys := writeFile(t, "keys.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	secret := "a-connection-token-secret-of-32-bytes"
	yaml := writeFile(t, "herald.yaml", `
connect-auth:
  "*": token
  Public: open
  /tasks/*: backend
scopes: {Reports: local}
token-keys: `+keys+`
`)
	o, err := load(t, app.ModeEdge, []string{"-config", yaml, "-nats", "nats://127.0.0.1:4222", "-token-secret", secret,
		"-token-audience", "herald", "-auth-headers", "Authorization,X-Tenant"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.EdgeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConnectAuth.Mode("Orders") != policy.ModeToken || cfg.ConnectAuth.Mode("Public") != policy.ModeOpen ||
		cfg.ConnectAuth.Mode("/tasks/a") != policy.ModeBackend || cfg.Scopes.Scope("Reports") != policy.ScopeLocal {
		t.Fatalf("modes %s, scopes %s", cfg.ConnectAuth, cfg.Scopes)
	}
	v, err := policy.NewTokenVerifier(cfg.Token)
	if err != nil || strings.Join(v.Methods(), ",") != "HS256,EdDSA" || cfg.Token.Audience != "herald" || cfg.Token.Leeway != 5*time.Second {
		t.Fatalf("token config %+v: %v", cfg.Token, err)
	}
	if strings.Join(cfg.AuthHeaders, ",") != "Authorization,X-Tenant" || cfg.AuthTimeout != 2*time.Second || cfg.TokenCookie != "herald_token" {
		t.Fatalf("auth config %+v", cfg)
	}
	var log bytes.Buffer
	slog.New(slog.NewTextHandler(&log, nil)).Info("start", "options", o)
	if strings.Contains(log.String(), secret) || !strings.Contains(log.String(), "token-secret="+app.Redacted) {
		t.Fatalf("the token secret is not redacted:\n%s", log.String())
	}
}

func TestConnectOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		option string
		want   string
	}{
		{[]string{"-connect-auth", "*=token"}, "connect-auth", "needs a token secret or public keys"},
		{[]string{"-connect-auth", "*=secret"}, "connect-auth", "unknown connect mode"},
		{[]string{"-scopes", "A=nearby"}, "scopes", "unknown scope"},
		{[]string{"-token-secret", "short"}, "token-secret", "at least 32"},
		{[]string{"-token-keys", "/nonexistent/keys.pem"}, "token-keys", "no such file"},
		{[]string{"-token-keys", writeFile(t, "bad.pem", "not pem")}, "token-keys", "no PEM public key"},
		{[]string{"-auth-headers", "Bad Header"}, "auth-headers", "not a header name"},
		{[]string{"-auth-cache-size", "0"}, "auth-cache-size", "must be positive"},
	} {
		_, err := load(t, app.ModeEmbedded, tc.args, nil)
		var oe *app.OptionError
		if !errors.As(err, &oe) || oe.Option != tc.option || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error of -%s with %q", tc.args, err, tc.option, tc.want)
		}
	}
}
