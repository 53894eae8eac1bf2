package edge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
)

// twoEdges starts a 3-node NATS cluster and two edges on it, each edge
// connected to a different node, plus a plain nats.go producer connection.
func twoEdges(t *testing.T, cfg Config) (a, b *testEdge, producer *nats.Conn) {
	t.Helper()
	cl := natstest.StartCluster(t, 3)
	a = startEdge(t, cl.Nodes[0].ClientURL(), cfg)
	b = startEdge(t, cl.Nodes[1].ClientURL(), cfg)
	producer = cl.Connect(t)
	// Interest propagates across routes asynchronously; each edge holds
	// ev._.> from the start, so wait until the producer's node sees it.
	return a, b, producer
}

// waitRoutedInterest publishes probes on subject until every client has
// received one: the clients' interest has then reached the producer's node.
func waitRoutedInterest(t *testing.T, producer *nats.Conn, subject string, clients ...*client) {
	t.Helper()
	i := 0
	natstest.Eventually(t, 10*time.Second, func() bool {
		i++
		if err := producer.Publish(subject, []byte(fmt.Sprintf("probe-%d", i))); err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			if len(c.payloads("message")) == 0 {
				return false
			}
		}
		return true
	}, "interest in %s never reached the producer", subject)
}

func TestPlainNATSPublishReachesBothEdges(t *testing.T) {
	a, b, producer := twoEdges(t, Config{})
	ca := connect(t, a, "/sse/Events", nil)
	cb := connect(t, b, "/sse/Events", nil)
	waitRoutedInterest(t, producer, "herald.ev.Events._._", ca, cb)

	// A bare NATS message: no headers, no Herald library.
	if err := producer.Publish("herald.ev.Events._._", []byte(`{"D":1}`)); err != nil {
		t.Fatal(err)
	}
	// With headers: id and event type, header names cased differently.
	m := nats.NewMsg("herald.ev.Events._._")
	m.Header["herald-id"] = []string{"7"}
	m.Header["HERALD-EVENT"] = []string{"Date"}
	m.Data = []byte("hello")
	if err := producer.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{ca, cb} {
		c.waitData("message", `{"D":1}`)
		ev := c.waitData("Date", "hello")
		if ev.ID != "7" {
			t.Errorf("id = %q, want 7", ev.ID)
		}
	}
}

func TestOpenEventAndHeaders(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{Retry: 5 * time.Second})
	s, err := sseclient.Dial(context.Background(), nil, e.srv.URL+"/sse/Events?group=Admins&clientId=my-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := s.Resp.Header
	for k, want := range map[string]string{
		"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
		"X-Pode-Sse-Client-Id": "my-id", "X-Pode-Sse-Name": "Events", "X-Pode-Sse-Group": "Admins",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	ev, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "pode.open" || ev.Retry != 5000 {
		t.Fatalf("first event %+v, want pode.open with retry 5000", ev)
	}
	if ev.Data != `{"clientId":"my-id","group":"Admins","name":"Events"}` {
		t.Fatalf("pode.open data = %s", ev.Data)
	}
}

// TestWireBytes reads the raw socket: CRLF framing and Pode's byte layout.
func TestWireBytes(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{Retry: 5 * time.Second})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /sse/Events?group=admins&clientId=c1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	r := bufio.NewReader(conn)
	status, _ := r.ReadString('\n')
	if status != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("status line %q", status)
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
		if strings.HasPrefix(strings.ToLower(l), "content-length") || strings.HasPrefix(strings.ToLower(l), "transfer-encoding") {
			t.Errorf("unexpected framing header %q", l)
		}
	}
	want := "retry: 5000\r\nevent: pode.open\r\ndata: {\"clientId\":\"c1\",\"group\":\"admins\",\"name\":\"Events\"}\r\n\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("open bytes\n got %q\nwant %q", got, want)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 1 })
	pub := natsConn(t, srv.ClientURL())
	m := broker.NewMsg("herald.ev.Events._._", broker.Event{ID: "7", Type: "Date", Data: []byte(`{"D":1}`)})
	if err := pub.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	want = "id: 7\r\nevent: Date\r\ndata: {\"D\":1}\r\n\r\n"
	got = make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("event bytes\n got %q\nwant %q", got, want)
	}
}

func TestTargeting(t *testing.T) {
	a, b, producer := twoEdges(t, Config{})
	// Four clients of one name over two edges, two groups (differently cased).
	admin1 := connect(t, a, "/sse/Chat?group=Admins&clientId=admin1", nil)
	admin2 := connect(t, b, "/sse/Chat?group=admins&clientId=admin2", nil)
	user1 := connect(t, a, "/sse/Chat?group=users&clientId=user1", nil)
	nogroup := connect(t, b, "/sse/Chat?clientId=solo", nil)
	other := connect(t, a, "/sse/Other?clientId=admin1", nil)
	all := []*client{admin1, admin2, user1, nogroup}
	waitRoutedInterest(t, producer, "herald.ev.Chat._._", all...)

	pub, err := broker.NewPublisher(producer, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	send := func(tg broker.Target, data string) {
		t.Helper()
		if _, err := pub.Publish(ctx, tg, broker.Event{Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	send(broker.Target{Name: "Chat", Groups: []string{"ADMINS"}}, "to-admins")
	send(broker.Target{Name: "Chat", ClientIDs: []string{"user1", "solo"}}, "to-two-clients")
	send(broker.Target{Name: "Chat", Groups: []string{"admins"}, ClientIDs: []string{"admin1", "user1"}}, "admins-and-ids")
	send(broker.Target{Name: "Chat", Groups: []string{"users"}, ClientIDs: []string{"admin2"}}, "nobody")
	send(broker.Target{Name: "Chat"}, "everyone")
	for _, c := range all {
		c.waitData("message", "everyone")
	}
	waitRoutedInterest(t, producer, "herald.ev.Other._._", other)
	got := func(c *client) string {
		var out []string
		for _, p := range c.payloads("message") {
			if !strings.HasPrefix(p, "probe-") {
				out = append(out, p)
			}
		}
		return strings.Join(out, ",")
	}
	want := map[*client]string{
		admin1:  "to-admins,admins-and-ids,everyone",
		admin2:  "to-admins,everyone",
		user1:   "to-two-clients,everyone",
		nogroup: "to-two-clients,everyone",
		other:   "",
	}
	for c, w := range want {
		if c == other {
			if g := got(c); g != "" {
				t.Errorf("client of another name received %q", g)
			}
			continue
		}
		if g := got(c); g != w {
			t.Errorf("client %s received %q, want %q", c.stream.Resp.Header.Get("X-Pode-Sse-Client-Id"), g, w)
		}
	}
}
