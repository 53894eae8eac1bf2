package edge

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// A connection of a route that keeps clientIds writes, after each batch
// that moves its position, an id-only frame with the proof; it comes back
// with its clientId and receives what was sent to it meanwhile. A claim
// that does not verify gets a new clientId (and still resumes).
func TestKeepClientIDAcrossReconnect(t *testing.T) {
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "pode-web", Strict: true}
	e := startEdge(t, srv.ClientURL(), Config{Signing: signer, History: &broker.HistoryConfig{}, ExtraSSERoutes: []SSERoute{PodeWebRoute}})
	pub, _ := broker.NewPublisher(natsConn(t, srv.ClientURL()), &broker.PublisherOptions{Acked: true})
	ctx := context.Background()
	send := func(tg broker.Target, data string) {
		t.Helper()
		if _, err := pub.Publish(ctx, tg, broker.Event{Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	const path = "/pode.web-dynamic/pages/page_home/sse-open"
	ua := http.Header{"User-Agent": {"browser-A"}}
	c1 := connect(t, e, path, ua)
	id := c1.stream.Resp.Header.Get("X-Pode-Sse-Client-Id")
	open := c1.snapshot()[0]
	claimed, pos, err := parseSticky(open.ID)
	if err != nil || claimed != id {
		t.Fatalf("pode.open id %q does not carry the clientId: %v", open.ID, err)
	}
	if _, err := broker.ParsePosition(pos); err != nil {
		t.Fatalf("pode.open id %q has no position: %v", open.ID, err)
	}
	group := broker.Target{Name: "Pode.Web.Actions", Groups: []string{"page_home"}}
	mine := broker.Target{Name: "Pode.Web.Actions", ClientIDs: []string{id}}
	send(group, "g1")
	ev := c1.waitData("message", "g1")
	if _, err := broker.ParsePosition(ev.ID); err != nil {
		t.Fatalf("a shared event's id %q is not a plain position", ev.ID)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return c1.stream.LastEventID() == stickyIDFor(id, ev.ID) }, func() string {
		return fmt.Sprintf("last event id %q, want %q", c1.stream.LastEventID(), stickyIDFor(id, ev.ID))
	})
	last := c1.stream.LastEventID()
	c1.close()

	send(mine, "for-me-1")
	send(group, "g2")
	send(mine, "for-me-2")
	c2 := connect(t, e, path, http.Header{"User-Agent": {"browser-A"}, "Last-Event-ID": {last}})
	if got := c2.stream.Resp.Header.Get("X-Pode-Sse-Client-Id"); got != id {
		t.Fatalf("reconnected with clientId %q, want %q", got, id)
	}
	c2.waitData("message", "for-me-2")
	if got := c2.payloads("message"); !slices.Equal(got, []string{"for-me-1", "g2", "for-me-2"}) {
		t.Fatalf("after the reconnect: %v", got)
	}
	if got := counter(t, e.reg, "herald_edge_kept_client_ids_total", "result", "kept"); got != 1 {
		t.Errorf("kept = %v", got)
	}

	// The proof verifies only for the same browser (strict signing): from
	// another User-Agent the claim is refused, a new clientId is
	// assigned, and the position still resumes.
	last = c2.stream.LastEventID()
	c2.close()
	send(group, "g3")
	c3 := connect(t, e, path, http.Header{"User-Agent": {"browser-B"}, "Last-Event-ID": {last}})
	if got := c3.stream.Resp.Header.Get("X-Pode-Sse-Client-Id"); got == id {
		t.Fatal("another browser took the clientId")
	}
	c3.waitData("message", "g3")
	if got := counter(t, e.reg, "herald_edge_kept_client_ids_total", "result", "refused"); got != 1 {
		t.Errorf("refused = %v", got)
	}
	// A claim of a made-up id is refused the same way.
	fake := "~" + b64("s:nobody.AAAA") + "~"
	c4 := connect(t, e, path, http.Header{"User-Agent": {"browser-A"}, "Last-Event-ID": {fake}})
	if got := c4.stream.Resp.Header.Get("X-Pode-Sse-Client-Id"); got == "s:nobody.AAAA" {
		t.Fatal("a forged claim was accepted")
	}
}

// Without history the proof alone is kept: the clientId survives a
// reconnect (nothing is replayed: there is no history).
func TestKeepClientIDWithoutHistory(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{KeepClientID: true})
	nc := natsConn(t, srv.ClientURL())
	c1 := connect(t, e, "/sse/Feed", nil)
	id := c1.stream.Resp.Header.Get("X-Pode-Sse-Client-Id")
	if got := c1.snapshot()[0].ID; got != stickyIDFor(id, "") {
		t.Fatalf("pode.open id %q", got)
	}
	m := nats.NewMsg("herald.ev.Feed._._")
	m.Header.Set(broker.HeaderID, "producer-7")
	m.Data = []byte("x")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if ev := c1.waitData("message", "x"); ev.ID != "producer-7" {
		t.Fatalf("event id %q, want the producer's", ev.ID)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return c1.stream.LastEventID() == stickyIDFor(id, "") }, "the proof did not follow the producer's id")
	c1.close()
	c2 := connect(t, e, "/sse/Feed", http.Header{"Last-Event-ID": {stickyIDFor(id, "")}})
	if got := c2.stream.Resp.Header.Get("X-Pode-Sse-Client-Id"); got != id {
		t.Fatalf("clientId %q, want %q", got, id)
	}
}

// The exact bytes after a shared event on a kept connection: the event as
// every connection gets it, then the connection's own id-only block.
func TestKeepClientIDWireBytes(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{History: &broker.HistoryConfig{}, KeepClientID: true})
	nc := natsConn(t, srv.ClientURL())
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/sse/Feed?clientId=abc", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []byte
	readUntil := func(done func(string) bool) string {
		t.Helper()
		buf := make([]byte, 4096)
		for !done(string(got)) {
			n, err := resp.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("read %q: %v", got, err)
			}
		}
		return string(got)
	}
	open := readUntil(func(s string) bool { return strings.HasSuffix(s, `"name":"Feed"}`+"\r\n\r\n") })
	openID := strings.TrimPrefix(strings.SplitN(open, "\r\n", 2)[0], "id: ")
	if !strings.HasPrefix(openID, "~"+b64("abc")+"~") {
		t.Fatalf("pode.open %q does not carry the proof", open)
	}
	got = got[:0]
	if err := nc.Publish("herald.ev.Feed._._", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	s := readUntil(func(s string) bool { return strings.Count(s, "\r\n\r\n") == 2 })
	id := strings.TrimPrefix(strings.SplitN(s, "\r\n", 2)[0], "id: ")
	if _, err := broker.ParsePosition(id); err != nil {
		t.Fatalf("shared event id %q: %v", id, err)
	}
	if want := "id: " + id + "\r\ndata: hello\r\n\r\nid: ~" + b64("abc") + "~" + id + "\r\n\r\n"; s != want {
		t.Fatalf("bytes %q, want %q", s, want)
	}
}

func stickyIDFor(clientID, position string) string {
	return "~" + b64(clientID) + "~" + position
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// The id-only frame's buffer is reused only once no batch holds it: when a
// full socket puts part of a batch back, the next batch carries the old
// frame intact and gets a new one.
func TestStampBufferNotReusedWhileQueued(t *testing.T) {
	e := &Edge{cfg: Config{}.withDefaults()}
	c := benchConn(e, "n", "", "abc", nil)
	c.sticky = newSticky("abc")
	c.sticky.opened = true
	queue := func(frame string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.appendLocked([]byte(frame)) {
			t.Fatal("queue full")
		}
	}
	take := func() [][]byte {
		c.mu.Lock()
		c.out.writing = true // as the pool writer that claimed it
		c.mu.Unlock()
		return c.takeOpen()
	}
	queue("id: 1\r\ndata: a\r\n\r\n")
	first := take()
	if len(first) != 2 || string(first[1]) != "id: "+stickyIDFor("abc", "")+"\r\n\r\n" {
		t.Fatalf("first batch %q", first)
	}
	stamp := first[1]
	// The socket took nothing of the stamp: it goes back to the queue.
	c.poolWrote(first, first[1:], time.Now().UnixNano())
	queue("id: 2\r\ndata: b\r\n\r\n")
	second := take()
	if len(second) != 3 || &second[0][0] != &stamp[0] || &second[2][0] == &stamp[0] {
		t.Fatalf("second batch %q: the queued stamp was reused", second)
	}
	if string(second[0]) != string(second[2]) || string(second[0]) != "id: "+stickyIDFor("abc", "")+"\r\n\r\n" {
		t.Fatalf("second batch %q", second)
	}
	// Written in full: the next stamp reuses the buffer.
	latest := second[2]
	c.poolWrote(second, nil, time.Now().UnixNano())
	queue("id: 3\r\ndata: c\r\n\r\n")
	third := take()
	if len(third) != 2 || &third[1][0] != &latest[0] {
		t.Fatalf("third batch %q: the free buffer was not reused", third)
	}
}

// A batch of pings moves no id: no frame is added.
func TestStampOnlyAfterEvents(t *testing.T) {
	e := &Edge{cfg: Config{}.withDefaults()}
	c := benchConn(e, "n", "", "abc", nil)
	c.sticky = newSticky("abc")
	c.mu.Lock()
	defer c.mu.Unlock()
	open := []byte("id: " + stickyIDFor("abc", "") + "\r\nevent: pode.open\r\ndata: {}\r\n\r\n")
	if got := c.stampLocked([][]byte{open, framePing}); len(got) != 2 {
		t.Fatalf("first batch (pode.open and a ping) got a stamp: %q", got)
	}
	if got := c.stampLocked([][]byte{framePing}); len(got) != 1 {
		t.Fatalf("a ping got a stamp: %q", got)
	}
	if got := c.stampLocked([][]byte{framePing, []byte("id: 9\r\ndata: x\r\n\r\n")}); len(got) != 3 {
		t.Fatalf("an event got no stamp: %q", got)
	}
}
