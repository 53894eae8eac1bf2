package broker_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/natsserver"
)

// recorder is a FeedHandler that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	msgs    []broker.Message
	runs    []int
	resyncs []string
}

func (r *recorder) Deliver(run []broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range run {
		m.Event.Data = append([]byte(nil), m.Event.Data...) // valid only during Deliver
		r.msgs = append(r.msgs, m)
	}
	r.runs = append(r.runs, len(run))
}

func (r *recorder) Resync(cause string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resyncs = append(r.resyncs, cause)
}

func (r *recorder) snapshot() []broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]broker.Message(nil), r.msgs...)
}

// A feed holds interest for exactly the addresses joined, counts
// references, and hands every message over decoded, in server order
// across subjects.
func TestFeedInterestAndOrder(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	rec := &recorder{}
	f, err := broker.NewFeed(nc, broker.FeedOptions{}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if got := f.Subscriptions(); got != 1 {
		t.Fatalf("a new feed holds %d subscriptions, want 1 (every name)", got)
	}
	a := broker.Address{Name: "Orders", Group: "admins", ClientID: "c1"}
	b := broker.Address{Name: "Orders", ClientID: "c2"}
	for _, addr := range []broker.Address{a, b} {
		if err := f.Join(addr); err != nil {
			t.Fatal(err)
		}
	}
	// every name + Orders name + a: client, group, group+client + b: client + the Orders notices
	if got := f.Subscriptions(); got != 7 {
		t.Fatalf("subscriptions = %d, want 7", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Confirm(ctx); err != nil {
		t.Fatal(err)
	}

	producer := natstest.Connect(t, srv.ClientURL())
	s := broker.MustSubjects("")
	subjects := []string{
		s.EventName("Orders"), s.Event(broker.Address{Name: "Orders", ClientID: "c1"}), s.EventGroup("Orders", "admins"),
		s.Event(a), s.Event(broker.Address{Name: "Orders", ClientID: "c2"}), s.EventAllNames()[:len(s.EventAllNames())-1] + "_._",
	}
	const n = 600
	for i := range n {
		if err := producer.Publish(subjects[i%len(subjects)], fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := producer.Publish("herald.ev.Other._._", []byte("not joined")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return len(rec.snapshot()) >= n }, "the feed did not deliver every message")
	got := rec.snapshot()
	if len(got) != n {
		t.Fatalf("delivered %d messages, want %d (nothing for names not joined)", len(got), n)
	}
	for i, m := range got {
		if m.Kind != broker.KindEvent || string(m.Event.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d: kind %d data %q: out of order or not decoded", i, m.Kind, m.Event.Data)
		}
	}

	// References: leaving b keeps the name's subjects for a; leaving a too
	// releases everything but every-names.
	f.Leave(b)
	if got := f.Subscriptions(); got != 6 {
		t.Fatalf("after one leave: %d subscriptions, want 6", got)
	}
	f.Leave(a)
	if got := f.Subscriptions(); got != 1 {
		t.Fatalf("after both left: %d subscriptions, want 1", got)
	}
}

// A feed that fell behind hands over what waited as runs, never more
// than MaxRun at a time.
func TestFeedRuns(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	block := make(chan struct{})
	rec := &recorder{}
	h := &blockingHandler{recorder: rec, block: block}
	f, err := broker.NewFeed(nc, broker.FeedOptions{MaxRun: 10}, h)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if err := f.Join(broker.Address{Name: "Feed", ClientID: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	producer := natstest.Connect(t, srv.ClientURL())
	for i := range 101 {
		if err := producer.Publish("herald.ev.Feed._._", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// The first message's Deliver blocks until the rest have queued up.
			natstest.Eventually(t, 5*time.Second, func() bool { return h.entered() }, "no delivery")
		}
	}
	if err := producer.Flush(); err != nil {
		t.Fatal(err)
	}
	// A round trip on the feed's connection: NATS has handed it every
	// message before the answer, so the other 100 wait in the feed.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	close(block)
	natstest.Eventually(t, 10*time.Second, func() bool { return len(rec.snapshot()) == 101 }, "not every message arrived")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []int{1, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10}; !slices.Equal(rec.runs, want) {
		t.Fatalf("runs %v, want %v: the first alone, then what waited in runs of MaxRun", rec.runs, want)
	}
	for i, m := range rec.msgs {
		if string(m.Event.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: out of order", i, m.Event.Data)
		}
	}
}

type blockingHandler struct {
	*recorder
	block   chan struct{}
	mu      sync.Mutex
	started bool
}

func (h *blockingHandler) Deliver(run []broker.Message) {
	h.mu.Lock()
	h.started = true
	h.mu.Unlock()
	<-h.block
	h.recorder.Deliver(run)
}

func (h *blockingHandler) entered() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.started
}

// A feed tells its handler when the NATS connection comes back: what was
// published meanwhile was not received.
func TestFeedResyncOnReconnect(t *testing.T) {
	srv, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rec := &recorder{}
	f, err := broker.NewFeed(nc, broker.FeedOptions{}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	srv.Shutdown()
	port, err := url2port(url)
	if err != nil {
		t.Fatal(err)
	}
	srv, err = natsserver.Start(natsserver.Config{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	natstest.Eventually(t, 10*time.Second, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.resyncs) == 1 && rec.resyncs[0] == broker.ResyncReconnect
	}, "no resync after the reconnect")
}

func url2port(u string) (int, error) {
	_, p, err := net.SplitHostPort(strings.TrimPrefix(u, "nats://"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}
