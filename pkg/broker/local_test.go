package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
)

// localPair is an edge-side LocalClient and a backend connection on one
// server, with the edge's and the backend's permissions, which must be
// enough (rolePair).
func localPair(t *testing.T) (*broker.LocalClient, *nats.Conn) {
	t.Helper()
	edge, backend := rolePair(t)
	l, err := broker.NewLocalClient(edge, "")
	if err != nil {
		t.Fatal(err)
	}
	return l, backend
}

func next(t *testing.T, s *broker.LocalStream, d time.Duration) (broker.LocalReply, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Next(ctx)
}

func TestLocalStreamGoHelper(t *testing.T) {
	l, backend := localPair(t)
	got := make(chan broker.LocalRequest, 1)
	sub, wait, err := broker.ServeLocal(backend, "", "Report", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		got <- req
		_ = w.Send(broker.Event{Data: []byte("one")})
		_ = w.KeepAlive()
		_ = w.Send(broker.Event{ID: "2", Type: "progress", Data: []byte(`{"p":50}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe(); wait() }()
	_ = backend.Flush()

	s, err := l.Open(&broker.LocalRequest{AuthRequest: broker.AuthRequest{Name: "Report", ClientID: "c1"}, Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	want := []broker.LocalReply{
		{Kind: broker.LocalEvent, Event: broker.Event{Data: []byte("one")}},
		{Kind: broker.LocalKeepAlive},
		{Kind: broker.LocalEvent, Event: broker.Event{ID: "2", Type: "progress", Data: []byte(`{"p":50}`)}},
		{Kind: broker.LocalEnd},
	}
	for i, w := range want {
		r, err := next(t, s, 5*time.Second)
		if err != nil || r.Kind != w.Kind || r.Event.ID != w.Event.ID || r.Event.Type != w.Event.Type || string(r.Event.Data) != string(w.Event.Data) {
			t.Fatalf("reply %d: %+v %v, want %+v", i, r, err, w)
		}
	}
	if _, err := next(t, s, time.Second); !errors.Is(err, broker.ErrLocalEnded) {
		t.Fatalf("after the end: %v", err)
	}
	if r := <-got; r.Name != "Report" || r.ClientID != "c1" || r.Subject != "alice" {
		t.Fatalf("request %+v", r)
	}
}

// A backend written with nothing but a NATS client: replies are plain
// messages, and an empty message ends the stream.
func TestLocalStreamPlainNATS(t *testing.T) {
	l, backend := localPair(t)
	sub, _ := backend.Subscribe("herald.local.Report", func(m *nats.Msg) {
		_ = backend.Publish(m.Reply, []byte("hello"))
		_ = backend.Publish(m.Reply, nil)
	})
	defer sub.Unsubscribe()
	_ = backend.Flush()
	s, err := l.Open(&broker.LocalRequest{AuthRequest: broker.AuthRequest{Name: "Report"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if r, err := next(t, s, 5*time.Second); err != nil || string(r.Event.Data) != "hello" {
		t.Fatal(r, err)
	}
	if r, err := next(t, s, 5*time.Second); err != nil || r.Kind != broker.LocalEnd {
		t.Fatal(r, err)
	}
}

func TestLocalStreamNoResponders(t *testing.T) {
	l, _ := localPair(t)
	s, err := l.Open(&broker.LocalRequest{AuthRequest: broker.AuthRequest{Name: "Nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if _, err := next(t, s, 5*time.Second); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("%v", err)
	}
}

// The edge stops a stream the backend has not ended (its client left, or
// the backend stalled): the helper's context ends, and the edge holds no
// subscription.
func TestLocalStreamCancel(t *testing.T) {
	l, backend := localPair(t)
	cancelled := make(chan struct{})
	sub, wait, err := broker.ServeLocal(backend, "", "*", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		_ = w.Send(broker.Event{Data: []byte("first")})
		<-ctx.Done()
		close(cancelled)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe(); wait() }()
	_ = backend.Flush()
	s, err := l.Open(&broker.LocalRequest{AuthRequest: broker.AuthRequest{Name: "Long"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next(t, s, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := next(t, s, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a silent backend: %v", err)
	}
	s.Stop()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend was not told the stream ended")
	}
}

func TestLocalWriterRefuses(t *testing.T) {
	_, backend := localPair(t)
	w := broker.NewLocalWriter(backend, "_INBOX.x")
	if err := w.Send(broker.Event{}); !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("empty untyped event: %v", err)
	}
	if err := w.Send(broker.Event{Type: "a\nb", Data: []byte("x")}); !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("newline in type: %v", err)
	}
	_ = w.End()
	if err := w.Send(broker.Event{Data: []byte("late")}); err == nil {
		t.Fatal("sent after End")
	}
}
