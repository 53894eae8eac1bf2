package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// fastPresence makes the edges of a test notice each other (and a lost
// one) quickly.
func fastPresence(cfg Config) Config {
	cfg.PresenceHeartbeat, cfg.PresenceLostAfter, cfg.PresenceTimeout = 50*time.Millisecond, 600*time.Millisecond, time.Second
	return cfg
}

// knowEachOther waits until every edge has heard from every other one.
func knowEachOther(t *testing.T, edges ...*testEdge) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, e := range edges {
			if got := e.presence.Members(); len(got) != len(edges)-1 {
				return fmt.Errorf("edge %s knows %v", e.cfg.EdgeID, got)
			}
		}
		return nil
	})
}

// getJSON sends a GET with the publish token and decodes a JSON answer.
func getJSON(t *testing.T, te *testEdge, path string, header http.Header, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, te.srv.URL+path, nil)
	for k, vs := range header {
		req.Header[k] = vs
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && len(b) > 0 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d %q: %v", path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// Lookups and lists over HTTP on one edge see the connections of every
// edge; the endpoints need the publish token.
func TestPresenceHTTP(t *testing.T) {
	srv := natstest.StartServer(t)
	a := startEdge(t, srv.ClientURL(), fastPresence(Config{EdgeID: "edge-a"}))
	b := startEdge(t, srv.ClientURL(), fastPresence(Config{EdgeID: "edge-b"}))
	knowEachOther(t, a, b)
	connect(t, a, "/sse/Orders?clientId=c1&group=Admins", nil)
	connect(t, b, "/sse/Orders?clientId=c2", nil)
	wsConnect(t, b, "/ws/Orders?clientId=c3", nil)

	var got broker.LookupReply
	if code := getJSON(t, a, "/presence?name=Orders&clientId=c2", nil, &got); code != http.StatusOK {
		t.Fatalf("lookup: %d", code)
	}
	if !got.Connected || got.Connections[0].Edge != "edge-b" || got.Connections[0].Transport != "sse_h1" ||
		time.Since(got.Connections[0].Since) > time.Minute || !slices.Equal(got.Edges, []string{"edge-a", "edge-b"}) {
		t.Fatalf("lookup c2: %+v", got)
	}
	got = broker.LookupReply{}
	getJSON(t, b, "/presence?name=Orders&clientId=c1&group=admins", nil, &got)
	if !got.Connected || got.Connections[0].Group != "Admins" {
		t.Fatalf("lookup c1 in admins: %+v", got)
	}
	got = broker.LookupReply{}
	getJSON(t, b, "/presence?name=Orders&clientId=c1&group=other", nil, &got)
	if got.Connected {
		t.Fatalf("c1 found in another group: %+v", got)
	}
	got = broker.LookupReply{}
	getJSON(t, a, "/presence?name=%2FOrders&clientId=c3", nil, &got)
	if !got.Connected || got.Connections[0].Transport != "ws" {
		t.Fatalf("lookup of the WebSocket client (name /Orders): %+v", got)
	}

	var list broker.ListReply
	getJSON(t, b, "/presence?name=Orders&limit=1", nil, &list)
	if len(list.Connections) != 1 || list.Connections[0].ClientID != "c1" || list.Next == "" {
		t.Fatalf("first page: %+v", list)
	}
	after := list.Next
	list = broker.ListReply{}
	getJSON(t, b, "/presence?name=Orders&limit=1&after="+after, nil, &list)
	if len(list.Connections) != 1 || list.Connections[0].ClientID != "c2" || list.Next != "" {
		t.Fatalf("second page: %+v", list)
	}

	for _, tc := range []struct {
		path   string
		header http.Header
		status int
	}{
		{"/presence?name=Orders&clientId=c1", http.Header{"Authorization": {"Bearer wrong-token"}}, http.StatusUnauthorized},
		{"/presence?name=&clientId=c1", nil, http.StatusBadRequest},
		{"/presence?name=Orders&limit=0", nil, http.StatusBadRequest},
		{"/presence?name=Orders&limit=5000", nil, http.StatusBadRequest},
		{"/presence?name=Orders&after=not-a-cursor!", nil, http.StatusBadRequest},
		{"/presence/check", http.Header{"Authorization": {"Bearer wrong-token"}}, http.StatusUnauthorized},
	} {
		var e map[string]string
		if code := getJSON(t, a, tc.path, tc.header, &e); code != tc.status || e["error"] == "" {
			t.Errorf("GET %s: %d %v, want %d with an error", tc.path, code, e, tc.status)
		}
	}
	if got := counter(t, a.reg, "herald_edge_presence_requests_total", "kind", "lookup"); got < 3 {
		t.Errorf("lookup requests counted %v", got)
	}
}

// checkCase is one request to GET /presence/check and Pode's answer.
type checkCase struct {
	name   string
	header http.Header
	status int
	msg    string
}

func runChecks(t *testing.T, te *testEdge, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got broker.CheckReply
			code := getJSON(t, te, "/presence/check", tc.header, &got)
			if code != tc.status || got.Message != tc.msg {
				t.Fatalf("%d %q, want %d %q", code, got.Message, tc.status, tc.msg)
			}
			if code == http.StatusOK && (got.Identity == nil || got.Identity.ClientID != tc.header.Get("X-Pode-Sse-Client-Id")) {
				t.Fatalf("identity %+v", got.Identity)
			}
		})
	}
}

func podeHeaders(id, name, group string, more ...string) http.Header {
	h := http.Header{}
	if id != "" {
		h.Set("X-PODE-SSE-CLIENT-ID", id)
	}
	if name != "" {
		h.Set("X-PODE-SSE-NAME", name)
	}
	if group != "" {
		h.Set("X-PODE-SSE-GROUP", group)
	}
	for i := 0; i+1 < len(more); i += 2 {
		h.Set(more[i], more[i+1])
	}
	return h
}

const (
	noNameMsg = "Invalid SSE headers supplied, missing required X-Pode-Sse-Name HTTP header"
	notFound  = "The SSE client connection being referenced does not exist, Name: %s, Group: %s, ClientId: %s"
	notValid  = "The X-PODE-SSE-CLIENT-ID value is not valid: "
)

// Pode's X-PODE-SSE-* request check, answered by an edge for a connection
// on another edge, with signing off, on and strict, in Pode's (2.13+)
// order: no clientId → nothing to check; no name → 400; no live
// connection with exactly that clientId in one of the groups → 404; a
// clientId that is not valid for the caller → 400; else 200.
func TestPodeHeaderCheck(t *testing.T) {
	const name, page = "Pode.Web.Actions", "page_home"
	open := func(t *testing.T, cfg Config, header http.Header) (url string, holder, checker *testEdge, id string) {
		t.Helper()
		url = natstest.StartServer(t).ClientURL()
		cfg.ExtraSSERoutes = []SSERoute{PodeWebRoute}
		holder = startEdge(t, url, fastPresence(cfg))
		checker = startEdge(t, url, fastPresence(cfg))
		knowEachOther(t, holder, checker)
		c := connect(t, holder, "/pode.web-dynamic/pages/"+page+"/sse-open", header)
		return url, holder, checker, c.stream.Resp.Header.Get("X-Pode-Sse-Client-Id")
	}

	t.Run("signing off", func(t *testing.T) {
		_, _, checker, id := open(t, Config{}, nil)
		forged := policy.Sign(id, "k")
		runChecks(t, checker, []checkCase{
			{"no clientId", podeHeaders("", name, page), http.StatusNoContent, ""},
			{"no name", podeHeaders(id, "", page), http.StatusBadRequest, noNameMsg},
			{"group not matching", podeHeaders(id, name, "page_other"), http.StatusNotFound, fmt.Sprintf(notFound, name, "page_other", id)},
			{"one of the groups", podeHeaders(id, name, "page_other,PAGE_HOME"), http.StatusOK, ""},
			{"no group", podeHeaders(id, name, ""), http.StatusOK, ""},
			{"empty groups dropped", podeHeaders(id, name, ",,"), http.StatusOK, ""},
			{"another name", podeHeaders(id, "Other", page), http.StatusNotFound, fmt.Sprintf(notFound, "Other", page, id)},
			{"no live connection", podeHeaders("gone-id", name, page), http.StatusNotFound, fmt.Sprintf(notFound, name, page, "gone-id")},
			// With signing off no connection has a signed-looking id: none exists.
			{"looks signed", podeHeaders(forged, name, page), http.StatusNotFound, fmt.Sprintf(notFound, name, page, forged)},
			{"valid", podeHeaders(id, name, page), http.StatusOK, ""},
		})
	})

	t.Run("signing on", func(t *testing.T) {
		signer := policy.Signer{Secret: "super-secret"}
		url, holder, checker, id := open(t, Config{Signing: signer}, nil)
		raw := policy.RawID(id)
		forged := policy.Sign(raw, "not-the-secret")
		runChecks(t, checker, []checkCase{
			{"no clientId", podeHeaders("", name, page), http.StatusNoContent, ""},
			{"no name", podeHeaders(id, "", page), http.StatusBadRequest, noNameMsg},
			{"group not matching", podeHeaders(id, name, "page_other"), http.StatusNotFound, fmt.Sprintf(notFound, name, "page_other", id)},
			// Pode keys connections by the signed id: an unsigned or
			// forged id names no connection.
			{"not signed", podeHeaders(raw, name, page), http.StatusNotFound, fmt.Sprintf(notFound, name, page, raw)},
			{"forged", podeHeaders(forged, name, page), http.StatusNotFound, fmt.Sprintf(notFound, name, page, forged)},
			{"no live connection", podeHeaders(signer.Sign("gone", "", ""), name, page), http.StatusNotFound,
				fmt.Sprintf(notFound, name, page, signer.Sign("gone", "", ""))},
			{"valid", podeHeaders(id, name, page), http.StatusOK, ""},
		})
		// An edge whose secret differs finds the connection, but the id
		// does not verify there: 400.
		other := startEdge(t, url, fastPresence(Config{Signing: policy.Signer{Secret: "rotated"}}))
		knowEachOther(t, holder, checker, other)
		runChecks(t, other, []checkCase{
			{"not verifying", podeHeaders(id, name, page), http.StatusBadRequest, notValid + id},
		})
	})

	t.Run("strict", func(t *testing.T) {
		signer := policy.Signer{Secret: "Sup3rS3cr37!", Strict: true}
		_, _, checker, id := open(t, Config{Signing: signer}, http.Header{"User-Agent": {"browser-A"}})
		caller := func(id, group, ua, ip string) http.Header {
			return podeHeaders(id, name, group, HeaderCheckUserAgent, ua, HeaderCheckIP, ip)
		}
		runChecks(t, checker, []checkCase{
			{"no clientId", caller("", page, "browser-A", "127.0.0.1"), http.StatusNoContent, ""},
			{"no name", podeHeaders(id, "", page, HeaderCheckUserAgent, "browser-A", HeaderCheckIP, "127.0.0.1"), http.StatusBadRequest, noNameMsg},
			{"group not matching", caller(id, "page_other", "browser-A", "127.0.0.1"), http.StatusNotFound, fmt.Sprintf(notFound, name, "page_other", id)},
			{"not signed", caller(policy.RawID(id), page, "browser-A", "127.0.0.1"), http.StatusNotFound, fmt.Sprintf(notFound, name, page, policy.RawID(id))},
			{"another User-Agent", caller(id, page, "browser-B", "127.0.0.1"), http.StatusBadRequest, notValid + id},
			{"another IP", caller(id, page, "browser-A", "10.0.0.7"), http.StatusBadRequest, notValid + id},
			{"no User-Agent or IP given", podeHeaders(id, name, page), http.StatusBadRequest, notValid + id},
			{"same User-Agent and IP", caller(id, page, "browser-A", "127.0.0.1"), http.StatusOK, ""},
		})
	})
}

// Pode.Web's sse-close route closes the page's connection, on whatever
// edge it is, after the same header check as Pode; the disconnect event
// says "closed".
func TestPodeWebSSEClose(t *testing.T) {
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "pode-web", Strict: true}
	cfg := fastPresence(Config{Signing: signer, ExtraSSERoutes: []SSERoute{PodeWebRoute}})
	a := startEdge(t, srv.ClientURL(), cfg)
	b := startEdge(t, srv.ClientURL(), cfg)
	knowEachOther(t, a, b)
	events := natstest.RecordLifecycle(t, natsConn(t, srv.ClientURL()))
	ua := http.Header{"User-Agent": {"browser-A"}}
	page := connect(t, a, "/pode.web-dynamic/pages/page_home/sse-open", ua)
	id := page.stream.Resp.Header.Get("X-Pode-Sse-Client-Id")

	post := func(header http.Header) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, b.srv.URL+"/pode.web-dynamic/pages/page_home/sse-close", strings.NewReader(""))
		req.Header = header
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	// Without a clientId: nothing to close. From another browser: the id
	// does not verify. A forged id: no such connection.
	if code, body := post(http.Header{}); code != http.StatusOK || body != "" {
		t.Fatalf("no clientId: %d %q", code, body)
	}
	if code, body := post(podeHeaders(id, "Pode.Web.Actions", "page_home", "User-Agent", "browser-B")); code != http.StatusBadRequest || body != notValid+id {
		t.Fatalf("another browser: %d %q", code, body)
	}
	forged := policy.Sign(policy.RawID(id), "guess")
	if code, body := post(podeHeaders(forged, "Pode.Web.Actions", "page_home", "User-Agent", "browser-A")); code != http.StatusNotFound ||
		body != fmt.Sprintf(notFound, "Pode.Web.Actions", "page_home", forged) {
		t.Fatalf("forged: %d %q", code, body)
	}
	if page.isClosed() {
		t.Fatal("a refused sse-close closed the connection")
	}
	// The page itself, on unload (Pode.Web's sendAjaxReq headers).
	if code, body := post(podeHeaders(id, "Pode.Web.Actions", "page_home", "User-Agent", "browser-A")); code != http.StatusOK || body != "" {
		t.Fatalf("sse-close: %d %q", code, body)
	}
	page.waitFor(func(ev sseclient.Event) bool { return ev.Type == "pode.close" }, "pode.close")
	page.waitClosed()
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(events.Events(func(e broker.LifecycleEvent) bool { return e.Event == broker.EventDisconnect && e.Reason == "closed" })) == 1
	}, "no disconnect event with reason closed")
	if got := counter(t, b.reg, "herald_edge_presence_requests_total", "kind", "close"); got != 1 {
		t.Errorf("closes counted %v", got)
	}
	if got := counter(t, b.reg, "herald_edge_presence_requests_total", "kind", "close_refused"); got != 2 {
		t.Errorf("refused closes counted %v", got)
	}
}

// Each connection of a real edge has one connect and one disconnect
// event, with the reason of its close; a clean shutdown publishes the
// disconnects itself and no edge_lost.
func TestLifecycleOfEdgeConnections(t *testing.T) {
	srv := natstest.StartServer(t)
	events := natstest.RecordLifecycle(t, natsConn(t, srv.ClientURL()))
	watcher := startEdge(t, srv.ClientURL(), fastPresence(Config{EdgeID: "watcher"}))
	e := startEdge(t, srv.ClientURL(), fastPresence(Config{EdgeID: "edge-1"}))
	knowEachOther(t, watcher, e)
	pub := natsConn(t, srv.ClientURL())

	left := connect(t, e, "/sse/Chat?clientId=left&group=Room", nil)
	closed := connect(t, e, "/sse/Chat?clientId=closed", nil)
	replaced := connect(t, e, "/sse/Chat?clientId=dup", nil)
	connect(t, e, "/sse/Chat?clientId=dup", nil)
	stays := connect(t, e, "/sse/Chat?clientId=stays", nil)
	left.close()
	if err := pub.PublishMsg(broker.NewCloseMsg("herald.ev.Chat._.closed")); err != nil {
		t.Fatal(err)
	}
	closed.waitClosed()
	replaced.waitClosed()
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(events.Events(func(e broker.LifecycleEvent) bool { return e.Event == broker.EventDisconnect })) == 3
	}, "three disconnects")
	reasons := map[string]string{}
	for _, ev := range events.Events(func(e broker.LifecycleEvent) bool { return e.Event == broker.EventDisconnect }) {
		reasons[ev.ClientID] = ev.Reason
		if ev.Edge != "edge-1" || ev.Transport != "sse_h1" || ev.DisconnectedAt == nil {
			t.Errorf("disconnect %+v", ev)
		}
	}
	if want := map[string]string{"left": "gone", "closed": "closed", "dup": "replaced"}; fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Errorf("disconnect reasons %v, want %v", reasons, want)
	}
	if on := events.Events(func(e broker.LifecycleEvent) bool { return e.Event == broker.EventConnect }); len(on) != 5 || on[0].Group != "Room" {
		t.Errorf("connects %+v", on)
	}

	e.stop(t)
	stays.waitClosed()
	natstest.Eventually(t, 5*time.Second, func() bool { return len(watcher.presence.Members()) == 0 }, "the watcher still counts edge-1")
	time.Sleep(3 * watcher.cfg.PresenceLostAfter) // a lost edge would be reported by now
	if got := events.Events(func(e broker.LifecycleEvent) bool { return e.ClientID == "stays" && e.Event == broker.EventDisconnect }); len(got) != 1 || got[0].Reason != "shutdown" {
		t.Errorf("after a clean shutdown: %+v", got)
	}
	if got := events.Events(func(e broker.LifecycleEvent) bool { return e.Reason == broker.ReasonEdgeLost }); len(got) != 0 {
		t.Errorf("edge_lost after a clean shutdown: %+v", got)
	}
}
