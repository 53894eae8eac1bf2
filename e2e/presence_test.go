package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// Presence timing of the scenario: the defaults of cmd/edge, so that the
// bound it checks is the one README states.
const (
	heartbeat = broker.DefaultPresenceHeartbeat
	lostAfter = broker.DefaultPresenceLostAfter
	// lostBound is README's bound on the edge_lost events of a killed
	// edge whose first watcher is alive: LostAfter plus a heartbeat.
	lostBound = lostAfter + heartbeat
)

// stream is an SSE client that records what it receives in the background.
type stream struct {
	mu     sync.Mutex
	st     *sseclient.Stream
	events []sseclient.Event
	done   chan struct{}
}

func openStream(t *testing.T, url string, header http.Header) *stream {
	t.Helper()
	st, err := sseclient.Dial(context.Background(), nil, url, header)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	s := &stream{st: st, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			ev, err := st.Next()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.events = append(s.events, ev)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	_ = s.st.Close()
	<-s.done
}

func (s *stream) clientID() string { return s.st.Resp.Header.Get("X-Pode-Sse-Client-Id") }

func (s *stream) has(typ, data string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.events, func(ev sseclient.Event) bool { return ev.Type == typ && ev.Data == data })
}

// TestPresenceEdgeKilled: three edges, clients on each, kill -9 of one.
//
//   - Lookups (over NATS, answered by any edge) stop reporting the killed
//     edge's clients at once: only live edges answer.
//   - One disconnect event with reason edge_lost appears for each of its
//     connections, within LostAfter plus a heartbeat, and never twice.
//   - A connection closed cleanly before has exactly one disconnect.
//   - A Pode.Web-style page on the killed edge reconnects to another edge
//     with its Last-Event-ID, keeps its clientId, and receives the event
//     sent to that clientId while it was away.
func TestPresenceEdgeKilled(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	var edges []*edgeProc
	for i := range 3 {
		edges = append(edges, c.startEdge("-edge-id", fmt.Sprintf("edge%d", i), "-pode-web",
			"-signing-secret", "e2e-signing-secret", "-signing-strict"))
	}
	// Every edge knows the two others and watches them with a complete mirror.
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, e := range edges {
			for _, g := range []string{"herald_edge_presence_members", "herald_edge_presence_watched"} {
				if v, err := e.metric(g); err != nil || v != 2 {
					return fmt.Errorf("%s %s = %v (%v)", e.name, g, v, err)
				}
			}
		}
		return nil
	})
	nc := c.connect("presence-e2e")
	log := natstest.RecordLifecycle(t, nc)
	presence, err := broker.NewPresenceClient(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	const perEdge = 4
	streams := map[string]*stream{}
	signer := policy.Signer{Secret: "e2e-signing-secret", Strict: true}
	client := http.Header{"User-Agent": {"e2e client"}}
	for _, e := range edges {
		for i := range perEdge {
			id := fmt.Sprintf("%s-c%d", e.name, i)
			streams[id] = openStream(t, e.url+"/sse/Room?clientId="+url.QueryEscape(signer.Sign(id, "e2e client", "127.0.0.1")), client)
		}
	}
	list := func() (broker.ListReply, error) {
		return presence.List(ctx, broker.ListRequest{Name: "Room", Limit: 100})
	}
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		got, err := list()
		if err != nil || len(got.Connections) != 3*perEdge || len(got.Missing) != 0 {
			return fmt.Errorf("list: %d connections, missing %v, %v", len(got.Connections), got.Missing, err)
		}
		return nil
	})

	// A clean close: exactly one disconnect, by the edge that held it.
	streams["edge1-c0"].close()
	natstest.Eventually(t, 10*time.Second, func() bool {
		evs := log.Events(func(e broker.LifecycleEvent) bool {
			return policy.RawID(e.ClientID) == "edge1-c0" && e.Event == broker.EventDisconnect
		})
		return len(evs) == 1 && evs[0].Reason == "gone" && evs[0].Edge == "edge1"
	}, "no disconnect event for the cleanly closed connection")

	// A Pode.Web page on edge0 (strict signing binds its clientId to its
	// User-Agent and IP).
	ua := http.Header{"User-Agent": {"e2e Pode.Web page"}}
	page := openStream(t, edges[0].url+"/pode.web-dynamic/pages/page_home/sse-open", ua)
	pageID := page.clientID()
	if _, err := pub.Publish(ctx, broker.Target{Name: "Pode.Web.Actions", Groups: []string{"page_home"}},
		broker.Event{Type: "pode.web.action", Data: []byte(`{"Operation":"Update","ObjectType":"Text","ID":"status","Value":"ready"}`)}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		claimed, _, ok := strings.Cut(strings.TrimPrefix(page.st.LastEventID(), "~"), "~")
		return ok && claimed != "" && page.has("pode.web.action", `{"Operation":"Update","ObjectType":"Text","ID":"status","Value":"ready"}`)
	}, "the page never received its group's event with a kept id")
	openEvents := log.Events(func(e broker.LifecycleEvent) bool { return e.Edge == "edge0" && e.Event == broker.EventConnect })
	if len(openEvents) != perEdge+1 {
		t.Fatalf("%d connect events from edge0, want %d", len(openEvents), perEdge+1)
	}

	// kill -9 edge0.
	edges[0].kill(t)
	killed := time.Now()
	got, err := presence.Lookup(ctx, broker.LookupRequest{Name: "Room", ClientID: "edge0-c1"})
	if err != nil || got.Connected {
		t.Fatalf("right after the kill, a lookup reports edge0's client: %+v %v", got, err)
	}
	t.Logf("lookup right after the kill: connected=%v edges=%v missing=%v", got.Connected, got.Edges, got.Missing)

	// While the page is away: a toast for its clientId alone.
	<-page.done
	toast := `{"Operation":"Show","ObjectType":"Toast","Message":"sent while you were away","Title":"Herald","Duration":3000,"Icon":"information"}`
	if _, err := pub.Publish(ctx, broker.Target{Name: "Pode.Web.Actions", ClientIDs: []string{pageID}},
		broker.Event{Type: "pode.web.action", Data: []byte(toast)}); err != nil {
		t.Fatal(err)
	}
	// The page reconnects, as EventSource does, to whichever edge the
	// address leads to now, with its last event id.
	h := ua.Clone()
	h.Set("Last-Event-ID", page.st.LastEventID())
	back := openStream(t, edges[1].url+"/pode.web-dynamic/pages/page_home/sse-open", h)
	if back.clientID() != pageID {
		t.Fatalf("the page came back with clientId %q, want %q", back.clientID(), pageID)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return back.has("pode.web.action", toast) },
		"the toast sent to the page's clientId while it was away never arrived")

	// edge_lost disconnects for every connection edge0 held: its four
	// clients and the page's first connection.
	isLost := func(e broker.LifecycleEvent) bool { return e.Reason == broker.ReasonEdgeLost }
	natstest.Eventually(t, lostBound+10*time.Second, func() bool {
		evs := log.Events(isLost)
		return len(evs) >= perEdge+1
	}, func() string { evs := log.Events(isLost); return fmt.Sprintf("edge_lost events: %+v", evs) })
	_, _, at := log.Matching(isLost)
	last := slices.MaxFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	took := last.Sub(killed)
	t.Logf("edge_lost events for all %d connections of edge0 within %v of the kill (bound %v)", perEdge+1, took.Round(time.Millisecond), lostBound)
	if took > lostBound+2*time.Second { // the slack covers the race detector's slowness
		t.Errorf("edge_lost events took %v, over the bound %v", took, lostBound)
	}
	// The second watcher would publish two heartbeats after the first, had
	// it not seen the first's notice: wait longer than that, then count.
	hold(4 * heartbeat)
	lost := log.Events(isLost)
	seen := map[string]int{}
	for _, e := range lost {
		seen[e.Conn]++
		if e.Edge != "edge0" || (e.ReportedBy != "edge1" && e.ReportedBy != "edge2") || e.DisconnectedAt == nil {
			t.Errorf("edge_lost event %+v", e)
		}
	}
	for _, on := range openEvents {
		if seen[on.Conn] != 1 {
			t.Errorf("connection %s (%s) has %d edge_lost events, want 1", on.Conn, on.ClientID, seen[on.Conn])
		}
	}
	if len(lost) != len(openEvents) {
		t.Errorf("%d edge_lost events for %d connections", len(lost), len(openEvents))
	}
	if evs := log.Events(func(e broker.LifecycleEvent) bool {
		return policy.RawID(e.ClientID) == "edge1-c0" && e.Event == broker.EventDisconnect
	}); len(evs) != 1 {
		t.Errorf("the cleanly closed connection has %d disconnect events", len(evs))
	}

	// Once edge0 is known lost, answers are complete again and never
	// include its clients; the page is on edge1.
	natstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		got, err := list()
		if err != nil || len(got.Missing) != 0 {
			return fmt.Errorf("list: missing %v, %v", got.Missing, err)
		}
		for _, conn := range got.Connections {
			if conn.Edge == "edge0" {
				return fmt.Errorf("edge0's %s still listed", conn.ClientID)
			}
		}
		if len(got.Connections) != 2*perEdge-1 {
			return fmt.Errorf("%d connections listed, want %d", len(got.Connections), 2*perEdge-1)
		}
		return nil
	})
	resp, err := httpGetAuth(edges[2].url+"/presence?name=Pode.Web.Actions&clientId="+url.QueryEscape(pageID), c.token)
	if err != nil {
		t.Fatal(err)
	}
	var lk broker.LookupReply
	if err := json.Unmarshal([]byte(resp.body), &lk); err != nil || resp.code != http.StatusOK || !lk.Connected || lk.Connections[0].Edge != "edge1" {
		t.Fatalf("HTTP lookup of the page: %d %s", resp.code, resp.body)
	}
	for _, e := range edges[1:] {
		if line, ok := e.dataRaces(); ok {
			t.Errorf("%s: %s", e.name, line)
		}
	}
}

// httpGetAuth is a GET with the publish token.
func httpGetAuth(url, token string) (httpResp, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return httpResp{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := probeClient.Do(req)
	if err != nil {
		return httpResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return httpResp{code: resp.StatusCode, body: string(b)}, err
}
