package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

func TestAckedPublishIsStored(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := broker.OpenHistory(ctx, nc, broker.MustSubjects(""), broker.HistoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
	if err != nil {
		t.Fatal(err)
	}
	n, err := pub.Publish(ctx, broker.Target{Name: "Events", Groups: []string{"a", "b"}}, broker.Event{ID: "p1", Data: []byte("x")})
	if err != nil || n != 2 {
		t.Fatalf("Publish = %d, %v", n, err)
	}
	st, err := h.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastSeq != 2 {
		t.Fatalf("stream holds %d messages after an acked publish of 2", st.LastSeq)
	}
	// Each message carries its own Nats-Msg-Id.
	js, _ := jetstream.New(nc)
	s, _ := js.Stream(ctx, h.Name())
	m1, _ := s.GetMsg(ctx, 1)
	m2, _ := s.GetMsg(ctx, 2)
	if m1.Header.Get(jetstream.MsgIDHeader) == "" || m1.Header.Get(jetstream.MsgIDHeader) == m2.Header.Get(jetstream.MsgIDHeader) {
		t.Fatalf("message ids %q %q", m1.Header.Get(jetstream.MsgIDHeader), m2.Header.Get(jetstream.MsgIDHeader))
	}
}

func TestAckedPublishWithoutStream(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	pub, _ := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	n, err := pub.Publish(ctx, broker.Target{Name: "Events"}, broker.Event{Data: []byte("x")})
	if n != 0 || !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Publish with no history stream = %d, %v; want 0 and unavailable", n, err)
	}
}

// TestAckedPublishWithoutQuorum: with two of three nodes down the R3 stream
// cannot store anything; Publish must fail with a typed error, never
// report success, and work again once the nodes are back.
func TestAckedPublishWithoutQuorum(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	nc := cl.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := broker.OpenHistory(ctx, nc, broker.MustSubjects(""), broker.HistoryConfig{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	pub, _ := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
	if _, err := pub.Publish(ctx, broker.Target{Name: "Events"}, broker.Event{Data: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	cl.Stop(1)
	cl.Stop(2)
	short, cancelShort := context.WithTimeout(context.Background(), 2*time.Second)
	n, err := pub.Publish(short, broker.Target{Name: "Events"}, broker.Event{Data: []byte("during")})
	cancelShort()
	if n != 0 || !(errors.Is(err, broker.ErrUnknown) || errors.Is(err, broker.ErrUnavailable)) {
		t.Fatalf("Publish without quorum = %d, %v; want 0 and unknown or unavailable", n, err)
	}
	cl.Restart(t, 1)
	cl.Restart(t, 2)
	natstest.Eventually(t, 30*time.Second, func() bool {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := pub.Publish(c, broker.Target{Name: "Events"}, broker.Event{Data: []byte("after")})
		return err == nil
	}, "publishing never recovered after quorum returned")
}
