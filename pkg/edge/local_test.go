package edge

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// localEdge is an edge whose names matching spec are Local, and a backend
// connection on the same NATS server.
func localEdge(t *testing.T, spec string, cfg Config) (*testEdge, *nats.Conn) {
	t.Helper()
	srv := natstest.StartServer(t)
	cfg.Scopes = scopes(t, spec)
	e := startEdge(t, srv.ClientURL(), cfg)
	return e, natsConn(t, srv.ClientURL())
}

// serveLocal runs a Go Local-stream backend for name until the test ends.
func serveLocal(t *testing.T, nc *nats.Conn, name string, serve func(context.Context, broker.LocalRequest, *broker.LocalWriter)) {
	t.Helper()
	sub, wait, err := broker.ServeLocal(nc, "", name, serve)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	t.Cleanup(func() { _ = sub.Unsubscribe(); wait() })
}

// events returns "type data" of every event a client received.
func events(c *client) string {
	var out []string
	for _, ev := range c.snapshot() {
		if ev.Type == "pode.open" {
			out = append(out, ev.Type)
			continue
		}
		out = append(out, strings.TrimSpace(ev.Type+" "+ev.Data))
	}
	return strings.Join(out, ", ")
}

// A Local stream delivers what its backend streams to this one connection,
// then pode.close; it is addressable by nobody.
func TestLocalStream(t *testing.T) {
	e, backend := localEdge(t, "Report=local", Config{History: &broker.HistoryConfig{}})
	got := make(chan broker.LocalRequest, 1)
	release := make(chan struct{})
	serveLocal(t, backend, "Report", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		got <- req
		_ = w.Send(broker.Event{Data: []byte("row 1")})
		<-release
		_ = w.Send(broker.Event{ID: "7", Type: "pode.progress", Data: []byte("50")})
		_ = w.Send(broker.Event{Data: []byte("row 2\nrow 3")})
	})
	c := connect(t, e, "/sse/Report?group=g", http.Header{"Cookie": {"session=abc"}, "User-Agent": {"ua/1"}})
	c.waitData("message", "row 1")
	req := <-got
	o := opened(t, c)
	if req.Name != "Report" || req.Group != "g" || req.ClientID != o.ClientID || req.Scope != "local" ||
		req.Cookies["session"] != "abc" || req.Headers["User-Agent"][0] != "ua/1" || req.Transport != "sse" {
		t.Fatalf("request %+v, connection %+v", req, o)
	}
	if ev := c.snapshot()[0]; ev.ID != "" {
		t.Fatalf("pode.open of a Local stream has a history position %q", ev.ID)
	}
	// Not addressable: no registry entry, no interest in its name, and an
	// event sent to the name reaches nobody.
	if e.Connections() != 0 || e.feed.Subscriptions() != 1 {
		t.Fatalf("registered: %d connections, %d subscriptions", e.Connections(), e.feed.Subscriptions())
	}
	pub, _ := broker.NewPublisher(backend, &broker.PublisherOptions{Acked: true})
	if _, err := pub.Publish(context.Background(), broker.Target{Name: "Report"}, broker.Event{Data: []byte("global")}); err != nil {
		t.Fatal(err)
	}
	close(release)
	c.waitClosed()
	if got, want := events(c), "pode.open, message row 1, pode.progress 50, message row 2\nrow 3, pode.close"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if c.snapshot()[2].ID != "7" {
		t.Fatalf("the backend's id is not the event's: %+v", c.snapshot()[2])
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_local_streams_total", "result", "ended") == 1 &&
			counter(t, e.reg, "herald_edge_disconnects_total", "reason", "closed") == 1
	}, "metrics")
}

func TestLocalStreamNoResponders(t *testing.T) {
	e, _ := localEdge(t, "Report=local", Config{})
	c := connect(t, e, "/sse/Report", nil)
	c.waitClosed()
	if got := events(c); got != `pode.open, herald.close {"reason":"unavailable"}, pode.close` {
		t.Fatalf("events %q", got)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_local_streams_total", "result", "no_responders") == 1 &&
			counter(t, e.reg, "herald_edge_disconnects_total", "reason", "unavailable") == 1
	}, "metrics")
}

// A backend that falls silent ends its stream after the idle timeout;
// keep-alives keep a quiet one open. Either way the backend is told when
// the edge ends it, and the edge holds no subscription afterwards.
func TestLocalStreamStalled(t *testing.T) {
	e, backend := localEdge(t, "*=local", Config{LocalIdleTimeout: 400 * time.Millisecond})
	subs := e.nc.NumSubscriptions()
	cancelled := make(chan string, 2)
	serveLocal(t, backend, "*", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		_ = w.Send(broker.Event{Data: []byte("start")})
		if req.Name == "Quiet" {
			for range 4 { // 800 ms of silence for the client, kept alive
				time.Sleep(200 * time.Millisecond)
				_ = w.KeepAlive()
			}
			_ = w.Send(broker.Event{Data: []byte("still here")})
			return
		}
		<-ctx.Done()
		cancelled <- req.Name
	})
	quiet := connect(t, e, "/sse/Quiet", nil)
	stalled := connect(t, e, "/sse/Stalled", nil)
	stalled.waitClosed()
	if got := events(stalled); got != `pode.open, message start, herald.close {"reason":"unavailable"}, pode.close` {
		t.Fatalf("stalled: %q", got)
	}
	if name := <-cancelled; name != "Stalled" {
		t.Fatal(name)
	}
	quiet.waitClosed()
	if got := events(quiet); got != "pode.open, message start, message still here, pode.close" {
		t.Fatalf("kept alive: %q", got)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.nc.NumSubscriptions() == subs }, "a stream's subscription leaked")
	if got := counter(t, e.reg, "herald_edge_local_streams_total", "result", "stalled"); got != 1 {
		t.Fatalf("stalled = %v", got)
	}
}

// A client that goes away ends its stream: the backend is told, and
// nothing is left subscribed.
func TestLocalStreamClientGone(t *testing.T) {
	e, backend := localEdge(t, "Report=local", Config{})
	subs := e.nc.NumSubscriptions()
	cancelled := make(chan struct{})
	serveLocal(t, backend, "Report", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		_ = w.Send(broker.Event{Data: []byte("hello")})
		<-ctx.Done()
		close(cancelled)
	})
	c := connect(t, e, "/sse/Report", nil)
	c.waitData("message", "hello")
	c.close()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend never heard the client left")
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return e.nc.NumSubscriptions() == subs && counter(t, e.reg, "herald_edge_local_streams_total", "result", "closed") == 1
	}, "the stream's subscription leaked")
}

// Shutdown closes Local streams too, and its wait for them ends.
func TestLocalStreamShutdown(t *testing.T) {
	e, backend := localEdge(t, "Report=local", Config{})
	serveLocal(t, backend, "Report", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		_ = w.Send(broker.Event{Data: []byte("hello")})
		<-ctx.Done()
	})
	c := connect(t, e, "/sse/Report", nil)
	c.waitData("message", "hello")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.waitClosed()
	if got := events(c); got != "pode.open, message hello, pode.close" {
		t.Fatalf("events %q", got)
	}
}

// With scope "either" the request chooses; a name's scope is not the
// client's to contradict.
func TestLocalScopeParameter(t *testing.T) {
	e, backend := localEdge(t, "Tasks=either,Report=local", Config{})
	serveLocal(t, backend, "*", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		_ = w.Send(broker.Event{Data: []byte("local " + req.Name)})
	})
	c := connect(t, e, "/sse/Tasks?scope=local", nil)
	c.waitClosed()
	if got := events(c); got != "pode.open, message local Tasks, pode.close" {
		t.Fatalf("events %q", got)
	}
	g := connect(t, e, "/sse/Tasks", nil) // global by default
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 1 })
	g.close()
	for _, path := range []string{"/sse/Orders?scope=local", "/sse/Report?scope=global", "/sse/Tasks?scope=nearby"} {
		if status, _, body := sseStatus(t, e.srv.URL+path, nil); status != 400 || !strings.Contains(body, "scope") {
			t.Errorf("%s: %d %q", path, status, body)
		}
	}
}

// A Local stream over WebSocket: the backend's events as messages, then
// close 1000.
func TestLocalStreamWS(t *testing.T) {
	e, backend := localEdge(t, "/report=local", Config{})
	serveLocal(t, backend, "*", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		_ = w.Send(broker.Event{Data: []byte("one")})
		_ = w.Send(broker.Event{Data: []byte("two")})
	})
	c := wsConnect(t, e, "/ws/report", nil)
	if code, reason := c.waitClose(); code != 1000 || reason != "closed" {
		t.Fatalf("close %d %q", code, reason)
	}
	if got := strings.Join(c.snapshot(), ","); got != "one,two" {
		t.Fatalf("messages %q", got)
	}
}

// Token mode guards Local names like any other, and the backend learns
// the token's subject.
func TestLocalStreamWithToken(t *testing.T) {
	e, backend := localEdge(t, "Report=local", Config{ConnectAuth: modes(t, "*=token"), Token: policy.TokenConfig{Secret: tokenSecret}})
	serveLocal(t, backend, "Report", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		_ = w.Send(broker.Event{Data: []byte("for " + req.Subject)})
	})
	if status, _, _ := sseStatus(t, e.srv.URL+"/sse/Report", nil); status != 401 {
		t.Fatalf("no token: %d", status)
	}
	c := connect(t, e, "/sse/Report?token="+mint(t, tokenSecret, time.Minute, map[string]any{"names": []string{"Report"}}), nil)
	c.waitClosed()
	if got := events(c); got != "pode.open, message for user-42, pode.close" {
		t.Fatalf("events %q", got)
	}
}
