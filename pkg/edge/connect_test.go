package edge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
)

// TestEventRightAfterOpen: an event published the moment the client is
// told it is connected (pode.open, or the WebSocket handshake) reaches it,
// with no history to repair anything: the edge's subscriptions are in
// place at the server before it answers.
func TestEventRightAfterOpen(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	producer := natsConn(t, srv.ClientURL())
	const rounds = 50

	t.Run("sse", func(t *testing.T) {
		for i := range rounds {
			id := fmt.Sprintf("sse-%d", i)
			s, err := sseclient.Dial(context.Background(), nil, e.srv.URL+"/sse/Fresh?clientId="+id, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ev, err := s.Next(); err != nil || ev.Type != "pode.open" {
				t.Fatalf("first event %+v %v", ev, err)
			}
			if err := producer.Publish("herald.ev.Fresh._."+id, []byte(id)); err != nil {
				t.Fatal(err)
			}
			got := make(chan sseclient.Event, 1)
			go func() { ev, _ := s.Next(); got <- ev }()
			select {
			case ev := <-got:
				if ev.Data != id {
					t.Fatalf("round %d: got %+v", i, ev)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: the event published right after pode.open never arrived", i)
			}
			s.Close()
		}
	})
	t.Run("ws", func(t *testing.T) {
		for i := range rounds {
			id := fmt.Sprintf("ws-%d", i)
			c := wsConnect(t, e, "/ws/fresh?clientId="+id, nil)
			if err := producer.Publish("herald.ev./fresh._."+id, []byte(id)); err != nil {
				t.Fatal(err)
			}
			natstest.Eventually(t, 5*time.Second, func() bool { return c.has(id) },
				"round %d: the message published right after the handshake never arrived", i)
			c.close()
		}
	})
}

// TestClientLeavingIsNoticed: a client that hangs up is noticed at once,
// not at the next write (no ping is due for an hour here), and its NATS
// interest is released.
func TestClientLeavingIsNoticed(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{PingInterval: time.Hour})
	before := e.feed.Subscriptions()
	var clients []*client
	for i := range 20 {
		clients = append(clients, connect(t, e, fmt.Sprintf("/sse/Leaving?group=g&clientId=c%d", i), nil))
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 20 })
	for _, c := range clients {
		c.close()
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.Connections() == 0 },
		func() string { return fmt.Sprintf("%d connections still registered", e.Connections()) })
	natstest.Eventually(t, 5*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_disconnects_total", "reason", "gone") == 20
	})
	if got := e.feed.Subscriptions(); got != before {
		t.Fatalf("subscriptions %d after every client left, want %d", got, before)
	}
}
