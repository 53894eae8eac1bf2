package broker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// Both ways of replaying read the same messages, in stream order, for the
// same subjects: batched direct gets (several batches per subject, merged
// across subjects) and an ordered consumer.
func TestReplayDirectMatchesConsumer(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := broker.MustSubjects("")
	h, err := broker.OpenHistory(ctx, nc, s, broker.HistoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if !broker.DirectReplay(h) {
		t.Fatal("a one-replica stream does not replay with direct gets")
	}
	// 1500 messages over six subjects, four of them replayed: each
	// replayed subject has several batches' worth, interleaved.
	subjects := []string{
		s.Event(broker.Address{Name: "Feed"}),
		s.Event(broker.Address{Name: "Feed", ClientID: "c1"}),
		s.Event(broker.Address{Name: "Feed", Group: "g"}),
		s.Event(broker.Address{Group: "g"}), // all names
		s.Event(broker.Address{Name: "Other"}),
		s.Event(broker.Address{Name: "Feed", ClientID: "c2"}),
	}
	for i := range 1500 { // plain publishes: the stream state below confirms them
		if err := nc.Publish(subjects[(i*7)%len(subjects)], fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		st, err := h.State(ctx)
		return err == nil && st.LastSeq == 1500
	}, "the stream did not store 1500 messages")
	filters := []string{s.EventName("Feed"), s.EventClient("Feed", "c1"), s.EventGroup("Feed", "g"), s.EventAllNames()}

	read := func(direct bool, from, upTo uint64) []string {
		broker.SetDirectReplay(h, direct)
		var got []string
		var last uint64
		err := h.Replay(ctx, from, upTo, filters, func(m broker.Stored) error {
			if m.Seq <= last {
				return fmt.Errorf("sequence %d after %d", m.Seq, last)
			}
			last = m.Seq
			if m.Msg.Subject != m.Subject {
				return fmt.Errorf("message subject %q, stored subject %q", m.Msg.Subject, m.Subject)
			}
			got = append(got, fmt.Sprintf("%d %s %s", m.Seq, m.Subject, m.Msg.Data))
			return nil
		})
		if err != nil {
			t.Fatalf("direct=%v from %d: %v", direct, from, err)
		}
		return got
	}
	for _, from := range []uint64{1, 2, 700, 1499, 1500} {
		direct := read(true, from, 1500)
		consumer := read(false, from, 1500)
		if !slices.Equal(direct, consumer) {
			t.Fatalf("from %d: direct read %d messages, consumer %d; first direct %q, first consumer %q",
				from, len(direct), len(consumer), first(direct), first(consumer))
		}
		if from == 1 && len(direct) != 1500*4/6 {
			t.Errorf("from 1: %d messages on the four subjects, want %d", len(direct), 1500*4/6)
		}
	}
	// The bound: direct gets stop at upTo (the caller's live feed has the
	// rest), so they read exactly the consumer's messages up to it.
	var want []string
	for _, m := range read(false, 1, 1500) {
		var seq int
		if _, err := fmt.Sscan(m, &seq); err != nil {
			t.Fatal(err)
		}
		if seq <= 600 {
			want = append(want, m)
		}
	}
	if got := read(true, 1, 600); !slices.Equal(got, want) {
		t.Errorf("bounded read: %d messages (last %q), want %d (last %q)", len(got), got[len(got)-1], len(want), want[len(want)-1])
	}
	// Nothing to read.
	if got := read(true, 1501, 1500); len(got) != 0 {
		t.Errorf("from past the end: %d messages", len(got))
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
