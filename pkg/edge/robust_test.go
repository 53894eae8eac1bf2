package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
)

func TestInjectionProducesOneEvent(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	c := connect(t, e, "/sse/Events", nil)
	raw := natsConn(t, srv.ClientURL())
	attacks := []string{
		"a\ndata: injected", "a\r\nevent: admin\r\ndata: x", "a\rid: 9", "\n\nretry: 1\n\n",
		"line1\r\n\r\nline3", ": comment\nid: 1", "trailing\n", "\r", "x\x00y",
	}
	for i, a := range attacks {
		m := nats.NewMsg("herald.ev.Events._._")
		m.Data = []byte(a)
		// Raw NATS producers can put CR/LF/NUL in id and type: the edge neutralises them.
		m.Header.Set(broker.HeaderID, fmt.Sprintf("id%d\r\nevent: admin", i))
		m.Header.Set(broker.HeaderEvent, "evil\ndata: x")
		if err := raw.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.Publish("herald.ev.Events._._", []byte("end")); err != nil {
		t.Fatal(err)
	}
	c.waitData("message", "end")
	var got []sseclient.Event
	for _, ev := range c.snapshot()[1:] {
		if ev.Data != "end" {
			got = append(got, ev)
		}
	}
	if len(got) != len(attacks) {
		t.Fatalf("got %d events for %d messages: %+v", len(got), len(attacks), got)
	}
	for i, ev := range got {
		// The parser joins data lines with LF: CR and CRLF come back as LF.
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(attacks[i])
		if ev.Data != want {
			t.Errorf("event %d data %q, want %q", i, ev.Data, want)
		}
		if ev.Type != "evil data: x" {
			t.Errorf("event %d type %q: field injection", i, ev.Type)
		}
		if ev.ID != fmt.Sprintf("id%d  event: admin", i) {
			t.Errorf("event %d id %q: field injection", i, ev.ID)
		}
	}
	// Through /publish, CR/LF in id or event is refused outright.
	for _, body := range []string{`{"name":"Events","id":"1\r\nevent: x","data":"d"}`, `{"name":"Events","event":"a\nb","data":"d"}`} {
		if code, resp := publishHTTP(t, e, testToken, body); code != http.StatusBadRequest {
			t.Errorf("publish %s: %d %s, want 400", body, code, resp)
		}
	}
}

func TestSlowClientClosedNeighbourUnaffected(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{QueueBytes: 4 << 20, QueueMessages: 4096, WriteTimeout: 500 * time.Millisecond})

	// The slow client: a raw socket that reads the head and then stops reading.
	slow, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if tc, ok := slow.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(slow, "GET /sse/Feed?clientId=slow HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	br := bufio.NewReader(slow)
	if l, _ := br.ReadString('\n'); !strings.Contains(l, "200") {
		t.Fatalf("slow client status %q", l)
	}
	fast := connect(t, e, "/sse/Feed?clientId=fast", nil)
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })

	raw := natsConn(t, srv.ClientURL())
	payload := strings.Repeat("x", 8<<10)
	const n = 2000 // 16 MiB: far more than socket buffers plus the queue
	// Paced to what the healthy client reads (it shares the CPU with
	// everything else), while the stalled client falls further behind.
	for i := 0; i < n; i++ {
		if err := raw.Publish("herald.ev.Feed._._", []byte(fmt.Sprintf("%d:%s", i, payload))); err != nil {
			t.Fatal(err)
		}
		if (i+1)%100 == 0 {
			natstest.Eventually(t, 30*time.Second, func() bool { return len(fast.payloads("message")) > i },
				"fast client fell behind at event %d", i)
		}
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		return len(fast.payloads("message")) == n
	}, "fast client received %d of %d", len(fast.payloads("message")), n)
	for i, p := range fast.payloads("message") {
		if !strings.HasPrefix(p, fmt.Sprintf("%d:", i)) {
			t.Fatalf("fast client event %d out of order: %.10s", i, p)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_disconnects_total", "reason", "slow") == 1
	}, "slow client was not closed as slow")
	if fast.isClosed() {
		t.Fatal("the healthy neighbour was closed")
	}
	if e.Connections() != 1 {
		t.Fatalf("connections = %d, want 1", e.Connections())
	}
}

func TestRequestErrors(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{MaxPublishBytes: 1024})
	do := func(method, path, accept string) (int, string) {
		req, _ := http.NewRequest(method, e.srv.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	long := strings.Repeat("n", 300)
	for _, tc := range []struct {
		name, method, path, accept string
		code                       int
		body                       string
	}{
		{"no accept", "GET", "/sse/Events", "", 406, "text/event-stream"},
		{"wrong accept", "GET", "/sse/Events", "text/html", 406, "text/event-stream"},
		{"accept list", "GET", "/sse/Events?x=1", "text/html, text/event-stream;q=0.9", 200, ""},
		{"method", "PUT", "/sse/Events", "text/event-stream", 405, "GET or POST"},
		{"long name", "GET", "/sse/" + long, "text/event-stream", 400, "name"},
		{"control char in group", "GET", "/sse/Events?group=a%0Db", "text/event-stream", 400, "group"},
		{"control char in clientId", "GET", "/sse/Events?clientId=a%0Ab", "text/event-stream", 400, "clientId"},
		{"bad utf8 name", "GET", "/sse/%FF", "text/event-stream", 400, "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == 200 {
				c := connect(t, e, tc.path, http.Header{"Accept": {tc.accept}})
				c.close()
				return
			}
			code, body := do(tc.method, tc.path, tc.accept)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %q, want %d containing %q", code, body, tc.code, tc.body)
			}
		})
	}

	for _, tc := range []struct {
		name, token, body string
		code              int
		want              string
	}{
		{"no token", "", `{"name":"Events","data":"x"}`, 401, "token"},
		{"wrong token", "wrong-token-123", `{"name":"Events","data":"x"}`, 401, "token"},
		{"malformed", testToken, `{"name":`, 400, "malformed"},
		{"unknown field", testToken, `{"name":"Events","data":"x","nope":1}`, 400, "nope"},
		{"missing name", testToken, `{"data":"x"}`, 400, "name"},
		{"missing data", testToken, `{"name":"Events"}`, 400, "data"},
		{"bad group type", testToken, `{"name":"Events","group":5,"data":"x"}`, 400, "group"},
		{"too large", testToken, `{"name":"Events","data":"` + strings.Repeat("x", 2000) + `"}`, 413, "larger"},
		{"array item named", testToken, `[{"name":"Events","data":"x"},{"name":"","data":"y"}]`, 400, "item 1"},
		{"ok", testToken, `[{"name":"Events","data":"x"},{"name":"Events","group":["a","b"],"clientId":"c","data":{"k":[1, 2]}}]`, 202, `"published":3`},
	} {
		t.Run("publish "+tc.name, func(t *testing.T) {
			code, body := publishHTTP(t, e, tc.token, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want %d containing %q", code, body, tc.code, tc.want)
			}
		})
	}
}

func TestPublishDataForms(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	c := connect(t, e, "/sse/Events?group=g&clientId=me", nil)
	for _, body := range []string{
		`{"name":"Events","data":"plain text"}`,
		`{"name":"Events","group":"G","data":{"A": 1, "b": [true, null]}}`,
		`{"name":"Events","clientId":"me","id":"42","event":"Date","data":5}`,
	} {
		if code, resp := publishHTTP(t, e, testToken, body); code != http.StatusAccepted {
			t.Fatalf("%s: %d %s", body, code, resp)
		}
	}
	c.waitData("message", "plain text")
	c.waitData("message", `{"A":1,"b":[true,null]}`)
	if ev := c.waitData("Date", "5"); ev.ID != "42" {
		t.Fatalf("id %q", ev.ID)
	}
	// close through /publish.
	if code, resp := publishHTTP(t, e, testToken, `{"name":"Events","clientId":"me","close":true}`); code != http.StatusAccepted {
		t.Fatalf("close: %d %s", code, resp)
	}
	c.waitClosed()
}

func TestPing(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{PingInterval: 100 * time.Millisecond})
	c := connect(t, e, "/sse/Events", nil)
	c.waitFor(func(ev sseclient.Event) bool { return ev.Type == "pode.ping" && ev.Data == "" }, "pode.ping")
}

func TestShutdownSendsClose(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	clients := []*client{connect(t, e, "/sse/A", nil), connect(t, e, "/sse/B?group=g", nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		c.waitClosed()
		evs := c.snapshot()
		if evs[len(evs)-1].Type != "pode.close" {
			t.Fatalf("last event %+v, want pode.close", evs[len(evs)-1])
		}
	}
	resp, err := http.Get(e.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz after shutdown: %d, want 503", resp.StatusCode)
	}
	// A client that arrives while the edge drains is told to come back
	// (EventSource gives up on any status but 200), to another edge.
	if reason, _ := refusal(t, e, "/sse/A"); reason != refuseDraining {
		t.Fatalf("connect while draining: refused for %q", reason)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(e.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	// NATS gone: not ready, still healthy.
	srv.Shutdown()
	natstest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(e.srv.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
}

// A /publish that cannot be stored is answered at once: once the history
// stream has not answered for seconds (here NATS is gone), the edge says
// 503 instead of holding the request for its whole flush timeout (10 s)
// and then failing.
func TestPublishFailsFastWithoutHistory(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{History: &broker.HistoryConfig{}})
	if code, body := publishHTTP(t, e, testToken, `{"name":"A","data":"stored"}`); code != http.StatusAccepted {
		t.Fatalf("publish with NATS up: %d %s", code, body)
	}
	srv.Shutdown()
	natstest.Eventually(t, 15*time.Second, func() bool { return e.hist.Ready() != nil }, "history still ready without NATS")
	start := time.Now()
	code, body := publishHTTP(t, e, testToken, `{"name":"A","data":"not stored"}`)
	if took := time.Since(start); code != http.StatusServiceUnavailable || took > 2*time.Second {
		t.Fatalf("publish without history: %d %s after %v; want 503 at once", code, strings.TrimSpace(body), took)
	}
}

// TestHTTP2 runs SSE over HTTP/2 with TLS, where the handler goroutine
// writes (no hijacking).
func TestHTTP2(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natsConn(t, srv.ClientURL())
	e, err := New(nc, Config{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(e.Handler())
	hs.EnableHTTP2 = true
	hs.StartTLS()
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	}()
	client := hs.Client()
	client.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"h2"}
	_ = tls.VersionTLS13
	s, err := sseclient.Dial(context.Background(), client, hs.URL+"/sse/Events?clientId=h2", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Resp.ProtoMajor != 2 {
		t.Fatalf("proto %s, want HTTP/2", s.Resp.Proto)
	}
	if ev, err := s.Next(); err != nil || ev.Type != "pode.open" {
		t.Fatalf("first event %+v %v", ev, err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 1 })
	raw := natsConn(t, srv.ClientURL())
	for i := 0; i < 3; i++ {
		if err := raw.Publish("herald.ev.Events._.h2", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		ev, err := s.Next()
		if err != nil || ev.Data != fmt.Sprint(i) {
			t.Fatalf("event %d: %+v %v", i, ev, err)
		}
	}
}

// TestNoHijackHTTP1 covers the in-net/http writer on HTTP/1.1 as well.
func TestNoHijackHTTP1(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{NoHijack: true})
	c := connect(t, e, "/sse/Events?clientId=x", nil)
	raw := natsConn(t, srv.ClientURL())
	for i := 0; i < 100; i++ {
		if err := raw.Publish("herald.ev.Events._._", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.waitData("message", "99")
	if got := c.payloads("message"); len(got) != 100 {
		t.Fatalf("got %d events", len(got))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.waitClosed()
}
