package broker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// A watch reads the stream at once, shares fresh reads, and when the
// stream is deleted it creates it again and reports the new epoch.
func TestHistoryWatchRecreatedStream(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	s := broker.MustSubjects("")
	var mu sync.Mutex
	var epochs []string
	w, err := broker.WatchHistory(nc, s, broker.HistoryConfig{}, broker.WatchOptions{Refresh: 50 * time.Millisecond,
		OnEpoch: func(st broker.HistoryState) {
			mu.Lock()
			defer mu.Unlock()
			epochs = append(epochs, st.Epoch)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := w.Ready(); err != nil {
		t.Fatalf("not ready after the first read: %v", err)
	}
	first := w.Epoch()
	for range 3 {
		if err := nc.Publish("herald.ev.Feed._._", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		st, err := w.Fresh()
		return err == nil && st.LastSeq == 3
	}, "a fresh read does not see the three events")

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "HERALD_EVENTS"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(epochs) == 1
	}, "the recreated stream's epoch was not reported")
	if w.Epoch() == first {
		t.Fatalf("epoch still %q after the stream was recreated", first)
	}
	if _, err := js.Stream(ctx, "HERALD_EVENTS"); err != nil {
		t.Fatalf("the watch did not create the stream again: %v", err)
	}
	if err := w.Ready(); err != nil {
		t.Fatalf("not ready after the stream came back: %v", err)
	}
}

// A stream that lost its quorum has no leader: it can store nothing and
// replay nothing, so its state is unavailable (and an edge not ready) —
// even once a surviving replica answers STREAM.INFO with its own copy,
// which it does when it finds the group leaderless.
func TestHistoryStateWithoutLeader(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	nc := cl.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h, err := broker.OpenHistory(ctx, nc, broker.MustSubjects(""), broker.HistoryConfig{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.State(ctx); err != nil {
		t.Fatalf("state with every node up: %v", err)
	}
	cl.Stop(1)
	cl.Stop(2)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the survivor answers for the leaderless stream.
	natstest.Eventually(t, 60*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := js.Stream(c, "HERALD_EVENTS")
		return err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader == ""
	}, "the surviving replica never answered for the leaderless stream")
	if st, err := h.State(ctx); !errors.Is(err, broker.ErrNoHistory) {
		t.Fatalf("state of a stream without a leader = %+v, %v; want ErrNoHistory", st, err)
	}
}
