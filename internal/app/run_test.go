package app_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/natsserver"
)

// started runs fn (RunEmbedded or RunEdge) in the background and returns
// the bound addresses, a cancel function and the channel of its result.
func started(t *testing.T, fn func(context.Context, app.Runtime) error, args []string, stderr io.Writer) (app.Addrs, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- fn(ctx, app.Runtime{Args: args, Stderr: stderr, Ready: func(a app.Addrs) { ready <- a }})
	}()
	select {
	case a := <-ready:
		return a, cancel, done
	case err := <-done:
		cancel()
		t.Fatalf("run returned before serving: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("not serving after 30s")
	}
	panic("unreachable")
}

// stopped cancels the run and requires it to return nil within within.
func stopped(t *testing.T, cancel context.CancelFunc, done <-chan error, within time.Duration) {
	t.Helper()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v, want nil", err)
		}
		if took := time.Since(start); took > within {
			t.Fatalf("shutdown took %v, want under %v", took, within)
		}
	case <-time.After(within):
		t.Fatalf("run did not return within %v of cancel", within)
	}
}

// waitReady polls base+"/readyz" until it answers 200.
func waitReady(t *testing.T, client *http.Client, base string) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() bool {
		code, _ := get(t, client, base+"/readyz")
		return code == http.StatusOK
	}, "%s/readyz answers 200", base)
}

func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestRunEmbedded(t *testing.T) {
	const grace = 5 * time.Second
	var logs natstest.SyncBuffer
	addrs, cancel, done := started(t, app.RunEmbedded, []string{
		"-listen", "127.0.0.1:0",
		"-nats-listen", "127.0.0.1:0",
		"-data", t.TempDir(),
		"-shutdown-grace", grace.String(),
		"-signing-secret", "test-signing-secret",
		"-log-level", "debug",
	}, &logs)
	base := "http://" + addrs.HTTP
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	if code, body := get(t, client, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %q, want 200", code, body)
	}
	waitReady(t, client, base)
	code, body := get(t, client, base+"/")
	if code != http.StatusOK || !strings.Contains(body, "<title>Herald demo</title>") || !strings.Contains(body, `content="/sse/{name}"`) {
		t.Errorf("GET / = %d, want the demo page with the SSE path", code)
	}
	if code, body := get(t, client, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Errorf("GET /metrics = %d, want Go and process metrics", code)
	}
	if code, _ := get(t, client, base+"/index.html"); code == http.StatusOK {
		t.Errorf("GET /index.html = 200, want the demo only at exactly /")
	}

	// A connected client gets pode.close at shutdown.
	req, _ := http.NewRequest(http.MethodGet, base+"/sse/demo", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE status %d", resp.StatusCode)
	}
	if id := resp.Header.Get("X-Pode-Sse-Client-Id"); !strings.HasPrefix(id, "s:") {
		t.Errorf("clientId %q is not signed although -signing-secret is set", id)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- ev
			}
		}
	}()
	if ev := <-events; ev != "pode.open" {
		t.Fatalf("first event %q, want pode.open", ev)
	}

	stopped(t, cancel, done, grace)
	var sawClose bool
	for ev := range events {
		sawClose = sawClose || ev == "pode.close"
	}
	if !sawClose {
		t.Error("client did not receive pode.close at shutdown")
	}

	out := logs.String()
	if !strings.Contains(out, "publish token:") {
		t.Error("generated publish token was not printed")
	}
	if strings.Contains(out, "test-signing-secret") {
		t.Error("signing secret appears in the output")
	}
	for _, step := range []string{`step=edge`, `step="http server"`, `step="nats connection"`, `step="embedded nats server"`} {
		if !strings.Contains(out, step) {
			t.Errorf("shutdown step %s not logged", step)
		}
	}
	if i, j := strings.Index(out, `step=edge`), strings.Index(out, `step="nats connection"`); i < 0 || j < i {
		t.Error("the edge did not stop before the NATS connection")
	}
}

func TestRunEdge(t *testing.T) {
	const grace = 5 * time.Second
	ns, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort, JetStream: true, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()

	var logs natstest.SyncBuffer
	addrs, cancel, done := started(t, app.RunEdge, []string{
		"-listen", "127.0.0.1:0",
		"-nats", ns.ClientURL(),
		"-publish-token", "edge-test-token",
		"-drain-window", "0s",
		"-shutdown-grace", grace.String(),
		"-h2c",
	}, &logs)
	base := "http://" + addrs.HTTP
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	waitReady(t, client, base)
	if code, _ := get(t, client, base+"/"); code == http.StatusOK {
		t.Error("cmd/edge serves the demo page")
	}

	// Cleartext HTTP/2 with prior knowledge.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &p}}
	resp, err := h2.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h2.CloseIdleConnections()
	if resp.ProtoMajor != 2 {
		t.Errorf("-h2c: got %s, want HTTP/2", resp.Proto)
	}

	stopped(t, cancel, done, grace)
	if strings.Contains(logs.String(), "edge-test-token") {
		t.Error("publish token appears in the logs")
	}
	if strings.Contains(logs.String(), "publish token:") {
		t.Error("a token was generated although -publish-token was set")
	}
}

func TestRunErrors(t *testing.T) {
	// Invalid options fail before anything starts.
	err := app.RunEmbedded(context.Background(), app.Runtime{Args: []string{"-queue-messages", "0"}})
	var oe *app.OptionError
	if !errors.As(err, &oe) || oe.Option != "queue-messages" {
		t.Errorf("err = %v, want an OptionError for -queue-messages", err)
	}

	// A busy HTTP port fails before the embedded NATS server starts.
	addrs, cancel, done := started(t, app.RunEdge, []string{"-listen", "127.0.0.1:0", "-nats", "nats://127.0.0.1:1", "-publish-token", "abcdefgh"}, io.Discard)
	err = app.RunEmbedded(context.Background(), app.Runtime{Args: []string{"-listen", addrs.HTTP, "-nats-listen", "127.0.0.1:0", "-data", t.TempDir()}})
	if !errors.As(err, &oe) || oe.Option != "listen" {
		t.Errorf("err = %v, want an OptionError for -listen", err)
	} else if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "another Herald still running") {
		t.Errorf("err = %v, want address in use and the hint that another Herald may hold the port", err)
	}
	// An edge whose NATS is unreachable still serves, not ready, and stops cleanly.
	code, body := get(t, http.DefaultClient, "http://"+addrs.HTTP+"/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz without NATS = %d %q, want 503", code, body)
	}
	http.DefaultClient.CloseIdleConnections()
	stopped(t, cancel, done, 10*time.Second)
}

func TestMux(t *testing.T) {
	edgeHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Edge", "1")
		w.WriteHeader(http.StatusTeapot)
	})
	logger := slog.New(slog.DiscardHandler)
	reg := app.NewRegistry()
	tests := []struct {
		method, path string
		demo         bool
		wantCode     int
		wantEdge     bool
	}{
		{"GET", "/", true, http.StatusOK, false},
		{"HEAD", "/", true, http.StatusOK, false},
		{"GET", "/", false, http.StatusTeapot, true},
		{"POST", "/", true, http.StatusTeapot, true},
		{"GET", "/x", true, http.StatusTeapot, true},
		{"GET", "/metrics", true, http.StatusOK, false},
		{"GET", "/sse/demo", true, http.StatusTeapot, true},
		{"POST", "/publish", false, http.StatusTeapot, true},
	}
	for _, tt := range tests {
		var demo http.Handler
		if tt.demo {
			demo = app.DemoHandler("/sse/{name}")
		}
		mux := app.NewMux(edgeHandler, reg, demo, logger)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if isEdge := rec.Header().Get("X-Edge") == "1"; rec.Code != tt.wantCode || isEdge != tt.wantEdge {
			t.Errorf("%s %s (demo %v) = %d edge=%v, want %d edge=%v", tt.method, tt.path, tt.demo, rec.Code, isEdge, tt.wantCode, tt.wantEdge)
		}
	}
	var _ prometheus.Gatherer = reg
}

func TestDemoPage(t *testing.T) {
	rec := httptest.NewRecorder()
	app.NewDemoHandler(app.DemoConfig{SSEPath: `/x/{name}"><script>`, WSEcho: []string{"/demo", `/e"><script>`}}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	page := rec.Body.String()
	if strings.Contains(page, `"><script>`) || !strings.Contains(page, `/x/{name}&#34;&gt;&lt;script&gt;`) {
		t.Error("the SSE path is not HTML-escaped into the page")
	}
	if !strings.Contains(page, `content="/demo,/e&#34;&gt;&lt;script&gt;"`) {
		t.Error("the echo names are not HTML-escaped into the page")
	}
	for _, want := range []string{`value="` + app.DemoName + `"`, `value="` + app.DemoGroup + `"`, `value="` + app.DemoEventTypes + `"`, `content="/ws"`} {
		if !strings.Contains(page, want) {
			t.Errorf("demo page lacks the default %s", want)
		}
	}
	if strings.Contains(page, "{{") {
		t.Error("demo page has a placeholder left")
	}
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'sha256-", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "http://", "https://", "src=\"//"} {
		if strings.Contains(page, bad) {
			t.Errorf("demo page contains %q", bad)
		}
	}
	for _, want := range []string{"new EventSource(", "new WebSocket(", `"herald.v1"`, "herald.error", "pode.open", "pode.close", "pode.ping", `"message"`, "/publish", "Bearer ", "textContent"} {
		if !strings.Contains(page, want) {
			t.Errorf("demo page lacks %q", want)
		}
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "herald test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestRunTLSServesHTTP2(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	ns, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort, JetStream: true, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	addrs, cancel, done := started(t, app.RunEdge, []string{
		"-listen", "127.0.0.1:0", "-nats", ns.ClientURL(), "-publish-token", "tls-test-token",
		"-tls-cert", certFile, "-tls-key", keyFile,
	}, io.Discard)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	resp, err := client.Get("https://" + addrs.HTTP + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("GET /healthz over TLS = %d %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	stopped(t, cancel, done, 10*time.Second)
}

func TestRunWSListeners(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			ns, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort, JetStream: true, DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Shutdown()
			args := []string{"-listen", "127.0.0.1:0", "-ws-listen", "127.0.0.1:0", "-nats", ns.ClientURL(),
				"-publish-token", "ws-test-token", "-drain-window", "0s", "-ws-origins", "*.example.com"}
			scheme, wsScheme := "http", "ws"
			hc := &http.Client{Timeout: 10 * time.Second}
			if tlsOn {
				args = append(args, "-tls-cert", certFile, "-tls-key", keyFile)
				scheme, wsScheme = "https", "wss"
				hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			}
			defer hc.CloseIdleConnections()
			var logs natstest.SyncBuffer
			addrs, cancel, done := started(t, app.RunEdge, append(args, "-log-level", "debug"), &logs)
			defer func() {
				if t.Failed() {
					t.Log(logs.String())
				}
			}()
			if addrs.WS == "" {
				t.Fatal("Addrs.WS is empty with -ws-listen")
			}
			base := scheme + "://" + addrs.HTTP
			waitReady(t, hc, base)

			dial := func(u string, origin string) (*websocket.Conn, *http.Response, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				h := http.Header{}
				if origin != "" {
					h.Set("Origin", origin)
				}
				return websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: h})
			}
			// Pode's browser code: new WebSocket("ws://host:8091/").
			pode, resp, err := dial(wsScheme+"://"+addrs.WS+"/", "https://app.example.com")
			if err != nil {
				t.Fatalf("dial -ws-listen: %v", err)
			}
			defer pode.CloseNow()
			if got := resp.Header.Get("X-Pode-Signal-Name"); got != "/" {
				t.Errorf("name on -ws-listen = %q, want /", got)
			}
			route, _, err := dial(wsScheme+"://"+addrs.HTTP+"/ws/", "")
			if err != nil {
				t.Fatalf("dial /ws/ on -listen: %v", err)
			}
			defer route.CloseNow()
			if _, resp, err := dial(wsScheme+"://"+addrs.WS+"/", "https://evil.test"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("foreign origin: %v, want 403", err)
			}
			// The upgrade completes just before the edge registers the
			// connection: wait for both before publishing.
			natstest.Eventually(t, 10*time.Second, func() bool {
				_, m := get(t, hc, base+"/metrics")
				return strings.Contains(m, `herald_edge_connections{transport="ws"} 2`)
			}, "two WebSocket connections registered")

			req, _ := http.NewRequest(http.MethodPost, base+"/publish", strings.NewReader(`{"name":"/","data":{"Message":"hi"}}`))
			req.Header.Set("Authorization", "Bearer ws-test-token")
			presp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			presp.Body.Close()
			if presp.StatusCode != http.StatusAccepted {
				t.Fatalf("publish: %d", presp.StatusCode)
			}
			for i, c := range []*websocket.Conn{pode, route} {
				ctx, cancelRead := context.WithTimeout(context.Background(), 10*time.Second)
				_, b, err := c.Read(ctx)
				cancelRead()
				if err != nil || string(b) != `{"Message":"hi"}` {
					_, metrics := get(t, hc, base+"/metrics")
					var lines []string
					for _, l := range strings.Split(metrics, "\n") {
						if strings.HasPrefix(l, "herald_edge_") {
							lines = append(lines, l)
						}
					}
					t.Fatalf("client %d read %q, %v; want the published message\n%s", i, b, err, strings.Join(lines, "\n"))
				}
			}
			// Shutdown tells both clients to reconnect elsewhere.
			closed := make(chan websocket.StatusCode, 2)
			for _, c := range []*websocket.Conn{pode, route} {
				go func() {
					_, _, err := c.Read(context.Background())
					closed <- websocket.CloseStatus(err)
				}()
			}
			stopped(t, cancel, done, 10*time.Second)
			for range 2 {
				if code := <-closed; code != websocket.StatusServiceRestart {
					t.Errorf("close code at shutdown %d, want 1012", code)
				}
			}
		})
	}
}

// -pprof-listen serves the runtime profiles on their own listener, and
// only there.
func TestRunPprofListener(t *testing.T) {
	ns, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort, JetStream: true, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	var logs natstest.SyncBuffer
	addrs, cancel, done := started(t, app.RunEdge, []string{"-listen", "127.0.0.1:0", "-pprof-listen", "127.0.0.1:0",
		"-nats", ns.ClientURL(), "-publish-token", "pprof-test-token", "-drain-window", "0s"}, &logs)
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	if addrs.Pprof == "" {
		t.Fatal("Addrs.Pprof is empty with -pprof-listen")
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	if code, body := get(t, hc, "http://"+addrs.Pprof+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("goroutine profile on -pprof-listen: %d %.80q", code, body)
	}
	if code, _ := get(t, hc, "http://"+addrs.HTTP+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on -listen = %d, want 404", code)
	}
	stopped(t, cancel, done, 10*time.Second)
	if _, err := net.DialTimeout("tcp", addrs.Pprof, time.Second); err == nil {
		t.Error("-pprof-listen still accepts connections after shutdown")
	}
}
