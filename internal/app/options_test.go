package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/pkg/edge"
	"github.com/herald-push/herald/pkg/policy"
)

// envOf returns a LookupEnv over a fixed map.
func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// writeFile writes content to a file in a fresh temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, mode app.Mode, args []string, env map[string]string) (*app.Options, error) {
	t.Helper()
	return app.Load(mode, args, envOf(env), io.Discard)
}

func TestDefaults(t *testing.T) {
	o, err := load(t, app.ModeEmbedded, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Listen":          "127.0.0.1:8080",
		"NATSListen":      "127.0.0.1:4222",
		"DataDir":         "herald-data",
		"SubjectPrefix":   "herald",
		"SSEPath":         edge.DefaultSSEPath,
		"PingInterval":    edge.DefaultPingInterval,
		"WriteTimeout":    edge.DefaultWriteTimeout,
		"QueueBytes":      edge.DefaultQueueBytes,
		"QueueMessages":   edge.DefaultQueueMessages,
		"MaxPublishBytes": edge.DefaultMaxPublishBytes,
		"ShutdownGrace":   10 * time.Second,
		"DrainWindow":     time.Duration(0),
		"LogLevel":        "info",
		"LogFormat":       "text",
		"WSListen":        "",
		"PprofListen":     "",
		"WSReadLimit":     edge.DefaultWSReadLimit,
	}
	v := reflect.ValueOf(o).Elem()
	for field, w := range want {
		if got := v.FieldByName(field).Interface(); got != w {
			t.Errorf("%s = %v, want %v", field, got, w)
		}
	}
	if o.Source("listen") != "default" {
		t.Errorf("Source(listen) = %q, want default", o.Source("listen"))
	}

	eo, err := load(t, app.ModeEdge, []string{"-nats", "nats://127.0.0.1:4222"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if eo.DrainWindow != 5*time.Second || eo.NATSName != "herald-edge" {
		t.Errorf("edge defaults: DrainWindow=%v NATSName=%q, want 5s and herald-edge", eo.DrainWindow, eo.NATSName)
	}
}

func TestPrecedence(t *testing.T) {
	yamlFile := writeFile(t, "herald.yaml", `
listen: 127.0.0.1:1001
publish-token: yaml-token-1
ping-interval: 11s
queue-bytes: 2MiB
signing-strict: true
signing-secret: yaml-secret
`)
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantListen string
		wantSource string
		wantToken  string
		wantPing   time.Duration
	}{
		{
			name:       "default",
			wantListen: "127.0.0.1:8080", wantSource: "default", wantPing: 30 * time.Second,
		},
		{
			name:       "yaml over default",
			args:       []string{"-config", yamlFile},
			wantListen: "127.0.0.1:1001", wantSource: "config " + yamlFile + " line 2",
			wantToken: "yaml-token-1", wantPing: 11 * time.Second,
		},
		{
			name:       "yaml named by HERALD_CONFIG",
			env:        map[string]string{"HERALD_CONFIG": yamlFile},
			wantListen: "127.0.0.1:1001", wantSource: "config " + yamlFile + " line 2",
			wantToken: "yaml-token-1", wantPing: 11 * time.Second,
		},
		{
			name:       "env over yaml",
			args:       []string{"-config", yamlFile},
			env:        map[string]string{"HERALD_LISTEN": "127.0.0.1:1002", "HERALD_PUBLISH_TOKEN": "env-token-1"},
			wantListen: "127.0.0.1:1002", wantSource: "env HERALD_LISTEN",
			wantToken: "env-token-1", wantPing: 11 * time.Second,
		},
		{
			name:       "empty env counts as unset",
			args:       []string{"-config", yamlFile},
			env:        map[string]string{"HERALD_LISTEN": ""},
			wantListen: "127.0.0.1:1001", wantSource: "config " + yamlFile + " line 2",
			wantToken: "yaml-token-1", wantPing: 11 * time.Second,
		},
		{
			name:       "flag over env over yaml",
			args:       []string{"-config", yamlFile, "-listen", "127.0.0.1:1003", "-ping-interval", "12s"},
			env:        map[string]string{"HERALD_LISTEN": "127.0.0.1:1002", "HERALD_PING_INTERVAL": "13s", "HERALD_PUBLISH_TOKEN": "env-token-1"},
			wantListen: "127.0.0.1:1003", wantSource: "flag -listen",
			wantToken: "env-token-1", wantPing: 12 * time.Second,
		},
		{
			name:       "flag over default",
			args:       []string{"-listen=127.0.0.1:1004", "-publish-token", "flag-token-1"},
			wantListen: "127.0.0.1:1004", wantSource: "flag -listen",
			wantToken: "flag-token-1", wantPing: 30 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := load(t, app.ModeEmbedded, tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if o.Listen != tt.wantListen {
				t.Errorf("Listen = %q, want %q", o.Listen, tt.wantListen)
			}
			if got := o.Source("listen"); got != tt.wantSource {
				t.Errorf("Source(listen) = %q, want %q", got, tt.wantSource)
			}
			if got := strings.Join(o.PublishTokens, ","); got != tt.wantToken {
				t.Errorf("PublishTokens = %q, want %q", got, tt.wantToken)
			}
			if o.PingInterval != tt.wantPing {
				t.Errorf("PingInterval = %v, want %v", o.PingInterval, tt.wantPing)
			}
		})
	}
}

func TestValueKinds(t *testing.T) {
	yamlFile := writeFile(t, "herald.yaml", `
publish-token: [token-aaaa, token-bbbb]
broadcast-levels:
  "*": group
  Orders: clientid
queue-bytes: 64KiB
max-publish-bytes: 1000
routes: nats-route://10.0.0.2:6222
cluster-name: herald
cluster-listen: 127.0.0.1:6222
server-name: n1
retry: 1500ms
allow-all-origins: true
tls-cert: ~
`)
	o, err := load(t, app.ModeEmbedded, []string{
		"-config", yamlFile,
		"-routes", "nats-route://10.0.0.3:6222, nats-route://10.0.0.4:6222",
		"-routes", "nats-route://10.0.0.5:6222",
		"-pode-web",
	}, map[string]string{"HERALD_QUEUE_MESSAGES": "7", "HERALD_SYNC_ALWAYS": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := o.PublishTokens, []string{"token-aaaa", "token-bbbb"}; !reflect.DeepEqual(got, want) {
		t.Errorf("PublishTokens = %q, want %q", got, want)
	}
	if got, want := o.Routes, []string{"nats-route://10.0.0.3:6222", "nats-route://10.0.0.4:6222", "nats-route://10.0.0.5:6222"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Routes = %q, want %q (repeated flags accumulate and replace the file's)", got, want)
	}
	if o.QueueBytes != 64<<10 || o.MaxPublishBytes != 1000 || o.QueueMessages != 7 {
		t.Errorf("QueueBytes=%d MaxPublishBytes=%d QueueMessages=%d", o.QueueBytes, o.MaxPublishBytes, o.QueueMessages)
	}
	if o.Retry != 1500*time.Millisecond || !o.AllowAllOrigins || !o.SyncAlways || !o.PodeWeb {
		t.Errorf("Retry=%v AllowAllOrigins=%v SyncAlways=%v PodeWeb=%v", o.Retry, o.AllowAllOrigins, o.SyncAlways, o.PodeWeb)
	}

	cfg, err := o.EdgeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Levels.Level("Orders") != policy.LevelClientID || cfg.Levels.Level("other") != policy.LevelGroup {
		t.Errorf("levels: Orders=%v other=%v", cfg.Levels.Level("Orders"), cfg.Levels.Level("other"))
	}
	if len(cfg.ExtraSSERoutes) != 1 || cfg.ExtraSSERoutes[0] != edge.PodeWebRoute {
		t.Errorf("ExtraSSERoutes = %v, want the Pode.Web route", cfg.ExtraSSERoutes)
	}
	if cfg.QueueMessages != 7 || cfg.Retry != 1500*time.Millisecond || !cfg.AllowAllOrigins {
		t.Errorf("edge config not filled: %+v", cfg)
	}
}

func TestYAMLErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		mode       app.Mode
		want       []string
	}{
		{"unknown key", "listen: :8080\npublish_token: abcdefghij\n", app.ModeEmbedded,
			[]string{`unknown key "publish_token"`, "line 2"}},
		{"key of the other binary", "nats: nats://a:4222\n", app.ModeEmbedded,
			[]string{`key "nats"`, "cmd/edge"}},
		{"key of the other binary (edge)", "data: /tmp/x\n", app.ModeEdge,
			[]string{`key "data"`, "cmd/embedded"}},
		{"repeated key", "listen: :1\nlisten: :2\n", app.ModeEmbedded,
			[]string{`key "listen" repeats line 1`}},
		{"list for a scalar", "listen: [a, b]\n", app.ModeEmbedded,
			[]string{"-listen", "not a list"}},
		{"bad duration", "ping-interval: 30\n", app.ModeEmbedded,
			[]string{"-ping-interval", `invalid duration "30"`, "line 1"}},
		{"not a mapping", "- a\n- b\n", app.ModeEmbedded,
			[]string{"want a mapping"}},
		{"syntax", "listen: [\n", app.ModeEmbedded,
			[]string{"yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, "c.yaml", tt.yaml)
			args := []string{"-config", f}
			if tt.mode == app.ModeEdge {
				args = append(args, "-nats", "nats://127.0.0.1:4222")
			}
			_, err := load(t, tt.mode, args, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := load(t, app.ModeEmbedded, []string{"-config", filepath.Join(t.TempDir(), "nope.yaml")}, nil)
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v, want not-exist", err)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		if _, err := load(t, app.ModeEmbedded, []string{"-config", writeFile(t, "e.yaml", "")}, nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestValidation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		mode       app.Mode
		args       []string
		env        map[string]string
		wantOption string
		wantText   string
	}{
		{"listen not host:port", app.ModeEmbedded, []string{"-listen", "8080"}, nil, "listen", "not host:port"},
		{"listen bad port", app.ModeEmbedded, []string{"-listen", ":99999"}, nil, "listen", "0 to 65535"},
		{"short token", app.ModeEmbedded, []string{"-publish-token", "abcdefghij,short"}, nil, "publish-token", "token 2 of 2 is shorter than 8"},
		{"strict without secret", app.ModeEmbedded, []string{"-signing-strict"}, nil, "signing-strict", "needs -signing-secret"},
		{"bad level", app.ModeEmbedded, []string{"-broadcast-levels", "Orders=everyone"}, nil, "broadcast-levels", "everyone"},
		{"bad level pair", app.ModeEmbedded, []string{"-broadcast-levels", "Orders"}, nil, "broadcast-levels", "want name=level"},
		{"bad prefix", app.ModeEmbedded, []string{"-subject-prefix", "a.*"}, nil, "subject-prefix", "invalid subject prefix"},
		{"sse path without name", app.ModeEmbedded, []string{"-sse-path", "/events"}, nil, "sse-path", "must contain {name}"},
		{"sse path with method", app.ModeEmbedded, []string{"-sse-path", "GET /sse/{name}"}, nil, "sse-path", "must start with /"},
		{"sse path invalid pattern", app.ModeEmbedded, []string{"-sse-path", "/sse/{name}/{name}"}, nil, "sse-path", "not a valid route pattern"},
		{"negative retry", app.ModeEmbedded, []string{"-retry", "-1s"}, nil, "retry", "must not be negative"},
		{"zero ping", app.ModeEmbedded, []string{"-ping-interval", "0s"}, nil, "ping-interval", "must be positive"},
		{"zero queue bytes from env", app.ModeEmbedded, nil, map[string]string{"HERALD_QUEUE_BYTES": "0"}, "queue-bytes", "from env HERALD_QUEUE_BYTES"},
		{"bad size", app.ModeEmbedded, nil, map[string]string{"HERALD_MAX_PUBLISH_BYTES": "lots"}, "max-publish-bytes", `invalid size "lots"`},
		{"bad bool env", app.ModeEmbedded, nil, map[string]string{"HERALD_H2C": "maybe"}, "h2c", "invalid boolean"},
		{"cert without key", app.ModeEmbedded, []string{"-tls-cert", file}, nil, "tls-cert", "needs -tls-key"},
		{"cert missing", app.ModeEmbedded, []string{"-tls-cert", filepath.Join(dir, "no.pem"), "-tls-key", file}, nil, "tls-cert", "no such file"},
		{"h2c with tls", app.ModeEmbedded, []string{"-tls-cert", file, "-tls-key", file, "-h2c"}, nil, "h2c", "only without TLS"},
		{"log level", app.ModeEmbedded, []string{"-log-level", "loud"}, nil, "log-level", `unknown level "loud"`},
		{"log format", app.ModeEmbedded, []string{"-log-format", "xml"}, nil, "log-format", `unknown format "xml"`},
		{"drain window too long", app.ModeEmbedded, []string{"-drain-window", "10s"}, nil, "drain-window", "less than -shutdown-grace"},
		{"nats-listen", app.ModeEmbedded, []string{"-nats-listen", "nowhere"}, nil, "nats-listen", "not host:port"},
		{"empty data", app.ModeEmbedded, []string{"-data", ""}, nil, "data", "must not be empty"},
		{"routes without cluster-listen", app.ModeEmbedded, []string{"-routes", "nats-route://10.0.0.2:6222"}, nil, "cluster-listen", "required when"},
		{"cluster without name", app.ModeEmbedded, []string{"-cluster-listen", ":6222"}, nil, "cluster-name", "required to cluster"},
		{"cluster without server name", app.ModeEmbedded, []string{"-cluster-listen", ":6222", "-cluster-name", "c"}, nil, "server-name", "required to cluster"},
		{"route not a URL", app.ModeEmbedded, []string{"-cluster-listen", ":6222", "-cluster-name", "c", "-server-name", "n", "-routes", "10.0.0.2:6222"}, nil, "routes", "want a URL"},
		{"route scheme", app.ModeEmbedded, []string{"-cluster-listen", ":6222", "-cluster-name", "c", "-server-name", "n", "-routes", "http://10.0.0.2:6222"}, nil, "routes", "scheme"},
		{"ws listen not host:port", app.ModeEmbedded, []string{"-ws-listen", "8091"}, nil, "ws-listen", "not host:port"},
		{"ws listen is listen", app.ModeEmbedded, []string{"-listen", ":8080", "-ws-listen", ":8080"}, nil, "ws-listen", "must differ from -listen"},
		{"pprof listen is listen", app.ModeEdge, []string{"-nats", "nats://n:4222", "-listen", ":8080", "-pprof-listen", ":8080"}, nil, "pprof-listen", "must differ from -listen"},
		{"pprof listen not host:port", app.ModeEmbedded, []string{"-pprof-listen", "6060"}, nil, "pprof-listen", "not host:port"},
		{"ws origin pattern", app.ModeEmbedded, []string{"-ws-origins", "ok.example,[bad"}, nil, "ws-origins", "syntax error in pattern"},
		{"ws read limit", app.ModeEmbedded, nil, map[string]string{"HERALD_WS_READ_LIMIT": "0"}, "ws-read-limit", "must be positive"},
		{"ws echo name", app.ModeEdge, []string{"-nats", "a:4222", "-ws-echo", "/chat,bad\tname"}, nil, "ws-echo", "control character"},
		{"edge needs nats", app.ModeEdge, nil, nil, "nats", "required"},
		{"edge bad nats url", app.ModeEdge, []string{"-nats", "nats://a:4222,nats://:x"}, nil, "nats", "not a valid URL"},
		{"edge creds and token", app.ModeEdge, []string{"-nats", "a:4222", "-nats-creds", file, "-nats-token", "t"}, nil, "nats-creds", "use one of"},
		{"edge creds missing", app.ModeEdge, []string{"-nats", "a:4222", "-nats-creds", filepath.Join(dir, "x.creds")}, nil, "nats-creds", "no such file"},
		{"edge user without password", app.ModeEdge, []string{"-nats", "a:4222", "-nats-user", "u"}, nil, "nats-user", "needs -nats-password"},
		{"edge password without user", app.ModeEdge, []string{"-nats", "a:4222", "-nats-password", "p"}, nil, "nats-password", "needs -nats-user"},
		{"edge user and token", app.ModeEdge, []string{"-nats", "a:4222", "-nats-user", "u", "-nats-password", "p", "-nats-token", "t"}, nil, "nats-user", "use one of"},
		{"edge tls cert without key", app.ModeEdge, []string{"-nats", "a:4222", "-nats-tls-cert", file}, nil, "nats-tls-cert", "needs -nats-tls-key"},
		{"edge tls ca missing", app.ModeEdge, []string{"-nats", "a:4222", "-nats-tls-ca", filepath.Join(dir, "ca.pem")}, nil, "nats-tls-ca", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.mode, tt.args, tt.env)
			var oe *app.OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("err = %v (%T), want *app.OptionError", err, err)
			}
			if oe.Option != tt.wantOption {
				t.Errorf("Option = %q, want %q (err %q)", oe.Option, tt.wantOption, err)
			}
			if !strings.Contains(err.Error(), "-"+tt.wantOption) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not name -%s or contain %q", err, tt.wantOption, tt.wantText)
			}
		})
	}
}

func TestFlagErrors(t *testing.T) {
	var out bytes.Buffer
	if _, err := app.Load(app.ModeEmbedded, []string{"-h"}, nil, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: err = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(out.String(), "HERALD_PUBLISH_TOKEN") || !strings.Contains(out.String(), "-nats-listen") {
		t.Errorf("help does not list options with their environment variables:\n%s", out.String())
	}
	if strings.Contains(out.String(), "-nats-creds") {
		t.Errorf("embedded help lists an edge option:\n%s", out.String())
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-nats", "nats://a:4222"}, "not defined: -nats"},
		{[]string{"-ping-interval", "soon"}, `invalid duration "soon"`},
		{[]string{"stray"}, `unexpected argument "stray"`},
	}
	for _, tt := range tests {
		_, err := app.Load(app.ModeEmbedded, tt.args, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%q) err = %v, want it to contain %q", tt.args, err, tt.want)
		}
	}
}

func TestRedaction(t *testing.T) {
	secrets := []string{"sekrit-signing-key", "publish-token-one", "publish-token-two", "nats-pass-word", "url-pass-word", "url-token-xyz"}
	o, err := load(t, app.ModeEdge, []string{
		"-signing-secret", "sekrit-signing-key",
		"-publish-token", "publish-token-one,publish-token-two",
		"-nats", "nats://alice:url-pass-word@a:4222,nats://url-token-xyz@b:4222,nats://c:4222",
		"-nats-user", "alice",
	}, map[string]string{"HERALD_NATS_PASSWORD": "nats-pass-word"})
	if err != nil {
		t.Fatal(err)
	}
	var jsonLog, textLog bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("start", "options", o)
	slog.New(slog.NewTextHandler(&textLog, nil)).Info("start", "options", o)
	outputs := map[string]string{
		"json log": jsonLog.String(),
		"text log": textLog.String(),
		"%v":       fmt.Sprintf("%v", o),
		"%+v":      fmt.Sprintf("%+v", o),
		"%#v":      fmt.Sprintf("%#v", o),
		"%s":       fmt.Sprint(o),
	}
	for what, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s contains secret %q:\n%s", what, s, out)
			}
		}
		if !strings.Contains(out, app.Redacted) {
			t.Errorf("%s shows no redaction marker:\n%s", what, out)
		}
	}

	// The summary still says what is configured.
	var rec struct{ Options map[string]any }
	if err := json.Unmarshal(jsonLog.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	got := rec.Options
	wants := map[string]any{
		"signing-secret": app.Redacted,
		"publish-token":  app.Redacted + " x 2",
		"nats-password":  app.Redacted,
		"nats-token":     "",
		"nats-user":      "alice",
		"nats":           "nats://" + app.Redacted + "@a:4222,nats://" + app.Redacted + "@b:4222,nats://c:4222",
		"listen":         "127.0.0.1:8080",
	}
	for k, w := range wants {
		if got[k] != w {
			t.Errorf("summary %s = %v, want %v", k, got[k], w)
		}
	}
	if _, ok := got["data"]; ok {
		t.Errorf("edge summary lists the embedded option data")
	}
}

func TestUnknownEnv(t *testing.T) {
	got := app.UnknownEnv([]string{"HERALD_LISTEN=:1", "HERALD_LISTNE=:2", "HERALD_CONFIG=x", "HOME=/root", "HERALD_NATS=x", "HERALD_PUBLISH_TOKENS=y"})
	want := []string{"HERALD_LISTNE", "HERALD_PUBLISH_TOKENS"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("UnknownEnv = %q, want %q", got, want)
	}
}

func TestNewToken(t *testing.T) {
	a, b := app.NewToken(), app.NewToken()
	if len(a) != 32 || strings.Trim(a, "0123456789abcdef") != "" || a == b {
		t.Errorf("NewToken = %q, %q: want two different 32-hex-char tokens", a, b)
	}
}

func TestWSOptions(t *testing.T) {
	yamlFile := writeFile(t, "ws.yaml", `
ws-listen: 127.0.0.1:8091
ws-origins: [app.example.com, "https://*.partner.example"]
ws-read-limit: 128KiB
`)
	o, err := load(t, app.ModeEdge, []string{"-nats", "a:4222", "-config", yamlFile, "-ws-echo", "/,/chat"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.EdgeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if o.WSListen != "127.0.0.1:8091" || cfg.WSReadLimit != 128<<10 ||
		!reflect.DeepEqual(cfg.WSOriginPatterns, []string{"app.example.com", "https://*.partner.example"}) ||
		!reflect.DeepEqual(cfg.WSEchoNames, []string{"/", "/chat"}) {
		t.Errorf("ws options %q %d %q %q", o.WSListen, cfg.WSReadLimit, cfg.WSOriginPatterns, cfg.WSEchoNames)
	}
}

// TestOptionErrorSources: a bad value is reported with the option the user
// typed and where it came from, whether the option's own check or
// edge.Config.Validate refuses it, from a flag, the environment or the
// YAML file.
func TestOptionErrorSources(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		yaml       string
		wantOption string
		wantSource string // "config" stands for "config <file> line N"
		wantText   string
	}{
		// The option's own check.
		{name: "own check, flag", args: []string{"-shutdown-grace", "0s"},
			wantOption: "shutdown-grace", wantSource: "flag -shutdown-grace", wantText: "must be positive"},
		{name: "own check, env", env: map[string]string{"HERALD_LOG_FORMAT": "xml"},
			wantOption: "log-format", wantSource: "env HERALD_LOG_FORMAT", wantText: "unknown format"},
		{name: "own check, yaml", yaml: "listen: 127.0.0.1:1\nws-listen: nowhere\n",
			wantOption: "ws-listen", wantSource: "config", wantText: "not host:port"},
		{name: "zero for a default-on-zero field, yaml", yaml: "max-replays: 0\n",
			wantOption: "max-replays", wantSource: "config", wantText: "must be positive"},
		// edge.Config.Validate.
		{name: "edge, flag", args: []string{"-queue-messages", "-5"},
			wantOption: "queue-messages", wantSource: "flag -queue-messages", wantText: "must be positive"},
		{name: "edge, env", env: map[string]string{"HERALD_HISTORY_MAX_AGE": "-1m"},
			wantOption: "history-max-age", wantSource: "env HERALD_HISTORY_MAX_AGE", wantText: "MaxAge must not be negative"},
		{name: "edge, yaml", yaml: "history-replicas: 7\n",
			wantOption: "history-replicas", wantSource: "config", wantText: "Replicas must be 1 to 5"},
		{name: "edge token with a space", args: []string{"-publish-token", "abcdefghij,abcd efghij"},
			wantOption: "publish-token", wantSource: "flag -publish-token", wantText: "token 2 of 2 contains a space"},
		{name: "edge id with a space", env: map[string]string{"HERALD_EDGE_ID": "edge one"},
			wantOption: "edge-id", wantSource: "env HERALD_EDGE_ID", wantText: "space or control character"},
		{name: "edge rate not a number", args: []string{"-ws-inbound-rate", "NaN"},
			wantOption: "ws-inbound-rate", wantSource: "flag -ws-inbound-rate", wantText: "positive number"},
		{name: "edge history stream", yaml: "history-stream: herald.events\n",
			wantOption: "history-stream", wantSource: "config", wantText: "must not contain"},
		{name: "edge sse route without name", yaml: "sse-routes: [/events]\n",
			wantOption: "sse-routes", wantSource: "config", wantText: "needs {name}"},
		{name: "edge sse route conflict", args: []string{"-sse-routes", "/a/{name},/a/{x}=X"},
			wantOption: "sse-routes", wantSource: "flag -sse-routes", wantText: "conflicts with"},
		{name: "edge sse path conflicts with the WebSocket route", args: []string{"-sse-path", "/{name}/events"},
			wantOption: "sse-path", wantSource: "flag -sse-path", wantText: "conflicts with pattern \"/ws/{path...}\""},
		{name: "edge pode-web route taken", args: []string{"-pode-web", "-sse-routes", "/pode.web-dynamic/pages/{group}/sse-open=Mine"},
			wantOption: "pode-web", wantSource: "flag -pode-web", wantText: "conflicts with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			source := tt.wantSource
			if tt.yaml != "" {
				f := writeFile(t, "herald.yaml", tt.yaml)
				args = append([]string{"-config", f}, args...)
				source = strings.Replace(source, "config", "config "+f+" line ", 1)
			}
			_, err := load(t, app.ModeEmbedded, args, tt.env)
			var oe *app.OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("err = %v (%T), want *app.OptionError", err, err)
			}
			if oe.Option != tt.wantOption || !strings.HasPrefix(oe.Source, source) {
				t.Errorf("Option %q from %q, want %q from %q… (err %q)", oe.Option, oe.Source, tt.wantOption, source, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "-"+tt.wantOption+": ") || !strings.Contains(msg, tt.wantText) || !strings.Contains(msg, "(from "+oe.Source+")") {
				t.Errorf("error %q does not start with -%s:, contain %q and end with its source", msg, tt.wantOption, tt.wantText)
			}
		})
	}
}

// TestEdgeTunables: the options that fill edge.Config reach it.
func TestEdgeTunables(t *testing.T) {
	yamlFile := writeFile(t, "herald.yaml", `
max-replays: 8
log-interval: 1m
sse-routes:
  /pages/{group}/events: Pages
  /feeds/{name}: ~
history-stream: MY_HISTORY
history-memory: true
`)
	o, err := load(t, app.ModeEdge, []string{"-nats", "a:4222", "-config", yamlFile, "-no-hijack", "-ws-inbound-burst", "9"},
		map[string]string{"HERALD_EDGE_ID": "edge-a", "HERALD_WS_INBOUND_RATE": "2.5"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.EdgeConfig()
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes := []edge.SSERoute{{Pattern: "/pages/{group}/events", Name: "Pages"}, {Pattern: "/feeds/{name}"}}
	if cfg.MaxReplays != 8 || cfg.LogInterval != time.Minute || cfg.EdgeID != "edge-a" || !cfg.NoHijack ||
		cfg.WSInboundRate != 2.5 || cfg.WSInboundBurst != 9 || !reflect.DeepEqual(cfg.ExtraSSERoutes, wantRoutes) {
		t.Errorf("edge config: %+v", cfg)
	}
	if cfg.History == nil || cfg.History.Stream != "MY_HISTORY" || !cfg.History.Memory {
		t.Errorf("history config: %+v", cfg.History)
	}

	d, err := load(t, app.ModeEmbedded, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.MaxReplays != edge.DefaultMaxReplays || d.LogInterval != edge.DefaultLogInterval || d.EdgeID != "" ||
		d.WSInboundRate != edge.DefaultWSInboundRate || d.WSInboundBurst != edge.DefaultWSInboundBurst {
		t.Errorf("defaults: %+v", d)
	}
}
