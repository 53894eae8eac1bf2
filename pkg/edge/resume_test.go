package edge

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
)

// publishSeq publishes n events "name:i" for i in [from, from+n) with
// JetStream acks, so each is stored before the next.
func publishSeq(t *testing.T, nc *nats.Conn, subject string, from, n int) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		if _, err := js.Publish(context.Background(), subject, []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// numbers returns the integer payloads of "message" events, in order.
func numbers(c *client) []int {
	var out []int
	for _, p := range c.payloads("message") {
		if n, err := strconv.Atoi(p); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// lastID is the id of the last event a client received.
func lastID(c *client) string {
	evs := c.snapshot()
	return evs[len(evs)-1].ID
}

func checkRun(t *testing.T, got []int, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("got %d events %v, want %d..%d", len(got), got, from, to-1)
	}
	for i, v := range got {
		if v != from+i {
			t.Fatalf("event %d is %d, want %d (lost, duplicated or reordered): %v", i, v, from+i, got)
		}
	}
}

func TestResumeOnAnotherEdge(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	cfg := Config{History: &broker.HistoryConfig{Replicas: 3}}
	a := startEdge(t, cl.URLs(), cfg)
	b := startEdge(t, cl.URLs(), cfg)
	producer := cl.Connect(t)

	c1 := connect(t, a, "/sse/Feed?clientId=r1", nil)
	open := c1.snapshot()[0]
	if _, err := broker.ParsePosition(open.ID); err != nil {
		t.Fatalf("pode.open id %q is not a position: %v", open.ID, err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		publishSeq(t, producer, "herald.ev.Feed._._", 0, 1)
		return len(numbers(c1)) > 0
	}, "first event never arrived")
	publishSeq(t, producer, "herald.ev.Feed._._", 1, 9)
	c1.waitData("message", "9")
	id := lastID(c1)
	p, err := broker.ParsePosition(id)
	if err != nil || p.Seq == 0 {
		t.Fatalf("event id %q: %v", id, err)
	}
	c1.close()

	// Missed while away, then resume on the other edge.
	publishSeq(t, producer, "herald.ev.Feed._._", 10, 20)
	c2 := connect(t, b, "/sse/Feed?clientId=r1", http.Header{"Last-Event-ID": {id}})
	c2.waitData("message", "29")
	publishSeq(t, producer, "herald.ev.Feed._._", 30, 10)
	c2.waitData("message", "39")
	checkRun(t, numbers(c2), 10, 40)
	if got := counter(t, b.reg, "herald_edge_resync_total", "cause", "resume"); got != 1 {
		t.Errorf("resume resyncs = %v, want 1", got)
	}
}

func TestResumeFromOpenIDAndProducerID(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{History: &broker.HistoryConfig{}})
	nc := natsConn(t, srv.ClientURL())
	c1 := connect(t, e, "/sse/Feed?group=g", nil)
	openID := c1.snapshot()[0].ID
	c1.close()
	// Nothing reached the client before it left; pode.open's id resumes it.
	publishSeq(t, nc, "herald.ev.Feed.g._", 0, 5)
	publishSeq(t, nc, "herald.ev.Feed.other._", 100, 5) // another group: not for this client
	m := nats.NewMsg("herald.ev.Feed._._")
	m.Header.Set(broker.HeaderID, "order-42")
	m.Data = []byte("5")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	c2 := connect(t, e, "/sse/Feed?group=G&lastEventId="+url.QueryEscape(openID), nil)
	ev := c2.waitData("message", "5")
	checkRun(t, numbers(c2), 0, 6)
	if !strings.HasSuffix(ev.ID, ":order-42") {
		t.Fatalf("id %q does not carry the producer's id", ev.ID)
	}
	// The composite id resumes too.
	c2.close()
	publishSeq(t, nc, "herald.ev.Feed._._", 6, 2)
	c3 := connect(t, e, "/sse/Feed?group=g", http.Header{"Last-Event-ID": {ev.ID}})
	c3.waitData("message", "7")
	checkRun(t, numbers(c3), 6, 8)
}

func TestGapEvents(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{History: &broker.HistoryConfig{MaxMsgs: 5}})
	nc := natsConn(t, srv.ClientURL())
	c1 := connect(t, e, "/sse/Feed", nil)
	openID := c1.snapshot()[0].ID
	c1.close()
	publishSeq(t, nc, "herald.ev.Feed._._", 0, 20) // only the last 5 are kept

	gap := func(header http.Header, query, reason string) *client {
		t.Helper()
		c := connect(t, e, "/sse/Feed"+query, header)
		ev := c.waitFor(func(ev sseclient.Event) bool { return ev.Type == EventGap }, "herald.gap")
		if !strings.Contains(ev.Data, `"reason":"`+reason+`"`) {
			t.Fatalf("gap data %s, want reason %s", ev.Data, reason)
		}
		if _, err := broker.ParsePosition(ev.ID); err != nil {
			t.Fatalf("gap id %q: %v", ev.ID, err)
		}
		// Nothing of the partial history follows the gap.
		if n := numbers(c); len(n) != 0 {
			t.Fatalf("events after a gap: %v", n)
		}
		return c
	}
	expired := gap(http.Header{"Last-Event-ID": {openID}}, "", gapExpired)
	gap(http.Header{"Last-Event-ID": {"not-an-id"}}, "", gapMalformed)
	gap(nil, "?lastEventId="+url.QueryEscape("zzzz:3"), gapEpoch)
	gap(http.Header{"Last-Event-ID": {"abc:99999999999999999999999"}}, "", gapMalformed)
	// A well-formed id of this epoch that is ahead of the stream.
	p, _ := broker.ParsePosition(openID)
	gap(http.Header{"Last-Event-ID": {broker.FormatEventID(p.Epoch, p.Seq+1000, "")}}, "", gapMalformed)

	// Live events continue after the gap.
	publishSeq(t, nc, "herald.ev.Feed._._", 20, 1)
	expired.waitData("message", "20")
	if got := counter(t, e.reg, "herald_edge_gap_events_total", "reason", gapExpired); got != 1 {
		t.Errorf("expired gaps = %v, want 1", got)
	}
}

// TestResyncAfterNATSNodeKilled kills the NATS node an edge is connected to
// while a producer keeps publishing through another node: the edge
// reconnects and replays what it missed, so the client loses nothing.
func TestResyncAfterNATSNodeKilled(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	// The edge lists node 0 first and fails over to the others.
	urls := cl.Nodes[0].ClientURL() + "," + cl.Nodes[1].ClientURL() + "," + cl.Nodes[2].ClientURL()
	nc, err := nats.Connect(urls, nats.DontRandomize(), nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(nc, Config{History: &broker.HistoryConfig{Replicas: 3}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	te := &testEdge{Edge: e, nc: nc, srv: newServer(e)}
	t.Cleanup(func() { te.stop(t) })
	producer, err := nats.Connect(cl.Nodes[2].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()

	c := connect(t, te, "/sse/Feed?clientId=k", nil)
	natstest.Eventually(t, 10*time.Second, func() bool {
		publishSeq(t, producer, "herald.ev.Feed._.k", -1, 1)
		return len(numbers(c)) > 0
	})
	const total = 300
	done := make(chan error, 1)
	go func() {
		js, _ := jetstream.New(producer)
		for i := 0; i < total; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			for attempt := 0; attempt < 20; attempt++ { // retry through the leader election
				if _, err = js.Publish(ctx, "herald.ev.Feed._.k", []byte(strconv.Itoa(i)), jetstream.WithMsgID(fmt.Sprintf("k-%d", i))); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
			if err != nil {
				done <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			if i == total/3 {
				cl.Stop(0)
			}
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.waitData("message", strconv.Itoa(total-1))
	got := numbers(c)
	// Drop the probe(s) (-1) at the start.
	for len(got) > 0 && got[0] == -1 {
		got = got[1:]
	}
	checkRun(t, got, 0, total)
	if te.counterResync() == 0 {
		t.Error("no resync was counted")
	}
}

func (te *testEdge) counterResync() float64 {
	mfs, _ := te.Edge.m.resyncs.GetMetricWithLabelValues(causeReconnect)
	_ = mfs
	return testCounter(te.Edge.m.resyncs.WithLabelValues(causeReconnect)) + testCounter(te.Edge.m.resyncs.WithLabelValues(causeGap))
}
