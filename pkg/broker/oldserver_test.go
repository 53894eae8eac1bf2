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

// Debian 12's nats-server 2.9.10 has neither batched direct gets (2.11)
// nor consumers with several filter subjects (2.10). The history reads it
// one message per request, chosen from the server's version; a read that
// assumes a newer server (a batch, a consumer with several filters) falls
// back by itself; and every way gives what a current server gives.
func TestHistoryOnDebianServer(t *testing.T) {
	srv := natstest.StartSystemServer(t, natstest.DebianServerVersion)
	nc := natstest.Connect(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := broker.MustSubjects("")
	h, err := broker.OpenHistory(ctx, nc, s, broker.HistoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.ReadMode(); got != "direct gets" {
		t.Fatalf("on nats-server %s the history reads with %s, want direct gets", srv.Version, got)
	}

	const n = 600
	want, filters := publishInterleaved(t, ctx, nc, h, n)

	for _, tc := range []struct {
		name       string
		set, after uint32
	}{
		{"direct gets", broker.ReadDirect, broker.ReadDirect},
		{"message gets", broker.ReadMsgGet, broker.ReadMsgGet},
		{"a batch answered unbatched", broker.ReadBatch, broker.ReadDirect},
		{"a consumer refused several filters", broker.ReadConsumer, broker.ReadMsgGet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker.SetReadMode(h, tc.set)
			for _, from := range []uint64{1, 300, n} {
				var got []string
				err := h.Replay(ctx, from, n, filters, func(m broker.Stored) error {
					got = append(got, fmt.Sprintf("%d %s %s", m.Seq, m.Subject, m.Msg.Data))
					return nil
				})
				var w []string
				for _, line := range want {
					var seq uint64
					fmt.Sscan(line, &seq)
					if seq >= from {
						w = append(w, line)
					}
				}
				if err != nil || !slices.Equal(got, w) {
					t.Fatalf("from %d: read %d messages (%v), want %d; first %q, want %q", from, len(got), err, len(w), first(got), first(w))
				}
			}
			if got := broker.ReadModeOf(h); got != tc.after {
				t.Errorf("mode after the replay %d, want %d", got, tc.after)
			}
		})
	}

	// 2.9.10 keeps a Status header a producer stored: it is still data.
	checkForgedHeaders(t, natstest.Connect(t, srv.URL), []uint32{broker.ReadDirect, broker.ReadMsgGet})
}
