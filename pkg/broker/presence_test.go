package broker_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/e2e/faultproxy"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// fakeEdge is a Presence with an in-memory connection list in place of an
// edge's registry.
type fakeEdge struct {
	id string
	nc *nats.Conn
	p  *broker.Presence

	mu    sync.Mutex
	conns map[string]broker.ConnInfo // by token
	n     int
}

func (f *fakeEdge) Lookup(name, id string, fn func(broker.ConnInfo)) {
	for _, c := range f.list() {
		if c.Name == name && policy.RawID(c.ClientID) == id {
			fn(c)
		}
	}
}

func (f *fakeEdge) Range(name, group string, fn func(broker.ConnInfo)) {
	for _, c := range f.list() {
		if (name == "" || c.Name == name) && (group == "" || strings.EqualFold(group, c.Group)) {
			fn(c)
		}
	}
}

func (f *fakeEdge) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

func (f *fakeEdge) list() []broker.ConnInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]broker.ConnInfo, 0, len(f.conns))
	for _, c := range f.conns {
		out = append(out, c)
	}
	return out
}

// connect registers a connection, then publishes its connect event, as an
// edge does.
func (f *fakeEdge) connect(t *testing.T, name, group, clientID, transport string) broker.ConnInfo {
	t.Helper()
	f.mu.Lock()
	f.n++
	c := broker.ConnInfo{Edge: f.id, Conn: fmt.Sprintf("%s-%d", f.id, f.n), Name: name, Group: group, ClientID: clientID,
		Transport: transport, Since: time.Now()}
	f.conns[c.Conn] = c
	f.mu.Unlock()
	if err := f.p.Connected(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// disconnect unregisters a connection, then publishes its disconnect event.
func (f *fakeEdge) disconnect(t *testing.T, c broker.ConnInfo, reason string) {
	t.Helper()
	f.mu.Lock()
	delete(f.conns, c.Conn)
	f.mu.Unlock()
	if err := f.p.Disconnected(&c, reason, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// fast is the timing of presence in tests: heartbeats every 50 ms, lost
// after 300 ms, answers awaited 250 ms.
func fast(o broker.PresenceOptions) broker.PresenceOptions {
	o.Heartbeat, o.LostAfter, o.Timeout = 50*time.Millisecond, 300*time.Millisecond, 250*time.Millisecond
	return o
}

// startFake starts a fake edge with its own NATS connection to url,
// connected with opts.
func startFake(t *testing.T, url, id string, o broker.PresenceOptions, opts ...nats.Option) *fakeEdge {
	t.Helper()
	nc := natstest.Connect(t, url, opts...)
	f := &fakeEdge{id: id, nc: nc, conns: map[string]broker.ConnInfo{}}
	o.Edge, o.Source = id, f
	p, err := broker.StartPresence(nc, fast(o))
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	t.Cleanup(p.Stop)
	return f
}

// kill makes a fake edge vanish as a killed process does: no goodbye, no
// more heartbeats or answers, its NATS connection gone.
func (f *fakeEdge) kill() {
	f.p.Stop()
	f.nc.Close()
}

// members waits until every edge knows every other one.
func members(t *testing.T, edges ...*fakeEdge) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, e := range edges {
			if got := len(e.p.Members()); got != len(edges)-1 {
				return fmt.Errorf("%s knows %v", e.id, e.p.Members())
			}
		}
		return nil
	})
}

// watching waits until each edge watches the ones it should with a
// complete mirror.
func watching(t *testing.T, want map[*fakeEdge][]string) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for e, w := range want {
			if got := e.p.Watched(); !slices.Equal(got, w) {
				return fmt.Errorf("%s watches %v, want %v", e.id, got, w)
			}
		}
		return nil
	})
}

// recordLifecycle records every lifecycle event on url.
func recordLifecycle(t *testing.T, url string) *natstest.LifecycleLog {
	t.Helper()
	return natstest.RecordLifecycle(t, natstest.Connect(t, url))
}

// Lookups, lists and checks are answered for the whole cluster by
// whichever edge takes the request, over NATS (the SDK) and locally.
func TestPresenceAcrossEdges(t *testing.T) {
	srv := natstest.StartServer(t)
	a := startFake(t, srv.ClientURL(), "a", broker.PresenceOptions{})
	b := startFake(t, srv.ClientURL(), "b", broker.PresenceOptions{})
	c := startFake(t, srv.ClientURL(), "c", broker.PresenceOptions{})
	members(t, a, b, c)
	for i := range 25 {
		e := []*fakeEdge{a, b, c}[i%3]
		group := "even"
		if i%2 == 1 {
			group = "Odd"
		}
		e.connect(t, "Orders", group, fmt.Sprintf("client-%02d", i), "sse_h1")
	}
	ws := b.connect(t, "Orders", "", "ws-client", "ws")
	c.connect(t, "Other", "", "client-00", "sse_h2")

	client, err := broker.NewPresenceClient(natstest.Connect(t, srv.ClientURL()), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("lookup", func(t *testing.T) {
		got, err := client.Lookup(ctx, broker.LookupRequest{Name: "Orders", ClientID: "client-07"})
		if err != nil {
			t.Fatal(err)
		}
		if !got.Connected || len(got.Connections) != 1 || got.Connections[0].Edge != "b" || got.Connections[0].Group != "Odd" {
			t.Fatalf("lookup %+v", got)
		}
		if !slices.Equal(got.Edges, []string{"a", "b", "c"}) || len(got.Missing) != 0 {
			t.Fatalf("coverage %+v", got.Coverage)
		}
		if got.Connections[0].Since.IsZero() || got.Connections[0].Transport != "sse_h1" {
			t.Fatalf("connection %+v", got.Connections[0])
		}
		// Group narrows; a signed form finds the raw id; another name is another client.
		for _, tc := range []struct {
			req  broker.LookupRequest
			want bool
		}{
			{broker.LookupRequest{Name: "Orders", ClientID: "client-07", Group: "ODD"}, true},
			{broker.LookupRequest{Name: "Orders", ClientID: "client-07", Group: "even"}, false},
			{broker.LookupRequest{Name: "Orders", ClientID: "s:client-07.c2ln"}, true},
			{broker.LookupRequest{Name: "Orders", ClientID: "nobody"}, false},
			{broker.LookupRequest{Name: "Other", ClientID: "client-01"}, false},
		} {
			got, err := a.p.Lookup(ctx, tc.req)
			if err != nil || got.Connected != tc.want {
				t.Errorf("lookup %+v: %+v, %v; want connected=%v", tc.req, got, err, tc.want)
			}
		}
	})

	t.Run("list pages", func(t *testing.T) {
		var all []broker.ConnInfo
		after := ""
		for page := 0; ; page++ {
			got, err := client.List(ctx, broker.ListRequest{Name: "Orders", After: after, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Connections) > 10 || page > 5 {
				t.Fatalf("page %d has %d connections", page, len(got.Connections))
			}
			all = append(all, got.Connections...)
			if got.Next == "" {
				break
			}
			after = got.Next
		}
		if len(all) != 26 {
			t.Fatalf("listed %d connections, want 26", len(all))
		}
		ids := make([]string, len(all))
		for i, c := range all {
			ids[i] = c.ClientID
		}
		if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != 26 {
			t.Fatalf("pages not in order or with repeats: %v", ids)
		}
		odd, err := client.List(ctx, broker.ListRequest{Name: "Orders", Group: "odd", Limit: 100})
		if err != nil || len(odd.Connections) != 12 || odd.Next != "" {
			t.Fatalf("group odd: %d connections, next %q, %v", len(odd.Connections), odd.Next, err)
		}
	})

	t.Run("check", func(t *testing.T) {
		cases := []struct {
			req    broker.CheckRequest
			status int
			msg    string
		}{
			{broker.CheckRequest{}, http.StatusNoContent, ""},
			{broker.CheckRequest{ClientID: "client-03", Group: "odd"}, http.StatusBadRequest,
				"Invalid SSE headers supplied, missing required X-Pode-Sse-Name HTTP header"},
			{broker.CheckRequest{ClientID: "client-03", Name: "Orders", Group: "even,,x"}, http.StatusNotFound,
				"The SSE client connection being referenced does not exist, Name: Orders, Group: even,x, ClientId: client-03"},
			{broker.CheckRequest{ClientID: "client-03", Name: "Orders", Group: "x,ODD"}, http.StatusOK, ""},
			{broker.CheckRequest{ClientID: "client-03", Name: "Orders"}, http.StatusOK, ""},
			{broker.CheckRequest{ClientID: "ws-client", Name: "Orders"}, http.StatusNotFound,
				"The SSE client connection being referenced does not exist, Name: Orders, Group: , ClientId: ws-client"},
			{broker.CheckRequest{Kind: broker.CheckSignal, ClientID: "ws-client", Name: "Orders"}, http.StatusOK, ""},
		}
		for _, tc := range cases {
			got, err := client.Check(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.status || got.Message != tc.msg {
				t.Errorf("check %+v: %d %q, want %d %q", tc.req, got.Status, got.Message, tc.status, tc.msg)
			}
			if tc.status == http.StatusOK && (got.Identity == nil || got.Identity.ClientID != tc.req.ClientID) {
				t.Errorf("check %+v: identity %+v", tc.req, got.Identity)
			}
		}
		if got, _ := client.Check(ctx, broker.CheckRequest{Kind: broker.CheckSignal, ClientID: ws.ClientID, Name: "Orders"}); got.Identity == nil || got.Identity.Conn != ws.Conn {
			t.Errorf("signal check identity %+v, want %s", got.Identity, ws.Conn)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		if _, err := client.Lookup(ctx, broker.LookupRequest{Name: "", ClientID: "x"}); !isCode(err, broker.CodeInvalid) {
			t.Errorf("lookup without a name: %v", err)
		}
		if _, err := client.List(ctx, broker.ListRequest{Name: "Orders", After: "%%%"}); !isCode(err, broker.CodeInvalid) {
			t.Errorf("list with a foreign cursor: %v", err)
		}
		if _, err := client.List(ctx, broker.ListRequest{Name: "Orders", Limit: broker.MaxListLimit + 1}); !isCode(err, broker.CodeInvalid) {
			t.Errorf("list over the limit: %v", err)
		}
		if _, err := client.Check(ctx, broker.CheckRequest{Kind: "cookie", ClientID: "x", Name: "y"}); !isCode(err, broker.CodeInvalid) {
			t.Errorf("check of an unknown kind: %v", err)
		}
		m, err := natstest.Connect(t, srv.ClientURL()).Request("herald.sys.presence.lookup", []byte(`{"name":"Orders","clientId":"x","bogus":1}`), 5*time.Second)
		if err != nil || !strings.Contains(string(m.Data), `"code":"invalid"`) {
			t.Errorf("a request with an unknown field: %v %s", err, m.Data)
		}
	})
}

func isCode(err error, code broker.ErrorCode) bool {
	e, ok := err.(*broker.Error)
	return ok && e.Code == code
}

// Every connection has one connect event and one disconnect event, on
// subjects a consumer can filter, numbered per edge.
func TestLifecycleEvents(t *testing.T) {
	srv := natstest.StartServer(t)
	log := recordLifecycle(t, srv.ClientURL())
	a := startFake(t, srv.ClientURL(), "edge.a", broker.PresenceOptions{})
	c1 := a.connect(t, "Pode.Web.Actions", "Page_Home", "s:5d12.sig=", "sse_h1")
	c2 := a.connect(t, "/chat", "", "c2", "ws")
	time.Sleep(5 * time.Millisecond) // a connection that lasts a few milliseconds
	a.disconnect(t, c1, "gone")
	natstest.Eventually(t, 5*time.Second, func() bool { return len(log.Events(func(broker.LifecycleEvent) bool { return true })) == 3 })

	events, msgs, _ := log.Matching(func(broker.LifecycleEvent) bool { return true })
	wantSubjects := []string{
		"herald.sys.lifecycle.connect.edge%2Ea.Pode%2EWeb%2EActions.page_home.5d12",
		"herald.sys.lifecycle.connect.edge%2Ea./chat._.c2",
		"herald.sys.lifecycle.disconnect.edge%2Ea.Pode%2EWeb%2EActions.page_home.5d12",
	}
	for i, m := range msgs {
		if m.Subject != wantSubjects[i] {
			t.Errorf("event %d on %s, want %s", i, m.Subject, wantSubjects[i])
		}
		if got := m.Header.Get(broker.HeaderSeq); got != fmt.Sprint(i+1) {
			t.Errorf("event %d numbered %q", i, got)
		}
		if m.Header.Get(broker.HeaderIncarnation) == "" || m.Header.Get(broker.HeaderConn) != events[i].Conn {
			t.Errorf("event %d headers %v", i, m.Header)
		}
	}
	on, off := events[0], events[2]
	if on.Event != broker.EventConnect || on.Edge != "edge.a" || on.Conn != c1.Conn || on.Name != "Pode.Web.Actions" ||
		on.Group != "Page_Home" || on.ClientID != "s:5d12.sig=" || on.Transport != "sse_h1" || !on.Since.Equal(c1.Since) || on.Reason != "" {
		t.Errorf("connect %+v", on)
	}
	if off.Event != broker.EventDisconnect || off.Reason != "gone" || off.DisconnectedAt == nil || off.DurationMS < 5 ||
		off.DurationMS != off.DisconnectedAt.Sub(c1.Since).Milliseconds() || off.ReportedBy != "" {
		t.Errorf("disconnect %+v", off)
	}
	if events[1].Conn != c2.Conn || events[1].Group != "" {
		t.Errorf("second connect %+v", events[1])
	}
}

// An edge killed without a goodbye: lookups stop reporting its
// connections at once, and one of its watchers publishes one edge_lost
// disconnect for each of them, once. A clean stop publishes nothing.
func TestEdgeLost(t *testing.T) {
	srv := natstest.StartServer(t)
	log := recordLifecycle(t, srv.ClientURL())
	a := startFake(t, srv.ClientURL(), "a", broker.PresenceOptions{})
	b := startFake(t, srv.ClientURL(), "b", broker.PresenceOptions{})
	c := startFake(t, srv.ClientURL(), "c", broker.PresenceOptions{})
	members(t, a, b, c)
	watching(t, map[*fakeEdge][]string{a: {"b", "c"}, b: {"a", "c"}, c: {"a", "b"}})
	var onB []broker.ConnInfo
	for i := range 5 {
		onB = append(onB, b.connect(t, "Orders", "", fmt.Sprintf("b%d", i), "sse_h1"))
	}
	closed := b.connect(t, "Orders", "", "closed-cleanly", "sse_h1")
	b.disconnect(t, closed, "closed")
	a.connect(t, "Orders", "", "a0", "sse_h1")
	ctx := context.Background()
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		got, err := a.p.List(ctx, broker.ListRequest{Name: "Orders"})
		if err != nil || len(got.Connections) != 6 {
			return fmt.Errorf("list %+v %v", got, err)
		}
		return nil
	})
	// Once the server delivered b's events, the watchers (ready, see
	// watching) receive them before they can find b silent.
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(log.Events(func(e broker.LifecycleEvent) bool { return e.Edge == "b" })) == 7
	})

	b.kill()
	killed := time.Now()
	got, err := a.p.Lookup(ctx, broker.LookupRequest{Name: "Orders", ClientID: "b0"})
	if err != nil || got.Connected || !slices.Equal(got.Missing, []string{"b"}) {
		t.Fatalf("right after the kill, b0 is reported, or b is not missing: %+v %v", got, err)
	}
	lost := func() []broker.LifecycleEvent {
		return log.Events(func(e broker.LifecycleEvent) bool { return e.Reason == broker.ReasonEdgeLost })
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(lost()) == len(onB) }, func() string {
		return fmt.Sprintf("edge_lost events: %+v", lost())
	})
	bound := time.Since(killed)
	// The second watcher would publish two heartbeats after the first:
	// give it four before counting.
	time.Sleep(200 * time.Millisecond)
	events := lost()
	if len(events) != len(onB) {
		t.Fatalf("%d edge_lost events for %d connections: %+v", len(events), len(onB), events)
	}
	for _, c := range onB {
		n := 0
		for _, e := range events {
			if e.Conn == c.Conn {
				n++
				if e.Edge != "b" || e.ClientID != c.ClientID || (e.ReportedBy != "a" && e.ReportedBy != "c") || e.DisconnectedAt == nil || e.Seq != 0 {
					t.Errorf("edge_lost event %+v", e)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d disconnects", c.Conn, n)
		}
	}
	if n := len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == closed.Conn && e.Event == broker.EventDisconnect })); n != 1 {
		t.Errorf("the connection closed before the kill has %d disconnects, want 1", n)
	}
	t.Logf("edge_lost events for all %d connections %v after the kill (lost after %v)", len(onB), bound.Round(time.Millisecond), 300*time.Millisecond)

	// The survivors forget b and watch each other.
	members(t, a, c)
	watching(t, map[*fakeEdge][]string{a: {"c"}, c: {"a"}})

	// A clean stop: disconnects by the edge itself, then its goodbye; the
	// watchers publish nothing.
	cc := c.connect(t, "Orders", "", "c0", "sse_h1")
	c.disconnect(t, cc, "shutdown")
	c.p.Bye()
	c.p.Stop()
	natstest.Eventually(t, 5*time.Second, func() bool { return len(a.p.Members()) == 0 }, func() string { return fmt.Sprintf("a still knows %v", a.p.Members()) })
	time.Sleep(4 * 300 * time.Millisecond) // longer than LostAfter and the second watcher's wait
	if n := len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == cc.Conn })); n != 2 {
		t.Errorf("c0 has %d lifecycle events after a clean stop, want 2", n)
	}
	if n := len(lost()); n != len(onB) {
		t.Errorf("%d edge_lost events after a clean stop, want still %d", n, len(onB))
	}
}

// An edge restarted under the same id is a new incarnation: its watchers
// publish the old one's disconnects without waiting for LostAfter.
func TestEdgeRestarted(t *testing.T) {
	srv := natstest.StartServer(t)
	log := recordLifecycle(t, srv.ClientURL())
	a := startFake(t, srv.ClientURL(), "a", broker.PresenceOptions{})
	b := startFake(t, srv.ClientURL(), "b", broker.PresenceOptions{})
	members(t, a, b)
	watching(t, map[*fakeEdge][]string{a: {"b"}, b: {"a"}})
	old := b.connect(t, "Orders", "", "x", "sse_h1")
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == old.Conn })) == 1
	})

	b.kill()
	o := fast(broker.PresenceOptions{})
	o.LostAfter = time.Minute // only the new incarnation can reveal the old one's end
	nc := natstest.Connect(t, srv.ClientURL())
	b2 := &fakeEdge{id: "b", nc: nc, conns: map[string]broker.ConnInfo{}}
	o.Edge, o.Source = "b", b2
	p, err := broker.StartPresence(nc, o)
	if err != nil {
		t.Fatal(err)
	}
	b2.p = p
	t.Cleanup(p.Stop)
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == old.Conn && e.Reason == broker.ReasonEdgeLost })) == 1
	}, "no edge_lost event for the old incarnation's connection")
}

// An edge cut off from NATS for longer than LostAfter is reported lost;
// when it comes back it is told, and announces its connections again
// (restored), since its clients never left.
func TestEdgeCutOffAndBack(t *testing.T) {
	srv := natstest.StartServer(t)
	log := recordLifecycle(t, srv.ClientURL())
	a := startFake(t, srv.ClientURL(), "a", broker.PresenceOptions{})
	proxy, err := faultproxy.New("127.0.0.1:0", strings.TrimPrefix(srv.ClientURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	nc := natstest.Connect(t, "nats://"+proxy.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	b := &fakeEdge{id: "b", nc: nc, conns: map[string]broker.ConnInfo{}}
	o := fast(broker.PresenceOptions{Edge: "b", Source: b})
	if b.p, err = broker.StartPresence(nc, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.p.Stop)
	members(t, a, b)
	watching(t, map[*fakeEdge][]string{a: {"b"}, b: {"a"}})
	x := b.connect(t, "Orders", "", "x", "sse_h1")
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == x.Conn })) == 1
	})

	proxy.Cut()
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == x.Conn && e.Reason == broker.ReasonEdgeLost })) == 1
	}, "no edge_lost event while b is cut off")
	proxy.Pass()
	natstest.Eventually(t, 10*time.Second, func() bool {
		return len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == x.Conn && e.Restored })) == 1
	}, "b did not announce its connection again")
	got, err := a.p.Lookup(context.Background(), broker.LookupRequest{Name: "Orders", ClientID: "x"})
	if err != nil || !got.Connected {
		t.Fatalf("after b came back: %+v %v", got, err)
	}
	// Told once: no second round of restorations.
	time.Sleep(300 * time.Millisecond)
	if n := len(log.Events(func(e broker.LifecycleEvent) bool { return e.Conn == x.Conn && e.Restored })); n != 1 {
		t.Errorf("%d restored connects, want 1", n)
	}
}
