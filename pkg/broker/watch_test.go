package broker_test

import (
	"context"
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
