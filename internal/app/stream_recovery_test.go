package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
)

// embeddedForHistory starts cmd/embedded and returns its HTTP base URL,
// an admin's NATS connection and an acknowledged publisher on it.
func embeddedForHistory(t *testing.T) (string, *broker.Publisher, jetstream.JetStream) {
	t.Helper()
	addrs, cancel, done := started(t, app.RunEmbedded, []string{
		"-listen", "127.0.0.1:0",
		"-nats-listen", "127.0.0.1:0",
		"-data", t.TempDir(),
		"-publish-token", "recovery-token",
		"-shutdown-grace", "5s",
	}, &natstest.SyncBuffer{})
	t.Cleanup(func() { stopped(t, cancel, done, 15*time.Second) })
	base := "http://" + addrs.HTTP
	waitReadyz(t, base, http.StatusOK, 10*time.Second)
	nc := natstest.Connect(t, addrs.NATS)
	pub, err := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return base, pub, js
}

func sendAcked(t *testing.T, pub *broker.Publisher, name string, data ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, d := range data {
		if _, err := pub.Publish(ctx, broker.Target{Name: name}, broker.Event{Data: []byte(d)}); err != nil {
			t.Fatalf("publish %q: %v", d, err)
		}
	}
}

func epochOf(ev sseclient.Event) string {
	e, _, _ := strings.Cut(ev.ID, ":")
	return e
}

func gapReasonOf(t *testing.T, ev sseclient.Event) string {
	t.Helper()
	var g struct{ Reason string }
	if err := json.Unmarshal([]byte(ev.Data), &g); err != nil {
		t.Fatalf("herald.gap data %q: %v", ev.Data, err)
	}
	return g.Reason
}

// The history stream is deleted and created again while a client is
// connected — by an operator (or another edge) at once, or by the edge
// itself a moment later. The client is told (herald.gap, epoch), then
// receives every event of the new stream, the first ones included; an id
// of the old stream is never taken as a position of the new one; the edge
// stays ready, with no restart.
func TestHistoryStreamRecreatedWhileLive(t *testing.T) {
	for _, tc := range []struct {
		name     string
		recreate bool // the operator creates the stream again at once
	}{
		{"recreated by an operator", true},
		{"recreated by the edge", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, pub, js := embeddedForHistory(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a := openSSE(t, base, "/sse/R", nil)
			sendAcked(t, pub, "R", "before 1", "before 2")
			old := a.expect(t, 10*time.Second, "message before 1", "message before 2")
			oldEpoch := epochOf(old[1])

			if err := js.DeleteStream(ctx, "HERALD_EVENTS"); err != nil {
				t.Fatal(err)
			}
			if tc.recreate {
				// The edge may be creating it at the same moment: whoever
				// wins, the stream is new.
				natstest.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
					_, err := js.CreateStream(ctx, broker.HistoryConfig{}.StreamConfig(broker.MustSubjects("")))
					if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
						return nil
					}
					return err
				})
			}
			// Acknowledged once the stream exists again (the publisher
			// retries while it does not).
			sendAcked(t, pub, "R", "new 1")

			gap := a.next(t, 10*time.Second)
			if gap.Type != "herald.gap" || gapReasonOf(t, gap) != "epoch" || epochOf(gap) == oldEpoch {
				t.Fatalf("after the stream was recreated the client got %+v, want herald.gap (epoch) with the new epoch", gap)
			}
			sendAcked(t, pub, "R", "new 2")
			got := a.expect(t, 10*time.Second, "message new 1", "message new 2")
			if epochOf(got[0]) != epochOf(gap) || !strings.HasSuffix(got[0].ID, ":1") {
				t.Fatalf("first event of the new stream has id %q, want %s:1", got[0].ID, epochOf(gap))
			}
			waitReadyz(t, base, http.StatusOK, 5*time.Second)

			// An id of the old stream is not a position in the new one,
			// even where the new stream has that sequence.
			b := openSSE(t, base, "/sse/R", http.Header{"Last-Event-ID": {old[0].ID}})
			g := b.next(t, 10*time.Second)
			if g.Type != "herald.gap" || gapReasonOf(t, g) != "epoch" {
				t.Fatalf("a resume with the old stream's id %q got %+v, want herald.gap (epoch)", old[0].ID, g)
			}
			sendAcked(t, pub, "R", "new 3")
			b.expect(t, 10*time.Second, "message new 3")
			a.expect(t, 10*time.Second, "message new 3")
		})
	}
}

// A purge empties the stream but keeps its sequence and its epoch:
// connected clients go on without a gap; a client that comes back with a
// position whose next events were purged is told (herald.gap, expired);
// one whose next events were all kept receives them.
func TestHistoryStreamPurgedWhileLive(t *testing.T) {
	base, pub, js := embeddedForHistory(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := openSSE(t, base, "/sse/P", nil)
	sendAcked(t, pub, "P", "p1", "p2")
	before := a.expect(t, 10*time.Second, "message p1", "message p2")

	s, err := js.Stream(ctx, "HERALD_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	sendAcked(t, pub, "P", "p3")
	after := a.expect(t, 10*time.Second, "message p3")
	if epochOf(after[0]) != epochOf(before[0]) || !strings.HasSuffix(after[0].ID, ":3") {
		t.Fatalf("after the purge the event id is %q, want the same epoch and position 3 (was %q)", after[0].ID, before[1].ID)
	}

	// Back from p2: p3 was stored after the purge, and arrives.
	kept := openSSE(t, base, "/sse/P", http.Header{"Last-Event-ID": {before[1].ID}})
	kept.expect(t, 10*time.Second, "message p3")
	// Back from p1: p2 was purged.
	lost := openSSE(t, base, "/sse/P", http.Header{"Last-Event-ID": {before[0].ID}})
	if g := lost.next(t, 10*time.Second); g.Type != "herald.gap" || gapReasonOf(t, g) != "expired" {
		t.Fatalf("a resume over purged events got %+v, want herald.gap (expired)", g)
	}
	sendAcked(t, pub, "P", "p4")
	lost.expect(t, 10*time.Second, "message p4")
	kept.expect(t, 10*time.Second, "message p4")
	a.expect(t, 10*time.Second, "message p4")
	waitReadyz(t, base, http.StatusOK, 5*time.Second)
}
