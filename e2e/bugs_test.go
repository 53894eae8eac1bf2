package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/e2e/checker"
	"github.com/herald-push/herald/e2e/faultproxy"
	"github.com/herald-push/herald/pkg/broker"
)

// Known defects of the edge, each shown by a minimal failing test. They
// are skipped unless HERALD_E2E_BUGS=1, so that the suite stays green
// while they are open; remove the skip with the fix.

func skipKnownBug(t *testing.T, reason string) {
	t.Helper()
	skipUnlessEnabled(t)
	if os.Getenv("HERALD_E2E_BUGS") != "1" {
		t.Skip("known edge defect (run with HERALD_E2E_BUGS=1): " + reason)
	}
}

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
	checkFor(t, 5*time.Second, 2*time.Millisecond, func() error {
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

// A new connection (no Last-Event-ID) should start at the head of the
// stream. The edge takes the position from its cached view of the stream,
// which advances only with live messages on subjects the edge already
// subscribes to and with a history refresh once a second. A client
// connecting to an edge that had no interest in its name is placed in the
// past: it is sent events published before it connected and, when those
// are beyond the retention, a herald.gap {"reason":"expired"} although it
// missed nothing.
func TestBugNewConnectionStartsBehindStream(t *testing.T) {
	skipKnownBug(t, "a new connection's pode.open position lags the stream by up to the 1 s history refresh; "+
		"the client gets older events or a spurious herald.gap expired")
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
		checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
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

// An event published right after a client received pode.open must reach
// it. The edge writes pode.open (with the position) before its NATS
// subscription for the client's name is in effect; with some latency
// between edge and NATS (30 ms here, through the fault proxy), the first
// event is republished before the subscription reaches the server and the
// edge never sees it. Nothing re-checks the position later, so the client
// does not get the event until another event on the same name reveals the
// gap — on a quiet name, never.
func TestBugFirstEventAfterConnectMissed(t *testing.T) {
	skipKnownBug(t, "an event published just after pode.open is lost for that client until the next event "+
		"on the name, when the edge's subscription is not yet in effect (edge-NATS latency)")
	c := startCluster(t, clusterOptions{})
	e := c.startEdge()
	e.setLink(func(p *faultproxy.Proxy) { p.Delay(30 * time.Millisecond) })
	js, err := jetstream.New(c.connect("bug-publisher"))
	if err != nil {
		t.Fatal(err)
	}
	var missed []string
	for i := range 5 {
		name := fmt.Sprintf("/first-%d", i)
		ss := openSession(t, c, fmt.Sprintf("first%d", i), name)
		seq := publishN(t, js, name, 0, 1)
		// Far longer than the edge's once-a-second history refresh.
		err := pollFor(3*time.Second, 10*time.Millisecond, func() error {
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
