package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// Every way of replaying reads the same messages, in stream order, for the
// same subjects: batched direct gets (several batches per subject, merged
// across subjects), an ordered consumer, and the one-message-per-request
// reads older servers need (direct gets, leader message gets).
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
	_, filters := publishInterleaved(t, ctx, nc, h, 1500)

	read := func(mode uint32, from, upTo uint64) []string {
		broker.SetReadMode(h, mode)
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
			t.Fatalf("mode %d from %d: %v", mode, from, err)
		}
		return got
	}
	for _, from := range []uint64{1, 2, 700, 1499, 1500} {
		consumer := read(broker.ReadConsumer, from, 1500)
		for _, mode := range []uint32{broker.ReadBatch, broker.ReadDirect, broker.ReadMsgGet} {
			got := read(mode, from, 1500)
			if !slices.Equal(got, consumer) {
				t.Fatalf("from %d: mode %d read %d messages, consumer %d; first %q, first consumer %q",
					from, mode, len(got), len(consumer), first(got), first(consumer))
			}
		}
		if from == 1 && len(consumer) != 1500*4/6 {
			t.Errorf("from 1: %d messages on the four subjects, want %d", len(consumer), 1500*4/6)
		}
	}
	// The bound: direct gets stop at upTo (the caller's live feed has the
	// rest), so they read exactly the consumer's messages up to it.
	var want []string
	for _, m := range read(broker.ReadConsumer, 1, 1500) {
		var seq int
		if _, err := fmt.Sscan(m, &seq); err != nil {
			t.Fatal(err)
		}
		if seq <= 600 {
			want = append(want, m)
		}
	}
	for _, mode := range []uint32{broker.ReadBatch, broker.ReadDirect, broker.ReadMsgGet} {
		if got := read(mode, 1, 600); !slices.Equal(got, want) {
			t.Errorf("mode %d: bounded read: %d messages (last %q), want %d (last %q)", mode, len(got), got[len(got)-1], len(want), want[len(want)-1])
		}
		// Nothing to read.
		if got := read(mode, 1501, 1500); len(got) != 0 {
			t.Errorf("mode %d: from past the end: %d messages", mode, len(got))
		}
	}
}

// publishInterleaved publishes n messages ("0", "1", …) round six subjects
// of the default scheme, four of which a connection of name Feed, group g,
// clientId c1 replays (filters), and waits until h has stored them. want
// lists the replayed ones as "<seq> <subject> <data>", in stream order.
func publishInterleaved(t *testing.T, ctx context.Context, nc *nats.Conn, h *broker.History, n int) (want, filters []string) {
	t.Helper()
	s := broker.MustSubjects("")
	subjects := []string{
		s.Event(broker.Address{Name: "Feed"}),
		s.Event(broker.Address{Name: "Feed", ClientID: "c1"}),
		s.Event(broker.Address{Name: "Feed", Group: "g"}),
		s.Event(broker.Address{Group: "g"}), // all names
		s.Event(broker.Address{Name: "Other"}),
		s.Event(broker.Address{Name: "Feed", ClientID: "c2"}),
	}
	for i := range n { // plain publishes: the stream state below confirms them
		k := (i * 7) % len(subjects)
		if err := nc.Publish(subjects[k], fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
		if k < 4 {
			want = append(want, fmt.Sprintf("%d %s %d", i+1, subjects[k], i))
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		st, err := h.State(ctx)
		return err == nil && st.LastSeq == uint64(n)
	}, "the stream did not store %d messages", n)
	return want, []string{s.EventName("Feed"), s.EventClient("Feed", "c1"), s.EventGroup("Feed", "g"), s.EventAllNames()}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// Headers a producer stores with its message come before the ones the
// server adds to a read: a forged Nats-Sequence, Nats-Subject or Status
// neither moves nor ends a replay, in any way of reading.
func TestReplayIgnoresForgedHeaders(t *testing.T) {
	srv := natstest.StartServer(t)
	checkForgedHeaders(t, natstest.Connect(t, srv.ClientURL()),
		[]uint32{broker.ReadBatch, broker.ReadDirect, broker.ReadConsumer, broker.ReadMsgGet})
}

// checkForgedHeaders runs the test above on nc, with a stream of its own
// (prefix "forged"), reading it in each of modes.
func checkForgedHeaders(t *testing.T, nc *nats.Conn, modes []uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := broker.MustSubjects("forged")
	h, err := broker.OpenHistory(ctx, nc, s, broker.HistoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	subject := s.Event(broker.Address{Name: "Feed"})
	if err := nc.Publish(subject, []byte("0")); err != nil {
		t.Fatal(err)
	}
	for _, forged := range [][2]string{
		{"Nats-Sequence", "999999"},
		{"Nats-Subject", s.Event(broker.Address{Name: "Other"})},
		{"Status", "404"},
	} {
		m := nats.NewMsg(subject)
		m.Header.Set(forged[0], forged[1])
		m.Data = []byte(forged[0])
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(subject, []byte("4")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		st, err := h.State(ctx)
		return err == nil && st.LastSeq == 5
	}, "the stream did not store 5 messages")
	want := []string{"1 forged.ev.Feed._._ 0", "2 forged.ev.Feed._._ Nats-Sequence", "3 forged.ev.Feed._._ Nats-Subject",
		"4 forged.ev.Feed._._ Status", "5 forged.ev.Feed._._ 4"}
	for _, mode := range modes {
		broker.SetReadMode(h, mode)
		var got []string
		err := h.Replay(ctx, 1, 5, []string{s.EventName("Feed")}, func(m broker.Stored) error {
			got = append(got, fmt.Sprintf("%d %s %s", m.Seq, m.Msg.Subject, m.Msg.Data))
			return nil
		})
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("mode %d: replay read %q (%v), want %q", mode, got, err, want)
		}
	}
}

// The read chosen from the server's version: batched direct gets need
// 2.11, consumers with several filters 2.10, and nothing works before 2.9.
func TestChooseReadMode(t *testing.T) {
	for _, tc := range []struct {
		version  string
		direct   bool
		replicas int
		want     uint32
		err      bool
	}{
		{"2.15.2", true, 1, broker.ReadBatch, false},
		{"2.11.0", true, 1, broker.ReadBatch, false},
		{"2.11.0-RC.1", true, 1, broker.ReadBatch, false},
		{"", true, 1, broker.ReadBatch, false}, // unknown: taken as current
		{"2.10.29", true, 1, broker.ReadDirect, false},
		{"2.9.10", true, 1, broker.ReadDirect, false},
		{"v2.9.0", true, 1, broker.ReadDirect, false},
		{"2.15.2", true, 3, broker.ReadConsumer, false},
		{"2.15.2", false, 1, broker.ReadConsumer, false},
		{"2.10.0", true, 3, broker.ReadConsumer, false},
		{"2.9.10", true, 3, broker.ReadMsgGet, false},
		{"2.9.10", false, 1, broker.ReadMsgGet, false},
		{"2.8.4", true, 1, 0, true},
		{"1.4.1", true, 1, 0, true},
	} {
		got, err := broker.ChooseReadMode(tc.version, tc.direct, tc.replicas)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ChooseReadMode(%q, %v, %d) = %d, %v; want %d (error %v)", tc.version, tc.direct, tc.replicas, got, err, tc.want, tc.err)
		}
		if tc.err && (err == nil || !strings.Contains(err.Error(), broker.MinServerVersion)) {
			t.Errorf("ChooseReadMode(%q): error %v does not name %s", tc.version, err, broker.MinServerVersion)
		}
	}
}
