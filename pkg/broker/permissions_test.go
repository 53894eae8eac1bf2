package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/natsserver"
)

// authServer starts a JetStream server whose users are every role, with
// their permissions for the default subjects and history stream.
func authServer(t *testing.T) *natsserver.Server {
	t.Helper()
	s := broker.MustSubjects("")
	return natstest.StartRoleServer(t, broker.Streams{History: broker.HistoryConfig{}.StreamConfig(s).Name})
}

// Everything an edge does with history on works with exactly the edge
// role's permissions, and asks for nothing more: it opens (creates) the
// stream, receives live events with their positions, publishes acked
// events, client messages and connection notices, replays in every way a
// server may need, and creates the stream again after an admin deleted
// it. It cannot delete or purge the stream.
func TestEdgePermissionsSuffice(t *testing.T) {
	srv := authServer(t)
	s := broker.MustSubjects("")
	var edgeErrs natstest.AsyncErrors
	nc := natstest.Connect(t, srv.ClientURL(), nats.UserInfo("edge", "edge-secret"),
		nats.CustomInboxPrefix(s.EdgeInbox()), nats.ErrorHandler(edgeErrs.Handler))
	admin := natstest.Connect(t, srv.ClientURL(), nats.UserInfo("admin", "admin-secret"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	epochs := make(chan broker.HistoryState, 4)
	w, err := broker.WatchHistory(nc, s, broker.HistoryConfig{}, broker.WatchOptions{Refresh: 50 * time.Millisecond,
		OnEpoch: func(st broker.HistoryState) { epochs <- st }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := w.Ready(); err != nil {
		t.Fatalf("the edge could not open the history: %v", err)
	}

	rec := &recorder{}
	f, err := broker.NewFeed(nc, broker.FeedOptions{Live: true}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	addr := broker.Address{Name: "Feed", ClientID: "c1"}
	if err := f.Join(addr); err != nil {
		t.Fatal(err)
	}
	if err := f.Confirm(ctx); err != nil {
		t.Fatal(err)
	}
	pub, err := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := pub.Publish(ctx, broker.Target{Name: "Feed"}, broker.Event{Data: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatalf("acked publish: %v", err)
		}
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(rec.snapshot()) == 5 }, "live events did not arrive")
	if m := rec.snapshot()[4]; m.Seq != 5 || m.Prev != 4 {
		t.Fatalf("last live event at %d after %d, want 5 after 4", m.Seq, m.Prev)
	}
	if err := pub.AnnounceConn("Feed", "c2", "tok", time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishInbound(addr, []byte(`{"message":1}`)); err != nil {
		t.Fatal(err)
	}

	for _, mode := range []uint32{broker.ReadBatch, broker.ReadDirect, broker.ReadConsumer, broker.ReadMsgGet} {
		broker.SetReadMode(broker.HistoryOf(w), mode)
		var got []string
		err := w.Replay(ctx, addr, 2, 5, func(m broker.Message) error {
			got = append(got, string(m.Event.Data))
			return nil
		})
		if err != nil || !slices.Equal(got, []string{"1", "2", "3", "4"}) {
			t.Errorf("replay mode %d with the edge's permissions: %q, %v", mode, got, err)
		}
	}

	// The edge cannot remove the history.
	ejs, _ := jetstream.New(nc)
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	if err := ejs.DeleteStream(short, "HERALD_EVENTS"); err == nil {
		t.Error("the edge deleted the stream")
	}
	cancelShort()
	edgeErrs.WaitViolation(t, "$JS.API.STREAM.DELETE.HERALD_EVENTS")

	// An admin deletes it; the edge creates it again by itself.
	ajs, _ := jetstream.New(admin)
	if err := ajs.DeleteStream(ctx, "HERALD_EVENTS"); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-epochs:
		if st.LastSeq != 0 {
			t.Fatalf("the recreated stream is at %d", st.LastSeq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the edge did not create the stream again")
	}
	if _, err := pub.Publish(ctx, broker.Target{Name: "Feed"}, broker.Event{Data: []byte("after")}); err != nil {
		t.Fatalf("acked publish to the recreated stream: %v", err)
	}

	for _, err := range edgeErrs.List() {
		if !strings.Contains(err.Error(), "STREAM.DELETE") {
			t.Errorf("the edge needed more than its permissions: %v", err)
		}
	}
}

// A producer publishes events (acknowledged by the stream or not) and
// reads nothing: no event, live or stored, no edge traffic, no edge
// inbox; it cannot publish where only edges and the stream do, nor touch
// the stream through the JetStream API.
func TestProducerPermissions(t *testing.T) {
	srv := authServer(t)
	s := broker.MustSubjects("")
	admin := natstest.Connect(t, srv.ClientURL(), nats.UserInfo("admin", "admin-secret"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := broker.OpenHistory(ctx, admin, s, broker.HistoryConfig{}); err != nil {
		t.Fatal(err)
	}
	var errs natstest.AsyncErrors
	nc := natstest.Connect(t, srv.ClientURL(), nats.UserInfo("producer", "producer-secret"), nats.ErrorHandler(errs.Handler))
	pub, err := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := pub.Publish(ctx, broker.Target{Name: "Feed"}, broker.Event{Data: []byte("x")}); err != nil || n != 1 {
		t.Fatalf("acked publish: %d, %v", n, err)
	}
	for _, subject := range []string{"herald.live.>", "herald.ev.>", "herald.in.>", "herald.sys.>", s.EdgeInbox() + ".>", "$JS.API.>"} {
		if _, err := nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		errs.WaitViolation(t, subject)
	}
	for _, subject := range []string{"herald.live.Feed._._", "herald.sys.conn.Feed.c1", "herald.in.Feed._.c1",
		"$JS.API.STREAM.PURGE.HERALD_EVENTS", "$JS.API.STREAM.DELETE.HERALD_EVENTS", "$JS.API.DIRECT.GET.HERALD_EVENTS"} {
		if err := nc.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		errs.WaitViolation(t, subject)
	}
	info, err := jetstreamInfo(ctx, admin)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("the stream after the producer's tries: %+v, %v; want its one message", info, err)
	}
}

func jetstreamInfo(ctx context.Context, nc *nats.Conn) (*jetstream.StreamInfo, error) {
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "HERALD_EVENTS")
	if err != nil {
		return nil, err
	}
	return st.Info(ctx)
}

// The roles' subjects, without a server: each feature's subjects appear
// only with the feature on, every JetStream subject names one of the
// deployment's streams, and what only edges may read or write stays
// theirs.
func TestPermissionsOfRoles(t *testing.T) {
	s := broker.MustSubjects("acme.push")
	if got := s.EdgeInbox(); got != "_INBOX_ACME_PUSH_EDGE" {
		t.Errorf("EdgeInbox = %q", got)
	}
	all := broker.Streams{History: "H", Lifecycle: "L", TaskQueue: "Q", TaskBucket: "B"}
	p, err := s.Permissions(broker.RoleAdmin, all)
	if p != nil || err != nil {
		t.Errorf("admin: %+v %v, want no limits", p, err)
	}
	if _, err := s.Permissions("root", all); err == nil {
		t.Error("an unknown role has permissions")
	}
	has := func(list []string, prefix string) bool {
		return slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, prefix) })
	}
	none, _ := s.Permissions(broker.RoleEdge, broker.Streams{})
	if slices.Contains(none.Subscribe, "acme.push.live.>") || !slices.Contains(none.Subscribe, "acme.push.ev.>") ||
		has(none.Publish, "$") || has(none.Publish, "acme.push.task.") {
		t.Errorf("edge with every feature off: %+v", none)
	}
	for _, role := range broker.Roles[:len(broker.Roles)-1] {
		p, _ := s.Permissions(role, all)
		for _, subject := range append(slices.Clone(p.Publish), p.Subscribe...) {
			if strings.HasPrefix(subject, "$") {
				tokens := strings.Split(subject, ".")
				if !slices.ContainsFunc(tokens, func(t string) bool { return t == "H" || t == "L" || t == "Q" || t == "B" || t == "KV_B" }) &&
					subject != "$JS.API.INFO" {
					t.Errorf("%s: %s is not scoped to a stream", role, subject)
				}
			}
		}
		if role != broker.RoleEdge {
			for _, only := range []string{"acme.push.live.", "acme.push.ev.", "_INBOX_ACME_PUSH_EDGE", "acme.push.sys.edge.", "acme.push.local-stream.*"} {
				if slices.ContainsFunc(p.Subscribe, func(s string) bool { return strings.HasPrefix(s, only) && !strings.HasSuffix(s, ".cancel") }) {
					t.Errorf("%s may subscribe to %s…: %q", role, only, p.Subscribe)
				}
			}
			if has(p.Publish, "_INBOX") || has(p.Publish, "acme.push.sys.edge.") || has(p.Publish, "acme.push.live.") ||
				has(p.Publish, "$KV.") || has(p.Publish, "$JS.API.STREAM.CREATE") || has(p.Publish, "$JS.API.STREAM.DELETE") {
				t.Errorf("%s may publish where only edges do: %q", role, p.Publish)
			}
		}
		if role != broker.RoleEdge && role != broker.RoleBackend && p.Responses {
			t.Errorf("%s answers requests", role)
		}
	}
	// The backend does what a consumer and a worker do, and more.
	b, _ := s.Permissions(broker.RoleBackend, all)
	for _, role := range []broker.Role{broker.RoleConsumer, broker.RoleWorker} {
		p, _ := s.Permissions(role, all)
		for _, subject := range p.Publish {
			if !slices.Contains(b.Publish, subject) {
				t.Errorf("a %s may publish to %s, a backend not", role, subject)
			}
		}
		for _, subject := range p.Subscribe {
			if !slices.Contains(b.Subscribe, subject) {
				t.Errorf("a %s may subscribe to %s, a backend not", role, subject)
			}
		}
		if has(p.Subscribe, "acme.push.auth.") || has(p.Subscribe, "acme.push.local.") {
			t.Errorf("a %s receives connect or Local-stream requests: %q", role, p.Subscribe)
		}
	}
	w, _ := s.Permissions(broker.RoleWorker, broker.Streams{History: "H"})
	if !slices.Equal(w.Publish, []string{"acme.push.ev.>"}) || !slices.Equal(w.Subscribe, []string{"_INBOX.>"}) {
		t.Errorf("worker without tasks: %+v", w)
	}
	for _, in := range []string{"edge", "Producer", " consumer ", "worker", "BACKEND", "ADMIN"} {
		if _, err := broker.ParseRole(in); err != nil {
			t.Errorf("ParseRole(%q): %v", in, err)
		}
	}
	if _, err := broker.ParseRole("root"); err == nil || !strings.Contains(err.Error(), "worker, backend or admin") {
		t.Errorf("ParseRole(root): %v", err)
	}
}
