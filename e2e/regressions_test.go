package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/e2e/checker"
	"github.com/herald-push/herald/e2e/faultproxy"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// Regression tests for defects of the edge found by this suite, each the
// minimal reproduction it was reported with.

// session is one short-lived subscriber on its own name.
type session struct {
	s      *subscriber
	cancel context.CancelFunc
	done   chan struct{}
}

func openSession(t *testing.T, c *cluster, id, name string) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ss := &session{s: newSubscriber(id, "sse", name, c.edges, 0, 0), cancel: cancel, done: make(chan struct{})}
	go func() { defer close(ss.done); ss.s.run(ctx) }()
	t.Cleanup(ss.close)
	natstest.CheckFor(t, 5*time.Second, 2*time.Millisecond, func() error {
		if len(ss.s.snapshot().Events) == 0 {
			return fmt.Errorf("%s: no pode.open yet", id)
		}
		return nil
	})
	return ss
}

func (ss *session) close() {
	ss.cancel()
	<-ss.done
}

func publishN(t *testing.T, js jetstream.JetStream, name string, from, n int) uint64 {
	t.Helper()
	var last uint64
	for i := from; i < from+n; i++ {
		ack, err := js.Publish(context.Background(), subjects.EventName(name), checker.Payload("p", int64(i)))
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	return last
}

// A new connection (no Last-Event-ID) starts at the head of the stream.
// Found: the edge took the position from its cached view of the stream,
// which advanced only with live messages on subjects the edge already
// subscribed to and with a history refresh once a second, so a client
// connecting to an edge without interest in its name was placed in the
// past: it was sent events published before it connected and, when those
// were beyond the retention, a herald.gap {"reason":"expired"} although it
// had missed nothing.
func TestNewConnectionStartsAtStreamHead(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	c.startEdge("-history-max-msgs", "50")
	js, err := jetstream.New(c.connect("bug-publisher"))
	if err != nil {
		t.Fatal(err)
	}
	const name = "/quiet"
	var problems []string
	n := 0
	for i := range 5 {
		head := publishN(t, js, name, n, 60) // no client is connected: the edge has no interest in the name
		n += 60
		ss := openSession(t, c, fmt.Sprintf("new%d", i), name)
		next := publishN(t, js, name, n, 1)
		n++
		natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if _, pos, _ := ss.s.progress(); pos < next {
				return fmt.Errorf("event at %d not delivered", next)
			}
			return nil
		})
		ss.close()
		evs := ss.s.snapshot().Events
		open, _ := broker.ParsePosition(evs[0].ID)
		if open.Seq < head {
			problems = append(problems, fmt.Sprintf("connected with the stream at %d, pode.open id %q", head, evs[0].ID))
		}
		for _, ev := range evs[1:] {
			p, _ := broker.ParsePosition(ev.ID)
			if ev.Type == checker.TypeGap || p.Seq <= head {
				problems = append(problems, fmt.Sprintf("  then %s %s %s", ev.Type, ev.ID, ev.Data))
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("new connections placed behind the stream:\n%s", strings.Join(problems, "\n"))
	}
}

// A connection joining a busy name receives no event twice. Found: a
// connection placed behind the stream (see
// TestNewConnectionStartsAtStreamHead) was replayed from there; when a live
// event revealed that gap while the connection was being started (between
// its registration and the release of its writer, which waits for NATS to
// confirm the subscriptions), the gap started one replay and the start
// another from the same position: every replayed event reached the client
// twice.
func TestNoDuplicateReplayOnConnect(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	e := c.startEdge()
	// A little latency to NATS widens the window between registration and
	// release (the flush round trip), as a busy or distant NATS would.
	e.setLink(func(p *faultproxy.Proxy) { p.Delay(5 * time.Millisecond) })
	js, err := jetstream.New(c.connect("bug-publisher"))
	if err != nil {
		t.Fatal(err)
	}
	const name = "/busy"
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	var acked atomic.Int64
	go func() { // a steady stream on the name, one acknowledged event after another
		defer close(stopped)
		for i := int64(0); i < maxPublishes && ctx.Err() == nil; i++ {
			if _, err := js.Publish(ctx, subjects.EventName(name), checker.Payload("p", i)); err == nil {
				acked.Add(1)
			}
		}
	}()
	defer func() { cancel(); <-stopped }()
	var dups []string
	const sessions = 10
	for i := range sessions {
		// While nobody is connected the edge does not follow the name, so
		// the next connection starts behind the stream.
		from := acked.Load()
		natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if n := acked.Load() - from; n < 100 {
				return fmt.Errorf("%d events published since the last connection", n)
			}
			return nil
		})
		ss := openSession(t, c, fmt.Sprintf("busy%d", i), name)
		natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if m, _, _ := ss.s.progress(); m < 200 {
				return fmt.Errorf("%d events", m)
			}
			return nil
		})
		ss.close()
		seen := map[string]int{}
		for _, ev := range ss.s.snapshot().Events {
			if ev.Type == checker.TypeMessage {
				seen[ev.ID]++
			}
		}
		n := 0
		for _, k := range seen {
			if k > 1 {
				n += k - 1
			}
		}
		if n > 0 {
			dups = append(dups, fmt.Sprintf("connection %d: %d events delivered twice", i, n))
		}
	}
	if len(dups) > 0 {
		t.Errorf("duplicates on fresh connections (%d of %d):\n%s", len(dups), sessions, strings.Join(dups, "\n"))
	}
}

// Regression (fixed by registering and flushing NATS interest before
// pode.open is written): an event published right after a client received
// pode.open must reach it, even with 30 ms between edge and NATS.
func TestFirstEventAfterConnect(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	e := c.startEdge()
	e.setLink(func(p *faultproxy.Proxy) { p.Delay(30 * time.Millisecond) })
	js, err := jetstream.New(c.connect("publisher"))
	if err != nil {
		t.Fatal(err)
	}
	var missed []string
	for i := range 5 {
		name := fmt.Sprintf("/first-%d", i)
		ss := openSession(t, c, fmt.Sprintf("first%d", i), name)
		seq := publishN(t, js, name, 0, 1)
		// Far longer than the edge's once-a-second history refresh.
		err := natstest.Poll(3*time.Second, 10*time.Millisecond, func() error {
			if m, _, _ := ss.s.progress(); m == 0 {
				return fmt.Errorf("event at %d never delivered", seq)
			}
			return nil
		})
		ss.close()
		if err != nil {
			missed = append(missed, fmt.Sprintf("%s: pode.open %q, %v", name, ss.s.snapshot().Events[0].ID, err))
		}
	}
	if len(missed) > 0 {
		t.Errorf("first events lost for freshly connected clients (%d of 5):\n%s", len(missed), strings.Join(missed, "\n"))
	}
}

// An edge whose link to NATS is black-holed (packets dropped, no reset)
// must stop reporting ready soon, so that load balancers send clients to
// an edge that can deliver. Regression: the edge used to notice only when
// the NATS client's pings failed (20 s interval, 3 outstanding) and stayed
// ready for 82 s while its clients received nothing; readiness now also
// requires the history stream to have answered within the last 6 s, and
// the binaries ping NATS every 5 s with 2 outstanding.
func TestBlackholedNATSLinkDetected(t *testing.T) {
	skipUnlessEnabled(t)
	c := startCluster(t, clusterOptions{})
	e := c.startEdge()
	e.setLink(func(p *faultproxy.Proxy) { p.Blackhole() })
	start := time.Now()
	natstest.CheckFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		if ready(e) == nil {
			return fmt.Errorf("%s still ready %v into a black-holed NATS link", e.name, time.Since(start).Round(time.Second))
		}
		return nil
	})
}
