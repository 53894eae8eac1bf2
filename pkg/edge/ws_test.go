package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// wsClient is a WebSocket test client that records every message in the
// background (unless it was opened with noRead).
type wsClient struct {
	t    *testing.T
	ws   *websocket.Conn
	resp *http.Response

	mu   sync.Mutex
	msgs []string
	err  error // why reading ended
	done chan struct{}
}

// wsURL turns an http:// test server URL plus path into a ws:// URL.
func wsURL(base, path string) string { return "ws" + strings.TrimPrefix(base, "http") + path }

// dialWS opens a WebSocket. With read set, a goroutine records messages;
// without, the client never reads (a slow client; pings go unanswered).
func dialWS(t *testing.T, u string, opts *websocket.DialOptions, read bool) (*wsClient, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return &wsClient{resp: resp}, err
	}
	ws.SetReadLimit(1 << 20)
	c := &wsClient{t: t, ws: ws, resp: resp, done: make(chan struct{})}
	if read {
		go c.read()
	} else {
		close(c.done)
	}
	t.Cleanup(c.close)
	return c, nil
}

// wsConnect opens a reading WebSocket on te at path (e.g. "/ws/chat").
func wsConnect(t *testing.T, te *testEdge, path string, opts *websocket.DialOptions) *wsClient {
	t.Helper()
	c, err := dialWS(t, wsURL(te.srv.URL, path), opts, true)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return c
}

// v1 selects the herald.v1 subprotocol.
func v1() *websocket.DialOptions {
	return &websocket.DialOptions{Subprotocols: []string{WSSubprotocol}}
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		_, b, err := c.ws.Read(context.Background())
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.mu.Unlock()
			return
		}
		c.msgs = append(c.msgs, string(b))
		c.mu.Unlock()
	}
}

func (c *wsClient) close() {
	_ = c.ws.CloseNow()
	<-c.done
}

func (c *wsClient) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

func (c *wsClient) has(m string) bool {
	for _, s := range c.snapshot() {
		if s == m {
			return true
		}
	}
	return false
}

// waitMsg waits until message m has arrived.
func (c *wsClient) waitMsg(m string) {
	c.t.Helper()
	natstest.Eventually(c.t, 10*time.Second, func() bool { return c.has(m) },
		func() string { return fmt.Sprintf("waiting for %q; have %q", m, c.snapshot()) })
}

// waitClose waits until the server has closed the connection and returns
// the close status (-1 when there was no close frame).
func (c *wsClient) waitClose() (websocket.StatusCode, string) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatal("connection was not closed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var ce websocket.CloseError
	if errors.As(c.err, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

func (c *wsClient) send(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// waitWSInterest publishes probes to name through producer until every
// client has received one: their interest has reached the producer's node.
func waitWSInterest(t *testing.T, producer *nats.Conn, name string, clients ...*wsClient) {
	t.Helper()
	subject := broker.MustSubjects("").EventName(name)
	i := 0
	natstest.Eventually(t, 10*time.Second, func() bool {
		i++
		if err := producer.Publish(subject, []byte(fmt.Sprintf("probe-%d", i))); err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			if len(c.snapshot()) == 0 {
				return false
			}
		}
		return true
	}, "interest in %s never reached the producer", name)
}

func publishTo(t *testing.T, p *broker.Publisher, target broker.Target, ev broker.Event) {
	t.Helper()
	if _, err := p.Publish(context.Background(), target, ev); err != nil {
		t.Fatal(err)
	}
}

func TestWSBroadcastNameGroupClient(t *testing.T) {
	a, b, producer := twoEdges(t, Config{})
	x1 := wsConnect(t, a, "/ws/chat?group=Admins&clientId=c1", nil)
	x2 := wsConnect(t, a, "/ws/chat?group=users&clientId=c2", nil)
	x3 := wsConnect(t, b, "/ws/chat?group=admins&clientId=c3", v1())
	other := wsConnect(t, b, "/ws/other", nil)
	waitWSInterest(t, producer, "/chat", x1, x2, x3)
	waitWSInterest(t, producer, "/other", other)
	pub, err := broker.NewPublisher(producer, nil)
	if err != nil {
		t.Fatal(err)
	}

	publishTo(t, pub, broker.Target{Name: "/chat"}, broker.Event{Data: []byte("to-all")})
	publishTo(t, pub, broker.Target{Name: "/chat", Groups: []string{"ADMINS"}}, broker.Event{Data: []byte("to-admins")})
	publishTo(t, pub, broker.Target{Name: "/chat", ClientIDs: []string{"c2"}}, broker.Event{Data: []byte(`{"to":"c2"}`)})
	publishTo(t, pub, broker.Target{Name: "/chat"}, broker.Event{Data: []byte("end")})
	publishTo(t, pub, broker.Target{Name: "/other"}, broker.Event{Data: []byte("end")})

	envelope := func(data string) string { return `{"data":` + data + `}` }
	x1.waitMsg("end")
	x2.waitMsg("end")
	x3.waitMsg(envelope(`"end"`))
	other.waitMsg("end")
	for _, tc := range []struct {
		c        *wsClient
		want     []string
		dontWant []string
	}{
		{x1, []string{"to-all", "to-admins"}, []string{`{"to":"c2"}`}},
		{x2, []string{"to-all", `{"to":"c2"}`}, []string{"to-admins"}},
		{x3, []string{envelope(`"to-all"`), envelope(`"to-admins"`)}, []string{envelope(`{"to":"c2"}`)}},
		{other, nil, []string{"to-all", "to-admins", `{"to":"c2"}`}},
	} {
		for _, m := range tc.want {
			if !tc.c.has(m) {
				t.Errorf("%s: missing %q in %q", tc.c.resp.Header.Get("X-Pode-Signal-Client-Id"), m, tc.c.snapshot())
			}
		}
		for _, m := range tc.dontWant {
			if tc.c.has(m) {
				t.Errorf("%s: unexpected %q", tc.c.resp.Header.Get("X-Pode-Signal-Client-Id"), m)
			}
		}
	}
	// The identity headers of the upgrade.
	h := x1.resp.Header
	if h.Get("X-Pode-Signal-Name") != "/chat" || h.Get("X-Pode-Signal-Group") != "Admins" || h.Get("X-Pode-Signal-Client-Id") != "c1" {
		t.Errorf("signal headers %v", h)
	}
	if got := counter(t, a.reg, "herald_edge_connections", "transport", "ws"); got != 2 {
		t.Errorf("ws connections gauge on edge a = %v, want 2", got)
	}
}

func TestWSAndSSEShareAName(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	// A WebSocket name is a path; an SSE client reaches the same name
	// with the slash escaped in its route.
	sse := connect(t, e, "/sse/%2Ffeed", nil)
	ws := wsConnect(t, e, "/ws/feed", nil)
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })
	producer := natsConn(t, srv.ClientURL())
	pub, _ := broker.NewPublisher(producer, nil)
	publishTo(t, pub, broker.Target{Name: "/feed"}, broker.Event{ID: "1", Type: "tick", Data: []byte(`{"n":1}`)})
	sse.waitData("tick", `{"n":1}`)
	ws.waitMsg(`{"n":1}`)
	if got := counter(t, e.reg, "herald_edge_deliveries_total"); got != 2 {
		t.Errorf("deliveries = %v, want 2 (one publish, two clients)", got)
	}
}

func TestWSEnvelope(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	env := wsConnect(t, e, "/ws/times?group=G1&clientId=me", v1())
	raw := wsConnect(t, e, "/ws/times", nil)
	if got := env.resp.Header.Get("Sec-WebSocket-Protocol"); got != WSSubprotocol {
		t.Fatalf("negotiated subprotocol %q, want %s", got, WSSubprotocol)
	}
	if got := raw.resp.Header.Get("Sec-WebSocket-Protocol"); got != "" {
		t.Fatalf("raw client negotiated %q", got)
	}
	env.waitMsg(`{"event":"pode.open","data":{"clientId":"me","group":"G1","name":"/times"}}`)
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })

	producer := natsConn(t, srv.ClientURL())
	pub, _ := broker.NewPublisher(producer, nil)
	publishTo(t, pub, broker.Target{Name: "/times"}, broker.Event{ID: "42", Type: "Date", Data: []byte(`{ "a": [1, 2] }`)})
	publishTo(t, pub, broker.Target{Name: "/times"}, broker.Event{Data: []byte("plain \"text\"")})
	env.waitMsg(`{"id":"42","event":"Date","data":{"a":[1,2]}}`)
	env.waitMsg(`{"data":"plain \"text\""}`)
	raw.waitMsg(`{ "a": [1, 2] }`)
	raw.waitMsg(`plain "text"`)
	if n := len(raw.snapshot()); n != 2 {
		t.Errorf("raw client got %d messages, want 2 (no hello, no envelope): %q", n, raw.snapshot())
	}
	// Every envelope is one JSON object.
	for _, m := range env.snapshot() {
		var v map[string]json.RawMessage
		if err := json.Unmarshal([]byte(m), &v); err != nil {
			t.Errorf("envelope %q: %v", m, err)
		}
	}
}

func TestWSPodeListener(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	pode := httptest.NewServer(e.WSHandler())
	t.Cleanup(pode.Close)

	// new WebSocket("ws://localhost:8091/") from the Pode tutorial.
	root, err := dialWS(t, wsURL(pode.URL, "/"), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	times, err := dialWS(t, wsURL(pode.URL, "/response-times"), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := root.resp.Header.Get("X-Pode-Signal-Name"); got != "/" {
		t.Errorf("name %q, want /", got)
	}
	if got := times.resp.Header.Get("X-Pode-Signal-Name"); got != "/response-times" {
		t.Errorf("name %q, want /response-times", got)
	}
	if id := root.resp.Header.Get("X-Pode-Signal-Client-Id"); len(id) != 36 {
		t.Errorf("assigned clientId %q is not a GUID", id)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })
	producer := natsConn(t, srv.ClientURL())
	pub, _ := broker.NewPublisher(producer, nil)
	publishTo(t, pub, broker.Target{Name: "/"}, broker.Event{Data: []byte(`{"Message":"hi"}`)})
	publishTo(t, pub, broker.Target{Name: "/response-times"}, broker.Event{Data: []byte(`{"ResponseTimes":[123,101,104]}`)})
	root.waitMsg(`{"Message":"hi"}`)
	times.waitMsg(`{"ResponseTimes":[123,101,104]}`)
	if root.has(`{"ResponseTimes":[123,101,104]}`) {
		t.Error("the / client received another path's message")
	}

	// A plain HTTP request gets a clear 426.
	resp, err := http.Get(pode.URL + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "WebSocket") {
		t.Errorf("plain GET: %d %q, want 426", resp.StatusCode, body)
	}
	// So does the main handler's route.
	resp, err = http.Get(e.srv.URL + "/ws/chat")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET /ws/chat: %d, want 426", resp.StatusCode)
	}
}

func TestWSOrigin(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{WSOriginPatterns: []string{"*.good.example", "https://app.partner.example"}})
	pode := httptest.NewServer(e.WSHandler())
	t.Cleanup(pode.Close)
	rejected := 0
	for _, base := range []string{e.srv.URL, pode.URL} {
		for _, tc := range []struct {
			origin string
			ok     bool
		}{
			{"", true}, // not a browser
			{base, true},
			{"http://www.good.example", true},
			{"https://app.partner.example", true},
			{"http://app.partner.example", false}, // the pattern names the scheme
			{"http://evil.example", false},
			{"http://good.example.evil.example", false},
			{"null", false},
		} {
			opts := &websocket.DialOptions{}
			if tc.origin != "" {
				opts.HTTPHeader = http.Header{"Origin": []string{tc.origin}}
			}
			c, err := dialWS(t, wsURL(base, "/ws/chat"), opts, true)
			switch {
			case tc.ok && err != nil:
				t.Errorf("%s origin %q: %v, want an upgrade", base, tc.origin, err)
			case tc.ok:
				c.close()
			case err == nil:
				t.Errorf("%s origin %q: upgraded, want 403", base, tc.origin)
			case c.resp == nil || c.resp.StatusCode != http.StatusForbidden:
				t.Errorf("%s origin %q: %v, want 403", base, tc.origin, err)
			default:
				rejected++
			}
		}
	}
	if got := counter(t, e.reg, "herald_edge_rejections_total", "reason", "origin"); got != float64(rejected) || rejected != 8 {
		t.Errorf("origin rejections counted %v, seen %d, want 8", got, rejected)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_connects_total", "transport", "ws") == 8
	}, "accepted connections: want 8")
}

func TestWSReadLimit(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{WSReadLimit: 1024})
	c := wsConnect(t, e, "/ws/chat", nil)
	c.send(`{"message":"` + strings.Repeat("a", 1024-14) + `"}`) // exactly the limit
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_ws_inbound_total", "result", "ok") == 1
	}, "a message within the limit was not accepted")
	c.send(`{"message":"` + strings.Repeat("b", 2000) + `"}`)
	code, _ := c.waitClose()
	if code != websocket.StatusMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_disconnects_total", "reason", "too_big") == 1 &&
			counter(t, e.reg, "herald_edge_ws_inbound_total", "result", "too_big") == 1 && e.Connections() == 0
	}, "the oversize message was not counted")
}

func TestWSInboundVerifiedIdentity(t *testing.T) {
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "inbound-secret"}
	e := startEdge(t, srv.ClientURL(), Config{Signing: signer})
	sub := natsConn(t, srv.ClientURL())
	msgs := make(chan *nats.Msg, 16)
	s, err := sub.ChanSubscribe("herald.in.>", msgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Unsubscribe() })
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	signed := signer.Sign("me", "", "")
	c := wsConnect(t, e, "/ws/chat?group=Admins&clientId="+url.QueryEscape(signed), v1())
	c.waitMsg(`{"event":"pode.open","data":{"clientId":"` + signed + `","group":"Admins","name":"/chat"}}`)

	// The body claims another identity: it is only data.
	c.send(`{"message": {"text": "hi"}, "clientId": "victim", "group": "root", "path": "/x%20y", "direct": false}`)
	var m *nats.Msg
	select {
	case m = <-msgs:
	case <-time.After(10 * time.Second):
		t.Fatal("no inbound message on NATS")
	}
	if m.Subject != "herald.in./chat.admins.me" {
		t.Errorf("subject %q, want herald.in./chat.admins.me", m.Subject)
	}
	for k, want := range map[string]string{HeaderSenderName: "/chat", HeaderSenderGroup: "Admins", HeaderSenderClientID: "me"} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if want := `{"message":{"text":"hi"},"path":"/x y","clientId":"victim","group":"root"}`; string(m.Data) != want {
		t.Errorf("body %s, want %s", m.Data, want)
	}
	addr, err := broker.MustSubjects("").ParseInbound(m.Subject)
	if err != nil || addr != (broker.Address{Name: "/chat", Group: "admins", ClientID: "me"}) {
		t.Errorf("ParseInbound = %+v, %v", addr, err)
	}

	// Malformed messages: an error message to a herald.v1 client, the
	// connection stays open, nothing reaches NATS.
	for _, bad := range []string{`not json`, `{"message":1,"extra":2}`, `{"path":"/x"}`, `{"message":null}`, `[1]`, `{"message":1}{}`, `{"message":1,"direct":"yes"}`} {
		c.send(bad)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		n := 0
		for _, s := range c.snapshot() {
			if strings.HasPrefix(s, `{"event":"herald.error","data":{"reason":"malformed"`) {
				n++
			}
		}
		return n == 7
	}, func() string { return fmt.Sprintf("error messages: %q", c.snapshot()) })
	if got := counter(t, e.reg, "herald_edge_ws_inbound_total", "result", "malformed"); got != 7 {
		t.Errorf("malformed count %v, want 7", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, []byte(`{"message":1}`)); err != nil {
		t.Fatal(err)
	}
	c.waitMsg(`{"event":"herald.error","data":{"reason":"binary","detail":"only text messages are accepted"}}`)
	c.send(`{"message":"after"}`)
	select {
	case m = <-msgs:
		if string(m.Data) != `{"message":"after"}` {
			t.Errorf("next inbound message %s, want the valid one (the rejected ones leaked)", m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("valid message after the malformed ones did not arrive")
	}

	// A raw (Pode) client gets no error message: Pode logs and drops.
	raw := wsConnect(t, e, "/ws/chat", nil)
	raw.send(`not json`)
	raw.send(`{"message":"ok"}`)
	select {
	case m = <-msgs:
		if string(m.Data) != `{"message":"ok"}` {
			t.Errorf("raw client's message %s", m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("raw client's message did not arrive")
	}
	if got := raw.snapshot(); len(got) != 0 {
		t.Errorf("raw client received %q, want nothing", got)
	}
}

func TestWSSigningForgedIDs(t *testing.T) {
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "ws-secret"}
	e := startEdge(t, srv.ClientURL(), Config{Signing: signer})
	for _, id := range []string{"plain-forged", "s:forged.AAAA", signer.Sign("x", "", "") + "A", policy.Sign("x", "other-secret")} {
		c, err := dialWS(t, wsURL(e.srv.URL, "/ws/chat?clientId="+url.QueryEscape(id)), nil, true)
		if err == nil {
			c.close()
			t.Errorf("clientId %q upgraded, want 403", id)
			continue
		}
		if c.resp == nil || c.resp.StatusCode != http.StatusForbidden {
			t.Errorf("clientId %q: %v, want 403", id, err)
		}
	}
	if e.Connections() != 0 {
		t.Fatalf("connections = %d after forged ids", e.Connections())
	}
	// No clientId: one is assigned and signed; it can be presented again.
	c := wsConnect(t, e, "/ws/chat", nil)
	shown := c.resp.Header.Get("X-Pode-Signal-Client-Id")
	if _, err := signer.Verify(shown, "", ""); err != nil {
		t.Fatalf("assigned id %q does not verify: %v", shown, err)
	}
	c.close()
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 0 })
	again := wsConnect(t, e, "/ws/chat?clientId="+url.QueryEscape(shown), nil)
	if got := again.resp.Header.Get("X-Pode-Signal-Client-Id"); got != shown {
		t.Errorf("id %q, want %q", got, shown)
	}
	// A bad identity is 400.
	if _, err := dialWS(t, wsURL(e.srv.URL, "/ws/chat?group="+url.QueryEscape("a\nb")), nil, true); err == nil {
		t.Error("a group with a newline upgraded")
	}
}

func TestWSEcho(t *testing.T) {
	t.Run("off by default", func(t *testing.T) {
		srv := natstest.StartServer(t)
		e := startEdge(t, srv.ClientURL(), Config{})
		sub := natsConn(t, srv.ClientURL())
		events := make(chan *nats.Msg, 64)
		s1, _ := sub.ChanSubscribe("herald.ev.>", events)
		in := make(chan *nats.Msg, 64)
		s2, _ := sub.ChanSubscribe("herald.in.>", in)
		t.Cleanup(func() { _ = s1.Unsubscribe(); _ = s2.Unsubscribe() })
		if err := sub.Flush(); err != nil {
			t.Fatal(err)
		}
		a := wsConnect(t, e, "/ws/chat", nil)
		b := wsConnect(t, e, "/ws/chat", nil)
		natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })
		a.send(`{"message":"hello"}`)
		a.send(`{"message":"direct","direct":true}`)
		for range 2 {
			select {
			case <-in:
			case <-time.After(10 * time.Second):
				t.Fatal("inbound message did not arrive")
			}
		}
		// Everything the edge published before the inbound messages
		// has arrived too (one connection, in order): only its own
		// connection announcements, no echo.
		if err := sub.Flush(); err != nil {
			t.Fatal(err)
		}
		for len(events) > 0 {
			m := <-events
			if broker.HeaderValue(m.Header, broker.HeaderControl) == "" {
				t.Errorf("echo published %s: %q", m.Subject, m.Data)
			}
		}
		if len(a.snapshot())+len(b.snapshot()) != 0 {
			t.Errorf("clients received %q %q", a.snapshot(), b.snapshot())
		}
		if got := counter(t, e.reg, "herald_edge_ws_echo_total", "result", "ok"); got != 0 {
			t.Errorf("echo count %v", got)
		}
	})

	t.Run("on for a name", func(t *testing.T) {
		srv := natstest.StartServer(t)
		levels, _ := policy.ParseLevels("/locked=clientid")
		e := startEdge(t, srv.ClientURL(), Config{WSEchoNames: []string{"/chat", "/locked"}, Levels: levels})
		a := wsConnect(t, e, "/ws/chat?clientId=a", v1())
		b := wsConnect(t, e, "/ws/chat?clientId=b&group=team", nil)
		other := wsConnect(t, e, "/ws/other?clientId=o", nil)
		l1 := wsConnect(t, e, "/ws/locked?clientId=l1", nil)
		l2 := wsConnect(t, e, "/ws/locked?clientId=l2", nil)
		natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 5 })

		a.send(`{"message":"hello"}`) // no path: every echo-enabled name
		b.waitMsg("hello")
		a.waitMsg(`{"data":"hello"}`)
		a.send(`{"message":{"x":1},"direct":true}`) // back to the sender only
		a.waitMsg(`{"data":{"x":1}}`)
		a.send(`{"message":"team only","group":"TEAM"}`)
		b.waitMsg("team only")
		a.send(`{"message":"to other","path":"/other"}`) // /other is not echo-enabled
		a.waitMsg(`{"event":"herald.error","data":{"reason":"echo_denied","detail":"echo is not enabled for /other"}}`)
		l1.send(`{"message":"everyone"}`) // the clientid level forbids it
		l1.send(`{"message":"to l2","clientId":"l2"}`)
		l2.waitMsg("to l2")
		a.send(`{"message":"end"}`)
		b.waitMsg("end")

		if b.has(`{"x":1}`) || other.has("to other") || l2.has("everyone") {
			t.Errorf("an echo went too far: b=%q other=%q l2=%q", b.snapshot(), other.snapshot(), l2.snapshot())
		}
		if a.has(`{"data":"team only"}`) {
			t.Error("a group echo reached a client outside the group")
		}
		for result, want := range map[string]float64{"ok": 5, "denied": 1, "broadcast_level": 1} {
			if got := counter(t, e.reg, "herald_edge_ws_echo_total", "result", result); got != want {
				t.Errorf("echo %s = %v, want %v", result, got, want)
			}
		}
	})

	t.Run("star", func(t *testing.T) {
		srv := natstest.StartServer(t)
		e := startEdge(t, srv.ClientURL(), Config{WSEchoNames: []string{"*"}})
		a := wsConnect(t, e, "/ws/one", nil)
		b := wsConnect(t, e, "/ws/two", nil)
		natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })
		a.send(`{"message":"all names"}`) // Pode: no path means every name
		a.waitMsg("all names")
		b.waitMsg("all names")
		a.send(`{"message":"to two","path":"/two"}`)
		b.waitMsg("to two")
	})
}

func TestWSInboundRateLimit(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{WSInboundRate: 0.001, WSInboundBurst: 3})
	c := wsConnect(t, e, "/ws/chat", nil)
	calm := wsConnect(t, e, "/ws/chat", nil)
	for range 4 {
		c.send(`{"message":"x"}`)
	}
	code, reason := c.waitClose()
	if code != websocket.StatusPolicyViolation || reason != "policy" {
		t.Fatalf("close %d %q, want 1008 policy", code, reason)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_ws_inbound_total", "result", "rate_limited") == 1 &&
			counter(t, e.reg, "herald_edge_ws_inbound_total", "result", "ok") == 3 &&
			counter(t, e.reg, "herald_edge_disconnects_total", "reason", "policy") == 1
	}, "rate limit not counted")
	calm.send(`{"message":"fine"}`)
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_ws_inbound_total", "result", "ok") == 4
	}, "another client's message was refused")
}

func TestWSSlowReaderClosed(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{QueueBytes: 4 << 20, QueueMessages: 4096, WriteTimeout: 500 * time.Millisecond})
	// The slow client never reads, with a small receive buffer.
	smallBuffers := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return nc, err
		},
	}}
	slow, err := dialWS(t, wsURL(e.srv.URL, "/ws/feed?clientId=slow"), &websocket.DialOptions{HTTPClient: smallBuffers}, false)
	if err != nil {
		t.Fatal(err)
	}
	_ = slow
	fast := wsConnect(t, e, "/ws/feed?clientId=fast", nil)
	sse := connect(t, e, "/sse/%2Ffeed?clientId=sse", nil)
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 3 })

	raw := natsConn(t, srv.ClientURL())
	payload := strings.Repeat("x", 8<<10)
	const n = 2000 // 16 MiB: far more than socket buffers plus the queue
	// Paced to what the healthy clients read (they share the CPU with
	// everything else), while the stalled client falls further behind.
	for i := range n {
		if err := raw.Publish("herald.ev./feed._._", fmt.Appendf(nil, "%d:%s", i, payload)); err != nil {
			t.Fatal(err)
		}
		if (i+1)%100 == 0 {
			natstest.Eventually(t, 30*time.Second, func() bool {
				return len(fast.snapshot()) > i && len(sse.payloads("message")) > i
			}, "fast clients fell behind at message %d", i)
		}
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		return len(fast.snapshot()) == n && len(sse.payloads("message")) == n
	}, func() string {
		return fmt.Sprintf("fast clients received %d and %d of %d", len(fast.snapshot()), len(sse.payloads("message")), n)
	})
	for i, p := range fast.snapshot() {
		if !strings.HasPrefix(p, fmt.Sprintf("%d:", i)) {
			t.Fatalf("fast client message %d out of order: %.10s", i, p)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_disconnects_total", "reason", "slow") == 1
	}, "slow client was not closed as slow")
	select {
	case <-fast.done:
		t.Fatal("the healthy neighbour was closed")
	default:
	}
	if e.Connections() != 2 {
		t.Fatalf("connections = %d, want 2", e.Connections())
	}
}

func TestWSKeepAlive(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{PingInterval: 50 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	alive := wsConnect(t, e, "/ws/chat", nil) // its reader answers pings
	deaf, err := dialWS(t, wsURL(e.srv.URL, "/ws/chat"), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	_ = deaf
	natstest.Eventually(t, 10*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_disconnects_total", "reason", "gone") == 1 && e.Connections() == 1
	}, "a client that never answers pings was not closed")
	// Several ping periods later the answering client is still served.
	producer := natsConn(t, srv.ClientURL())
	for i := range 3 {
		if err := producer.Publish("herald.ev./chat._._", fmt.Appendf(nil, "still-%d", i)); err != nil {
			t.Fatal(err)
		}
		alive.waitMsg(fmt.Sprintf("still-%d", i))
	}
	if e.Connections() != 1 {
		t.Fatalf("connections = %d, want 1", e.Connections())
	}
}

func TestWSServerCloseCodes(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	closed := wsConnect(t, e, "/ws/chat?clientId=x", nil)
	replaced := wsConnect(t, e, "/ws/chat?clientId=dup", nil)
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })
	_ = wsConnect(t, e, "/ws/chat?clientId=dup", nil)
	if code, reason := replaced.waitClose(); code != websocket.StatusPolicyViolation || reason != "replaced" {
		t.Errorf("replaced: %d %q, want 1008 replaced", code, reason)
	}
	producer := natsConn(t, srv.ClientURL())
	pub, _ := broker.NewPublisher(producer, nil)
	if _, err := pub.Close(context.Background(), broker.Target{Name: "/chat", ClientIDs: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if code, reason := closed.waitClose(); code != websocket.StatusNormalClosure || reason != "closed" {
		t.Errorf("producer close: %d %q, want 1000 closed", code, reason)
	}
	last := wsConnect(t, e, "/ws/chat?clientId=last", nil)
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code, reason := last.waitClose(); code != websocket.StatusServiceRestart || reason != "shutdown" {
		t.Errorf("shutdown: %d %q, want 1012 shutdown", code, reason)
	}
	// A draining edge refuses as one over its limits does: upgraded, then
	// closed at once with 1013, which a browser reports to the page.
	refused, err := dialWS(t, wsURL(e.srv.URL, "/ws/chat"), nil, true)
	if err != nil {
		t.Fatalf("dial while draining: %v", err)
	}
	if code, reason := refused.waitClose(); code != websocket.StatusTryAgainLater || reason != refuseDraining {
		t.Errorf("while draining: %d %q, want 1013 %q", code, reason, refuseDraining)
	}
	// The refusal holds nothing once its close handshake is answered.
	natstest.Eventually(t, 3*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "refuseWS")
	}, "the refused WebSocket's handler is still running")
}

func TestWSConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{WSReadLimit: -1}, "WSReadLimit"},
		{Config{WSInboundRate: -1}, "WSInboundRate"},
		{Config{WSInboundBurst: -1}, "WSInboundBurst"},
		{Config{WSOriginPatterns: []string{"[bad"}}, "WSOriginPatterns[0]"},
		{Config{WSOriginPatterns: []string{""}}, "WSOriginPatterns[0]"},
		{Config{WSEchoNames: []string{"/ok", "bad\nname"}}, "WSEchoNames[1]"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if err := (Config{WSOriginPatterns: []string{"*.example.com"}, WSEchoNames: []string{"*", "/chat"}}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	d := Config{}.withDefaults()
	if d.WSReadLimit != 64<<10 || d.WSInboundRate != 20 || d.WSInboundBurst != 40 {
		t.Errorf("defaults %d %v %d", d.WSReadLimit, d.WSInboundRate, d.WSInboundBurst)
	}
}

func TestWSResumeWithHistory(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{History: &broker.HistoryConfig{}})
	nc := natsConn(t, srv.ClientURL())
	natstest.Eventually(t, 10*time.Second, func() bool { return e.Ready() == nil }, "history not ready")
	c1 := wsConnect(t, e, "/ws/feed?clientId=r", v1())
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c1.snapshot()) > 0 && e.Connections() == 1 })
	var open struct {
		ID    string `json:"id"`
		Event string `json:"event"`
	}
	if err := json.Unmarshal([]byte(c1.snapshot()[0]), &open); err != nil || open.Event != "pode.open" {
		t.Fatalf("first message %q: %v", c1.snapshot()[0], err)
	}
	if _, err := broker.ParsePosition(open.ID); err != nil {
		t.Fatalf("pode.open id %q is not a position: %v", open.ID, err)
	}
	publishSeq(t, nc, "herald.ev./feed._._", 0, 3)
	natstest.Eventually(t, 10*time.Second, func() bool { return len(c1.snapshot()) == 4 },
		func() string { return fmt.Sprintf("have %q", c1.snapshot()) })
	var last struct {
		ID   string `json:"id"`
		Data int    `json:"data"`
	}
	if err := json.Unmarshal([]byte(c1.snapshot()[3]), &last); err != nil || last.Data != 2 {
		t.Fatalf("last message %q: %v", c1.snapshot()[3], err)
	}
	c1.close()

	// Missed while away; the lastEventId query parameter resumes.
	publishSeq(t, nc, "herald.ev./feed._._", 3, 4)
	c2 := wsConnect(t, e, "/ws/feed?clientId=r&lastEventId="+url.QueryEscape(last.ID), v1())
	natstest.Eventually(t, 10*time.Second, func() bool { return len(c2.snapshot()) >= 5 },
		func() string { return fmt.Sprintf("have %q", c2.snapshot()) })
	var got []int
	for _, m := range c2.snapshot()[1:] {
		var ev struct {
			Data int `json:"data"`
		}
		if err := json.Unmarshal([]byte(m), &ev); err != nil {
			t.Fatalf("message %q: %v", m, err)
		}
		got = append(got, ev.Data)
	}
	checkRun(t, got, 3, 7)
	// An id Herald cannot use is never refused (a refusal would end the
	// client's retries): the client is told with herald.gap.
	c3 := wsConnect(t, e, "/ws/feed?lastEventId="+url.QueryEscape("a\nb"), v1())
	natstest.Eventually(t, 10*time.Second, func() bool { return len(c3.snapshot()) >= 2 },
		func() string { return fmt.Sprintf("have %q", c3.snapshot()) })
	var gap struct {
		Event string `json:"event"`
		Data  struct {
			Reason string `json:"reason"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(c3.snapshot()[1]), &gap); err != nil || gap.Event != EventGap || gap.Data.Reason != gapMalformed {
		t.Fatalf("after an unusable lastEventId: %q (%v), want herald.gap malformed", c3.snapshot()[1], err)
	}
}
