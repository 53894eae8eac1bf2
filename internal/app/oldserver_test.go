package app_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// cmd/edge on Debian 12's nats-server 2.9.10, as a new user would run it:
// /readyz is ready, live events arrive with positions, a client that comes
// back with Last-Event-ID receives what it missed (that server has no
// batched direct gets: the history reads one message per request), and a
// restart of the server keeps the positions valid (same epoch, no gap).
func TestEdgeOnDebianServer(t *testing.T) {
	srv := natstest.StartSystemServer(t, natstest.DebianServerVersion)
	var logs natstest.SyncBuffer
	const token = "debian-token-123"
	addrs, cancel, done := started(t, app.RunEdge, []string{
		"-nats", srv.URL,
		"-listen", "127.0.0.1:0",
		"-publish-token", token,
		"-drain-window", "0s",
		"-shutdown-grace", "5s",
	}, &logs)
	defer stopped(t, cancel, done, 15*time.Second)
	base := "http://" + addrs.HTTP
	waitReadyz(t, base, http.StatusOK, 10*time.Second)
	nc := natstest.Connect(t, srv.URL)

	// Live: over HTTP (acknowledged by the stream) and plain NATS.
	c := openSSE(t, base, "/sse/Debian", nil)
	if code, body := publishHTTP(t, base, token, `{"name":"Debian","data":"one"}`); code != http.StatusAccepted {
		t.Fatalf("POST /publish = %d %s", code, body)
	}
	if err := nc.Publish("herald.ev.Debian._._", []byte("two")); err != nil {
		t.Fatal(err)
	}
	evs := c.expect(t, 10*time.Second, "message one", "message two")
	last := evs[1].ID
	epoch, _, _ := strings.Cut(last, ":")
	if !strings.HasSuffix(last, ":2") {
		t.Fatalf("second event id %q, want <epoch>:2", last)
	}
	c.close()

	// Missed while away, then a resume.
	for _, d := range []string{"missed 1", "missed 2", "missed 3"} {
		if err := nc.Publish("herald.ev.Debian._._", []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	r := openSSE(t, base, "/sse/Debian", http.Header{"Last-Event-ID": {last}})
	r.expect(t, 10*time.Second, "message missed 1", "message missed 2", "message missed 3")
	if err := nc.Publish("herald.ev.Debian._._", []byte("live")); err != nil {
		t.Fatal(err)
	}
	evs = r.expect(t, 10*time.Second, "message live")
	last = evs[0].ID
	r.close()

	// The server restarts with its store: the stream keeps its creation
	// time, so positions stay valid and a resume needs no gap.
	srv.Restart(t)
	waitReadyz(t, base, http.StatusOK, 20*time.Second)
	nc2 := natstest.Connect(t, srv.URL)
	if code, body := publishHTTP(t, base, token, `{"name":"Debian","data":"after restart"}`); code != http.StatusAccepted {
		t.Fatalf("POST /publish after the restart = %d %s", code, body)
	}
	r2 := openSSE(t, base, "/sse/Debian", http.Header{"Last-Event-ID": {last}})
	got := r2.expect(t, 10*time.Second, "message after restart")
	if e, _, _ := strings.Cut(got[0].ID, ":"); e != epoch {
		t.Fatalf("epoch after the restart %q, before %q", e, epoch)
	}
	if err := nc2.Publish("herald.ev.Debian._._", []byte("live again")); err != nil {
		t.Fatal(err)
	}
	r2.expect(t, 10*time.Second, "message live again")

	if out := logs.String(); strings.Contains(out, "replay from history failed") || strings.Contains(out, "level=ERROR") {
		t.Errorf("the edge logged failures:\n%s", out)
	}
}

// readmeNATSConfig returns the nats-server configuration README gives for
// an edge and a producer with least privilege.
func readmeNATSConfig(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```\nauthorization {")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README has no nats-server authorization block")
	}
	return "authorization {" + block
}

// README's nats-server configuration, on Debian's nats-server: cmd/edge
// with exactly the edge's permissions serves live events, POST /publish
// and resumes, and the producer's plain NATS publishes reach its clients;
// the app's backend user decides a connect and serves a Local stream.
func TestREADMEPermissionsOnDebianServer(t *testing.T) {
	srv := natstest.StartSystemServerWith(t, natstest.DebianServerVersion, natstest.SystemServerOptions{
		Config: readmeNATSConfig(t),
		Env:    []string{"EDGE_PASSWORD=edge-pw-123", "APP_PASSWORD=app-pw-123", "ORDERS_PASSWORD=orders-pw-123"},
	})
	var logs natstest.SyncBuffer
	const token = "readme-perm-token"
	addrs, cancel, done := started(t, app.RunEdge, []string{
		"-nats", srv.URL, "-nats-user", "edge", "-nats-password", "edge-pw-123",
		"-listen", "127.0.0.1:0", "-publish-token", token, "-drain-window", "0s", "-shutdown-grace", "5s",
		"-connect-auth", "Gated=backend", "-scopes", "Report=local",
	}, &logs)
	defer stopped(t, cancel, done, 15*time.Second)
	base := "http://" + addrs.HTTP
	waitReadyz(t, base, http.StatusOK, 10*time.Second)
	var producerErrs natstest.AsyncErrors
	producer := natstest.Connect(t, srv.URL, nats.UserInfo("orders", "orders-pw-123"), nats.ErrorHandler(producerErrs.Handler))

	c := openSSE(t, base, "/sse/Perm", nil)
	if err := producer.Publish("herald.ev.Perm._._", []byte("from orders")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, 10*time.Second, "message from orders")
	if code, body := publishHTTP(t, base, token, `{"name":"Perm","data":"from the edge"}`); code != http.StatusAccepted {
		t.Fatalf("POST /publish = %d %s", code, body)
	}
	last := c.expect(t, 10*time.Second, "message from the edge")[0].ID
	c.close()
	if err := producer.Publish("herald.ev.Perm._._", []byte("missed")); err != nil {
		t.Fatal(err)
	}
	if err := producer.Flush(); err != nil {
		t.Fatal(err)
	}
	r := openSSE(t, base, "/sse/Perm", http.Header{"Last-Event-ID": {last}})
	r.expect(t, 10*time.Second, "message missed")

	if _, err := producer.SubscribeSync("herald.live.>"); err != nil {
		t.Fatal(err)
	}
	producerErrs.WaitViolation(t, "herald.live.>")

	var backendErrs natstest.AsyncErrors
	backend := natstest.Connect(t, srv.URL, nats.UserInfo("app", "app-pw-123"), nats.ErrorHandler(backendErrs.Handler))
	auth, err := broker.ServeAuth(backend, "", "Gated", func(r broker.AuthRequest) broker.AuthAnswer {
		if r.Cookies["session"] != "alice" {
			return broker.AuthAnswer{Status: http.StatusUnauthorized}
		}
		alice := "alice"
		return broker.AuthAnswer{Allow: true, ClientID: &alice}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = auth.Unsubscribe() }()
	local, wait, err := broker.ServeLocal(backend, "", "Report", func(_ context.Context, _ broker.LocalRequest, w *broker.LocalWriter) {
		for _, row := range []string{"row 1", "row 2"} {
			_ = w.Send(broker.Event{Data: []byte(row)})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = local.Unsubscribe(); wait() }()
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	g := openSSE(t, base, "/sse/Gated", http.Header{"Cookie": {"session=alice"}})
	if !strings.Contains(g.open.Data, `"clientId":"alice"`) {
		t.Fatalf("the backend's allow: %+v", g.open)
	}
	g.close()
	openSSE(t, base, "/sse/Report", nil).expect(t, 10*time.Second, "message row 1", "message row 2", "pode.close")
	backendErrs.NoViolations(t, "the backend")
	if out := logs.String(); strings.Contains(out, "iolation") || strings.Contains(out, "level=ERROR") {
		t.Errorf("cmd/edge needed more than README's permissions:\n%s", out)
	}
}
