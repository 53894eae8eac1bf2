package edge

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

func status(t *testing.T, te *testEdge, path string, header http.Header) (int, string) {
	t.Helper()
	_, err := sseclient.Dial(context.Background(), nil, te.srv.URL+path, header)
	if err == nil {
		t.Fatalf("connect %s succeeded, want an error status", path)
	}
	var se *sseclient.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("connect %s: %v", path, err)
	}
	return se.Code, se.Body
}

func TestSigning(t *testing.T) {
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "super-secret"}
	e := startEdge(t, srv.ClientURL(), Config{Signing: signer})

	// No clientId: one is assigned and signed.
	c := connect(t, e, "/sse/Events", nil)
	shown := c.stream.Resp.Header.Get("X-Pode-Sse-Client-Id")
	raw, err := signer.Verify(shown, "", "")
	if err != nil {
		t.Fatalf("assigned id %q does not verify: %v", shown, err)
	}
	if len(raw) != 36 {
		t.Errorf("raw id %q is not a GUID string", raw)
	}
	open := c.snapshot()[0]
	if !strings.Contains(open.Data, `"clientId":"`+shown+`"`) {
		t.Errorf("pode.open %s does not carry the signed id", open.Data)
	}

	// A Pode-signed id (PODE-WIRE.md vector 2) is accepted as-is.
	v2 := "s:5d12f974-7b1a-4524-ab93-6afbf42c4ffa.8qHWZA7dMwgbAO0uW3pncXp8U6YpaOJBiaXpPFqdVlg="
	c2 := connect(t, e, "/sse/Events?clientId="+url.QueryEscape(v2), nil)
	if got := c2.stream.Resp.Header.Get("X-Pode-Sse-Client-Id"); got != v2 {
		t.Errorf("client id header %q, want %q", got, v2)
	}
	// It is addressable by its raw id.
	pub := natsConn(t, srv.ClientURL())
	p, _ := broker.NewPublisher(pub, nil)
	if _, err := p.Publish(context.Background(), broker.Target{Name: "Events", ClientIDs: []string{"5d12f974-7b1a-4524-ab93-6afbf42c4ffa"}}, broker.Event{Data: []byte("for-v2")}); err != nil {
		t.Fatal(err)
	}
	c2.waitData("message", "for-v2")

	for _, tc := range []struct{ name, id, reason string }{
		{"unsigned", "plain-id", "must be signed"},
		{"forged", "s:5d12f974-7b1a-4524-ab93-6afbf42c4ffa.AAAAZA7dMwgbAO0uW3pncXp8U6YpaOJBiaXpPFqdVlg=", "does not verify"},
		{"malformed", "s:nodot", "not a well-formed"},
		{"other secret", policy.Sign("x", "other-secret"), "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := status(t, e, "/sse/Events?clientId="+url.QueryEscape(tc.id), nil)
			if code != http.StatusForbidden || !strings.Contains(body, tc.reason) {
				t.Fatalf("got %d %q, want 403 with %q", code, body, tc.reason)
			}
		})
	}
}

func TestStrictSigning(t *testing.T) {
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "Sup3rS3cr37!", Strict: true}
	e := startEdge(t, srv.ClientURL(), Config{Signing: signer})
	ua := http.Header{"User-Agent": {"browser-A"}}

	c := connect(t, e, "/sse/Events", ua)
	shown := c.stream.Resp.Header.Get("X-Pode-Sse-Client-Id")
	if _, err := signer.Verify(shown, "browser-A", "127.0.0.1"); err != nil {
		t.Fatalf("assigned id is not bound to UA and IP: %v", err)
	}
	c.close()

	// Same UA and IP: accepted again (a reconnect keeps its id).
	connect(t, e, "/sse/Events?clientId="+url.QueryEscape(shown), ua)

	// Another User-Agent: 403.
	code, _ := status(t, e, "/sse/Events?clientId="+url.QueryEscape(shown), http.Header{"User-Agent": {"browser-B"}})
	if code != http.StatusForbidden {
		t.Fatalf("UA change: status %d, want 403", code)
	}
	// Another IP: the id signed for 10.1.2.3 does not verify from 127.0.0.1.
	code, _ = status(t, e, "/sse/Events?clientId="+url.QueryEscape(signer.Sign("abc", "browser-A", "10.1.2.3")), ua)
	if code != http.StatusForbidden {
		t.Fatalf("IP change: status %d, want 403", code)
	}
}

func TestSignedIDWhileSigningOff(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	code, body := status(t, e, "/sse/Events?clientId="+url.QueryEscape(policy.Sign("x", "k")), nil)
	if code != http.StatusForbidden || !strings.Contains(body, "signing is off") {
		t.Fatalf("got %d %q", code, body)
	}
}

func TestReplaceAcrossEdges(t *testing.T) {
	a, b, producer := twoEdges(t, Config{})
	old := connect(t, a, "/sse/Events?clientId=dup", nil)
	neighbour := connect(t, a, "/sse/Events?clientId=other", nil)
	waitRoutedInterest(t, producer, "herald.ev.Events._._", old, neighbour)

	// The same name and clientId on the other edge replaces the old one.
	newer := connect(t, b, "/sse/Events?clientId=dup", nil)
	old.waitFor(func(ev sseclient.Event) bool { return ev.Type == "pode.close" }, "pode.close on the replaced connection")
	old.waitClosed()
	natstest.Eventually(t, 10e9, func() bool { return counter(t, a.reg, "herald_edge_disconnects_total", "reason", "replaced") == 1 })

	// Only the new connection gets events for that client now.
	p, _ := broker.NewPublisher(producer, nil)
	natstest.Eventually(t, 10e9, func() bool {
		_, _ = p.Publish(context.Background(), broker.Target{Name: "Events", ClientIDs: []string{"dup"}}, broker.Event{Data: []byte("to-dup")})
		return len(newer.payloads("message")) > 0
	})
	if neighbour.isClosed() {
		t.Fatal("an unrelated connection was closed")
	}

	// Same edge: replaced locally too.
	again := connect(t, b, "/sse/Events?clientId=dup", nil)
	newer.waitFor(func(ev sseclient.Event) bool { return ev.Type == "pode.close" }, "pode.close on local replace")
	if again.isClosed() {
		t.Fatal("the newest connection was closed")
	}
}

func TestBroadcastLevelsAtEdgeAndPublish(t *testing.T) {
	levels, err := policy.ParseLevels("Orders=clientid,*=group")
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{Levels: levels})
	orders := connect(t, e, "/sse/Orders?group=g1&clientId=o1", nil)
	news := connect(t, e, "/sse/News?group=g1&clientId=n1", nil)
	raw := natsConn(t, srv.ClientURL())

	// Raw NATS producers bypass the SDK: the edge drops violating messages.
	for _, subj := range []string{"herald.ev.Orders._._", "herald.ev.Orders.g1._", "herald.ev.News._._"} {
		if err := raw.Publish(subj, []byte("violation")); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.Publish("herald.ev.Orders._.o1", []byte("ok-orders")); err != nil {
		t.Fatal(err)
	}
	if err := raw.Publish("herald.ev.News.g1._", []byte("ok-news")); err != nil {
		t.Fatal(err)
	}
	orders.waitData("message", "ok-orders")
	news.waitData("message", "ok-news")
	for _, c := range []*client{orders, news} {
		for _, p := range c.payloads("message") {
			if p == "violation" {
				t.Fatal("a message violating the broadcast level was delivered")
			}
		}
	}
	if got := counter(t, e.reg, "herald_edge_dropped_total", "reason", "broadcast_level"); got != 3 {
		t.Fatalf("broadcast_level drops = %v, want 3", got)
	}

	// POST /publish refuses with 422 naming the level.
	code, body := publishHTTP(t, e, testToken, `{"name":"Orders","group":"g1","data":"x"}`)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "clientid") {
		t.Fatalf("publish: %d %s", code, body)
	}
	code, body = publishHTTP(t, e, testToken, `{"name":"News","data":"x"}`)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "group") {
		t.Fatalf("publish: %d %s", code, body)
	}
	// The SDK returns a typed error.
	p, _ := broker.NewPublisher(raw, &broker.PublisherOptions{Levels: levels})
	_, err = p.Publish(context.Background(), broker.Target{Name: "Orders"}, broker.Event{Data: []byte("x")})
	var le *policy.LevelError
	if !errors.As(err, &le) || le.Name != "Orders" || le.Level != policy.LevelClientID {
		t.Fatalf("SDK error %v, want a LevelError for Orders/clientid", err)
	}
}

func TestCloseByMessageAfterEarlierEvents(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	target := connect(t, e, "/sse/Events?group=g&clientId=t1", nil)
	keep := connect(t, e, "/sse/Events?group=h&clientId=t2", nil)
	raw := natsConn(t, srv.ClientURL())
	for i := 0; i < 50; i++ {
		if err := raw.Publish("herald.ev.Events._._", []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := broker.NewPublisher(raw, nil)
	if _, err := p.Close(context.Background(), broker.Target{Name: "Events", Groups: []string{"G"}}); err != nil {
		t.Fatal(err)
	}
	target.waitClosed()
	evs := target.snapshot()
	if n := len(target.payloads("message")); n != 50 {
		t.Fatalf("closed client got %d earlier events before closing, want 50", n)
	}
	if last := evs[len(evs)-1]; last.Type != "pode.close" {
		t.Fatalf("last event %+v, want pode.close", last)
	}
	if keep.isClosed() {
		t.Fatal("a client of another group was closed")
	}
	natstest.Eventually(t, 10e9, func() bool { return counter(t, e.reg, "herald_edge_disconnects_total", "reason", "closed") == 1 })
}
