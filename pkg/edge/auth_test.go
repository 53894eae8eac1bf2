package edge

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

const tokenSecret = "an-hs256-secret-of-32-bytes-or-more"

// mint signs an HS256 connection token valid for ttl.
func mint(t testing.TB, secret string, ttl time.Duration, herald map[string]any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "user-42", "exp": time.Now().Add(ttl).Unix(), "herald": herald,
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func modes(t testing.TB, spec string) policy.ConnectModes {
	t.Helper()
	m, err := policy.ParseConnectModes(spec)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func scopes(t testing.TB, spec string) policy.Scopes {
	t.Helper()
	s, err := policy.ParseScopes(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sseStatus opens an SSE request and returns its status, headers and
// (for a refusal) body.
func sseStatus(t *testing.T, url string, header http.Header) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "text/event-stream" && resp.Header.Get("Retry-After") == "" {
		return resp.StatusCode, resp.Header, "" // a stream: not read to its end
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

type podeOpen struct {
	ClientID string `json:"clientId"`
	Group    string `json:"group"`
	Name     string `json:"name"`
}

func opened(t *testing.T, c *client) podeOpen {
	t.Helper()
	var o podeOpen
	ev := c.waitFor(func(ev sseclient.Event) bool { return ev.Type == "pode.open" }, "pode.open")
	if err := json.Unmarshal([]byte(ev.Data), &o); err != nil {
		t.Fatal(err)
	}
	return o
}

// Token mode on SSE: each refusal has its status, reason and metric; the
// identity comes from the claims, wherever the token comes from.
func TestTokenModeSSE(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{
		ConnectAuth: modes(t, "*=token,Public=open"),
		Token:       policy.TokenConfig{Secret: tokenSecret},
	})
	good := map[string]any{"names": []string{"Orders"}, "group": "admins", "clientId": "alice-1"}
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
		status int
		code   string
		reason string
	}{
		{"no token", "/sse/Orders", nil, 401, refuseAuthMissing, "token is required"},
		{"forged", "/sse/Orders?token=" + mint(t, strings.Repeat("x", 40), time.Minute, good), nil, 403, refuseAuthInvalid, "signature does not verify"},
		{"expired", "/sse/Orders?token=" + mint(t, tokenSecret, -time.Minute, good), nil, 403, refuseAuthExpired, "token expired"},
		{"garbage", "/sse/Orders?token=abc", nil, 403, refuseAuthInvalid, "malformed"},
		{"another name", "/sse/Invoices?token=" + mint(t, tokenSecret, time.Minute, good), nil, 403, refuseAuthForbidden, `name "Invoices"`},
		{"another group", "/sse/Orders?group=users&token=" + mint(t, tokenSecret, time.Minute, good), nil, 403, refuseAuthForbidden, "group"},
		{"another clientId", "/sse/Orders?clientId=bob&token=" + mint(t, tokenSecret, time.Minute, good), nil, 403, refuseAuthForbidden, "clientId"},
		{"oversized", "/sse/Orders", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", policy.MaxTokenLen+1)}}, 403, refuseAuthInvalid, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counter(t, e.reg, "herald_edge_rejections_total", "reason", tc.code)
			status, h, body := sseStatus(t, e.srv.URL+tc.path, tc.header)
			if status != tc.status || !strings.Contains(body, tc.reason) {
				t.Fatalf("%d %q, want %d with %q", status, body, tc.status, tc.reason)
			}
			if status == 401 && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if got := counter(t, e.reg, "herald_edge_rejections_total", "reason", tc.code); got != before+1 {
				t.Errorf("rejections{%s} %v → %v", tc.code, before, got)
			}
		})
	}
	if e.Connections() != 0 {
		t.Fatalf("%d connections after refusals", e.Connections())
	}

	tok := mint(t, tokenSecret, time.Minute, good)
	for name, how := range map[string]func() (string, http.Header){
		"query":  func() (string, http.Header) { return "/sse/Orders?token=" + tok, nil },
		"bearer": func() (string, http.Header) { return "/sse/Orders", http.Header{"Authorization": {"bearer " + tok}} },
		"cookie": func() (string, http.Header) {
			return "/sse/Orders?group=ADMINS", http.Header{"Cookie": {DefaultTokenCookie + "=" + tok}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			path, h := how()
			c := connect(t, e, path, h)
			if o := opened(t, c); o != (podeOpen{ClientID: "alice-1", Group: "admins", Name: "Orders"}) {
				t.Fatalf("pode.open %+v: the identity is not the claims'", o)
			}
			c.close()
		})
	}
	connect(t, e, "/sse/Public", nil) // open mode needs nothing
	if got := counter(t, e.reg, "herald_edge_auth_decisions_total", "mode", "token", "result", "allowed"); got != 3 {
		t.Errorf("allowed decisions %v, want 3", got)
	}
}

// An assigned clientId is signed like any other the edge assigns, and a
// client may present its signed form again.
func TestTokenModeSigning(t *testing.T) {
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "pode-secret"}
	e := startEdge(t, srv.ClientURL(), Config{
		ConnectAuth: modes(t, "*=token"), Token: policy.TokenConfig{Secret: tokenSecret}, Signing: signer,
	})
	tok := mint(t, tokenSecret, time.Minute, map[string]any{"names": []string{"A"}, "clientId": "c-7"})
	o := opened(t, connect(t, e, "/sse/A?token="+tok, nil))
	if raw, err := signer.Verify(o.ClientID, "", "127.0.0.1"); err != nil || raw != "c-7" {
		t.Fatalf("clientId %q: %v", o.ClientID, err)
	}
	again := opened(t, connect(t, e, "/sse/A?clientId="+o.ClientID+"&token="+tok, http.Header{"User-Agent": {"x"}}))
	if again.ClientID != o.ClientID {
		t.Fatalf("%q, then %q", o.ClientID, again.ClientID)
	}
}

func TestTokenModeWS(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{
		ConnectAuth: modes(t, "*=token"), Token: policy.TokenConfig{Secret: tokenSecret},
	})
	if c, err := dialWS(t, wsURL(e.srv.URL, "/ws/chat"), nil, true); err == nil || c.resp == nil || c.resp.StatusCode != 401 {
		t.Fatalf("no token: %v", err)
	}
	wrong := mint(t, tokenSecret, time.Minute, map[string]any{"names": []string{"/other"}})
	if c, err := dialWS(t, wsURL(e.srv.URL, "/ws/chat?token="+wrong), nil, true); err == nil || c.resp.StatusCode != 403 {
		t.Fatalf("another name: %v", err)
	}
	tok := mint(t, tokenSecret, time.Minute, map[string]any{"names": []string{"/chat"}, "clientId": "w-1"})
	c := wsConnect(t, e, "/ws/chat?token="+tok, nil)
	if got := c.resp.Header.Get("X-Pode-Signal-Client-Id"); got != "w-1" {
		t.Fatalf("clientId %q", got)
	}
}

// A live connection whose token expires is closed with reason expired:
// SSE hears why before pode.close, WebSocket gets 4001; coming back with
// the same token is refused for good (403), so nothing retries forever.
func TestTokenExpiresOnLiveConnection(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{
		ConnectAuth: modes(t, "*=token"), Token: policy.TokenConfig{Secret: tokenSecret},
	})
	claims := map[string]any{"names": []string{"A", "/a"}}
	tok := mint(t, tokenSecret, 2*time.Second, claims)
	c := connect(t, e, "/sse/A?token="+tok, nil)
	ws := wsConnect(t, e, "/ws/a?token="+tok, nil)
	long := connect(t, e, "/sse/A?token="+mint(t, tokenSecret, time.Hour, claims), nil)

	c.waitClosed()
	var types []string
	for _, ev := range c.snapshot() {
		types = append(types, ev.Type+" "+ev.Data)
	}
	if got := strings.Join(types, ", "); got != `pode.open `+c.snapshot()[0].Data+`, herald.close {"reason":"expired"}, pode.close ` {
		t.Fatalf("events: %s", got)
	}
	if code, reason := ws.waitClose(); code != 4001 || reason != "expired" {
		t.Fatalf("WebSocket close %d %q", code, reason)
	}
	if long.isClosed() {
		t.Fatal("a connection with a valid token was closed")
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_disconnects_total", "reason", "expired") == 2
	}, "disconnects{expired} is not 2")
	if status, _, body := sseStatus(t, e.srv.URL+"/sse/A?token="+tok, nil); status != 403 || !strings.Contains(body, "expired") {
		t.Fatalf("reconnect with the expired token: %d %q", status, body)
	}
}

// backendEdge is an edge with names in backend mode and a Go backend.
func backendEdge(t *testing.T, cfg Config, decide func(broker.AuthRequest) broker.AuthAnswer) (*testEdge, *natsBackend) {
	t.Helper()
	srv := natstest.StartServer(t)
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = 500 * time.Millisecond
	}
	e := startEdge(t, srv.ClientURL(), cfg)
	b := &natsBackend{nc: natsConn(t, srv.ClientURL())}
	if decide != nil {
		sub, err := broker.ServeAuth(b.nc, "", "*", func(r broker.AuthRequest) broker.AuthAnswer {
			b.asked.Add(1)
			return decide(r)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		_ = b.nc.Flush()
	}
	return e, b
}

type natsBackend struct {
	nc    *nats.Conn
	asked atomic.Int32
}

func TestBackendMode(t *testing.T) {
	e, _ := backendEdge(t, Config{ConnectAuth: modes(t, "*=backend")}, func(r broker.AuthRequest) broker.AuthAnswer {
		switch strings.TrimPrefix(r.Name, "/") { // a WebSocket's name is its path
		case "Stall":
			time.Sleep(time.Second)
		case "Busy":
			return broker.AuthAnswer{Status: 503, Reason: "maintenance"}
		}
		switch r.Cookies["session"] {
		case "":
			return broker.AuthAnswer{Status: 401, Reason: "sign in first"}
		case "alice":
			return broker.AuthAnswer{Allow: true, Name: "Users", Group: new("admins"), ClientID: new("alice"), Subject: "alice"}
		case "mallory":
			return broker.AuthAnswer{Reason: "banned"}
		}
		return broker.AuthAnswer{Allow: true}
	})
	session := func(s string) http.Header { return http.Header{"Cookie": {"session=" + s}} }

	if status, _, body := sseStatus(t, e.srv.URL+"/sse/Orders", nil); status != 401 || !strings.Contains(body, "sign in first") {
		t.Fatalf("deny: %d %q", status, body)
	}
	if status, _, body := sseStatus(t, e.srv.URL+"/sse/Orders", session("mallory")); status != 403 || !strings.Contains(body, "banned") {
		t.Fatalf("deny without status: %d %q", status, body)
	}
	o := opened(t, connect(t, e, "/sse/Orders?group=x", session("alice")))
	if o != (podeOpen{ClientID: "alice", Group: "admins", Name: "Users"}) {
		t.Fatalf("assign: %+v", o)
	}
	if e.Edge.reg.len() != 1 || len(e.Edge.reg.match(broker.Address{Name: "Users", ClientID: "alice"}, nil)) != 1 {
		t.Fatal("the assigned identity is not the registered one")
	}
	// Transient refusals: SSE gets 200 + herald.refused so EventSource retries;
	// WebSocket 1013.
	for _, name := range []string{"Busy", "Stall"} { // the stalled backend answers nothing after it
		reason, _ := refusal(t, e, "/sse/"+name)
		want := refuseAuthUnavailable
		if name == "Busy" {
			want = refuseAuthDenied
		}
		if reason != want {
			t.Fatalf("%s: reason %q", name, reason)
		}
	}
	c, err := dialWS(t, wsURL(e.srv.URL, "/ws/Stall"), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := c.waitClose(); code != websocket.StatusTryAgainLater || reason != refuseAuthUnavailable {
		t.Fatalf("WebSocket: %d %q", code, reason)
	}
	if got := counter(t, e.reg, "herald_edge_auth_decisions_total", "mode", "backend", "result", "unavailable"); got != 2 {
		t.Errorf("unavailable decisions %v", got)
	}
}

func TestBackendNoResponders(t *testing.T) {
	e, _ := backendEdge(t, Config{ConnectAuth: modes(t, "Orders=backend"), AuthTimeout: 5 * time.Second}, nil)
	start := time.Now()
	if reason, _ := refusal(t, e, "/sse/Orders"); reason != refuseAuthUnavailable {
		t.Fatalf("reason %q", reason)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("no responders waited %v", d)
	}
	connect(t, e, "/sse/Other", nil) // other names stay open
}

// Decisions the backend lets edges reuse are asked once, until the TTL
// passes or the backend purges them.
func TestBackendCache(t *testing.T) {
	e, b := backendEdge(t, Config{ConnectAuth: modes(t, "*=backend")}, func(r broker.AuthRequest) broker.AuthAnswer {
		return broker.AuthAnswer{Allow: r.Cookies["session"] == "ok", Status: 403,
			Cache: &broker.AuthCache{TTL: 60, Vary: []string{"cookie:session"}, Tags: []string{"s:" + r.Cookies["session"]}}}
	})
	ok := http.Header{"Cookie": {"session=ok"}}
	for range 3 {
		connect(t, e, "/sse/A", ok).close()
	}
	if n := b.asked.Load(); n != 1 {
		t.Fatalf("asked %d times for one cacheable decision", n)
	}
	if status, _, _ := sseStatus(t, e.srv.URL+"/sse/A", http.Header{"Cookie": {"session=bad"}}); status != 403 {
		t.Fatalf("another session: %d", status)
	}
	if n := b.asked.Load(); n != 2 {
		t.Fatalf("the cache ignored the cookie it varies on (asked %d)", n)
	}
	if err := broker.PurgeAuthCache(b.nc, "", &broker.AuthPurge{Tags: []string{"s:ok"}}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		connect(t, e, "/sse/A", ok).close()
		return b.asked.Load() >= 3
	}, "the purge was not applied")
	if hits := counter(t, e.reg, "herald_edge_auth_cache_total", "result", "hit"); hits < 2 {
		t.Fatalf("cache hits %v", hits)
	}
}

func TestAuthConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ConnectAuth: modes(t, "*=token")}, "ConnectAuth"},
		{Config{ConnectAuth: modes(t, "*=token"), Token: policy.TokenConfig{Secret: "short"}}, "Token.Secret"},
		{Config{Token: policy.TokenConfig{PublicKeys: []byte("junk")}}, "Token.PublicKeys"},
		{Config{TokenCookie: "a b"}, "TokenCookie"},
		{Config{AuthHeaders: []string{"X-Ok", "bad:header"}}, "AuthHeaders[1]"},
		{Config{AuthTimeout: -1}, "AuthTimeout"},
		{Config{AuthCacheSize: -2}, "AuthCacheSize"},
		{Config{LocalIdleTimeout: -1}, "LocalIdleTimeout"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "edge: "+tc.want+":") {
			t.Errorf("%s: %v", tc.want, err)
		}
	}
	if err := (Config{AuthCacheSize: -1, ConnectAuth: modes(t, "*=backend")}).Validate(); err != nil {
		t.Errorf("cache off: %v", err)
	}
}
