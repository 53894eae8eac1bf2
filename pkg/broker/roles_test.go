package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// The features edges share with the app's side, run end to end with
// nothing but the roles' permissions (Subjects.Permissions) — the edge's
// for the edge, the backend's or the consumer's for the app — and what
// each role may not do.

// rolePair starts a server whose users are the roles and returns an edge
// connection and a backend connection. When the test ends, neither may
// have needed more than its permissions.
func rolePair(t *testing.T) (edge, backend *nats.Conn) {
	t.Helper()
	srv := natstest.StartRoleServer(t, broker.Streams{})
	var edgeErrs, backendErrs natstest.AsyncErrors
	t.Cleanup(func() {
		edgeErrs.NoViolations(t, "the edge")
		backendErrs.NoViolations(t, "the backend")
	})
	return natstest.ConnectAs(t, srv.ClientURL(), broker.RoleEdge, &edgeErrs),
		natstest.ConnectAs(t, srv.ClientURL(), broker.RoleBackend, &backendErrs)
}

// denied connects as role and checks that each of its publishes and
// subscriptions is refused.
func denied(t *testing.T, url string, role broker.Role, publish, subscribe []string) {
	t.Helper()
	var errs natstest.AsyncErrors
	nc := natstest.ConnectAs(t, url, role, &errs)
	for _, subject := range subscribe {
		if _, err := nc.QueueSubscribeSync(subject, "q"); err != nil {
			t.Fatal(err)
		}
		errs.WaitViolation(t, subject)
	}
	for _, subject := range publish {
		if err := nc.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		errs.WaitViolation(t, subject)
	}
}

// A backend decides connects for an edge: an allow (cached, then purged
// by the backend) and a deny. A backend answers each request once: a
// second answer, or any other message to an edge's inbox, is refused.
// Only a backend hears connect requests or purges the edges' caches.
func TestBackendRoleDecidesConnects(t *testing.T) {
	srv := natstest.StartRoleServer(t, broker.Streams{})
	url := srv.ClientURL()
	var edgeErrs, backendErrs natstest.AsyncErrors
	edge := natstest.ConnectAs(t, url, broker.RoleEdge, &edgeErrs)
	backend := natstest.ConnectAs(t, url, broker.RoleBackend, &backendErrs)
	a, err := broker.NewAuthClient(edge, broker.AuthOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	serveAuth(t, backend, "Feed", func(r broker.AuthRequest) broker.AuthAnswer {
		if r.Cookies["session"] != "alice" {
			return broker.AuthAnswer{Status: 401, Reason: "sign in first"}
		}
		return broker.AuthAnswer{Allow: true, ClientID: strp("alice-1"), Cache: &broker.AuthCache{TTL: 60, Vary: []string{"cookie:session"}}}
	})
	ctx := context.Background()
	alice := &broker.AuthRequest{Transport: "sse", Name: "Feed", Scope: "global", Cookies: map[string]string{"session": "alice"}}
	ans, src, err := a.Ask(ctx, alice)
	if err != nil || !ans.Allow || *ans.ClientID != "alice-1" || src != broker.FromBackend {
		t.Fatalf("alice: %+v from %v, %v", ans, src, err)
	}
	if _, src, _ := a.Ask(ctx, alice); src != broker.FromCache {
		t.Fatal("the allow was not cached")
	}
	if err := broker.PurgeAuthCache(backend, "", nil); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return a.CachedAnswers() == 0 }, "the backend's purge did not reach the edge")
	ans, src, err = a.Ask(ctx, &broker.AuthRequest{Transport: "sse", Name: "Feed", Scope: "global"})
	if err != nil || ans.Allow || ans.Status != 401 || src != broker.FromBackend {
		t.Fatalf("anonymous: %+v from %v, %v", ans, src, err)
	}

	// One answer per request.
	twice, err := backend.QueueSubscribe("herald.auth.Twice", "herald-auth", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"allow":false,"status":403}`))
		_ = m.Respond([]byte(`{"allow":true}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = twice.Unsubscribe() }()
	_ = backend.Flush()
	if ans, _, err := a.Ask(ctx, &broker.AuthRequest{Name: "Twice"}); err != nil || ans.Allow {
		t.Fatalf("twice: %+v, %v", ans, err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(backendErrs.Violations()) == 1 }, "a second answer went through: %v", backendErrs.List())
	edgeErrs.NoViolations(t, "the edge")

	inbox := broker.MustSubjects("").EdgeInbox()
	denied(t, url, broker.RoleBackend, []string{inbox + ".forged"}, []string{inbox + ".>", "herald.auth-cache.purge"})
	for _, role := range []broker.Role{broker.RoleProducer, broker.RoleConsumer, broker.RoleWorker} {
		denied(t, url, role, []string{"herald.auth-cache.purge", "herald.auth.Feed"}, []string{"herald.auth.*", inbox + ".>"})
	}
}

// A backend serves a Local stream of several events to an edge, and
// hears the edge's cancel of another. Nobody but edges reads a stream,
// and only a backend hears Local-stream requests.
func TestBackendRoleServesLocalStreams(t *testing.T) {
	srv := natstest.StartRoleServer(t, broker.Streams{})
	url := srv.ClientURL()
	var edgeErrs, backendErrs natstest.AsyncErrors
	edge := natstest.ConnectAs(t, url, broker.RoleEdge, &edgeErrs)
	backend := natstest.ConnectAs(t, url, broker.RoleBackend, &backendErrs)
	l, err := broker.NewLocalClient(edge, "")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	cancelled := make(chan struct{})
	sub, wait, err := broker.ServeLocal(backend, "", "*", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		if req.Name == "Endless" {
			_ = w.Send(broker.Event{Data: []byte("first")})
			<-ctx.Done()
			close(cancelled)
			return
		}
		for i := range n {
			_ = w.Send(broker.Event{ID: fmt.Sprint(i), Type: "row", Data: fmt.Appendf(nil, `{"row":%d}`, i)})
		}
		_ = w.KeepAlive()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe(); wait() }()
	_ = backend.Flush()

	s, err := l.Open(&broker.LocalRequest{AuthRequest: broker.AuthRequest{Name: "Report", ClientID: "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for {
		r, err := next(t, s, 5*time.Second)
		if err != nil {
			t.Fatalf("after %d rows: %v", len(rows), err)
		}
		if r.Kind == broker.LocalEnd {
			break
		}
		if r.Kind == broker.LocalEvent {
			rows = append(rows, r.Event.ID+" "+string(r.Event.Data))
		}
	}
	s.Stop()
	if len(rows) != n || rows[n-1] != fmt.Sprintf(`%d {"row":%d}`, n-1, n-1) {
		t.Fatalf("the edge read %d rows: %q", len(rows), rows)
	}

	e, err := l.Open(&broker.LocalRequest{AuthRequest: broker.AuthRequest{Name: "Endless"}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := next(t, e, 5*time.Second); err != nil || string(r.Event.Data) != "first" {
		t.Fatalf("endless: %+v %v", r, err)
	}
	e.Stop() // the client went away
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend did not hear the edge's cancel")
	}
	edgeErrs.NoViolations(t, "the edge")
	backendErrs.NoViolations(t, "the backend")

	denied(t, url, broker.RoleBackend, []string{"herald.local.Report", "herald.local-stream.x.cancel"}, []string{"herald.local-stream.*"})
	for _, role := range []broker.Role{broker.RoleProducer, broker.RoleConsumer, broker.RoleWorker} {
		denied(t, url, role, []string{"herald.local-stream.x"}, []string{"herald.local.*", "herald.local-stream.*.cancel", "herald.local-stream.*"})
	}
}

// Presence across two edges with the edge's permissions: the watching
// edge mirrors the other's connections from a snapshot of several chunks
// sent to its inbox, a consumer's presence requests are answered with
// both edges' connections, and when one edge dies the other publishes the
// disconnects of all its connections, which the consumer reads. A
// consumer reads no edge traffic and sends no gather; a producer asks
// nothing.
func TestPresenceRoles(t *testing.T) {
	srv := natstest.StartRoleServer(t, broker.Streams{})
	url := srv.ClientURL()
	var edgeErrs, consumerErrs natstest.AsyncErrors
	inbox := broker.MustSubjects("").EdgeInbox()
	asEdge := []nats.Option{nats.UserInfo("edge", "edge-secret"), nats.CustomInboxPrefix(inbox), nats.ErrorHandler(edgeErrs.Handler)}
	admin := natstest.ConnectAs(t, url, broker.RoleAdmin, &natstest.AsyncErrors{})
	var chunks atomic.Int32
	spy, err := admin.Subscribe(inbox+".>", func(m *nats.Msg) {
		var c struct {
			Part *int `json:"part"`
		}
		if json.Unmarshal(m.Data, &c) == nil && c.Part != nil {
			chunks.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = spy.Unsubscribe() }()
	_ = admin.Flush()

	a := startFake(t, url, "edge-a", broker.PresenceOptions{Watchers: 1}, asEdge...)
	// Enough connections that a snapshot (256 KiB a chunk) takes several.
	const many = 3000
	for i := range many {
		a.connect(t, "Room", "g", fmt.Sprintf("client-%05d-with-a-long-enough-id", i), "sse_h1")
	}
	b := startFake(t, url, "edge-b", broker.PresenceOptions{Watchers: 1}, asEdge...)
	b.connect(t, "Room", "", "bob", "ws")
	natstest.Eventually(t, 10*time.Second, func() bool { return slices.Contains(b.p.Watched(), "edge-a") }, "edge-b does not mirror edge-a")
	// The spy reads the chunks on a connection of its own: they may reach
	// it after edge-b has applied them.
	natstest.Eventually(t, 5*time.Second, func() bool { return chunks.Load() >= 2 }, "the snapshot did not come in several chunks")

	consumer := natstest.ConnectAs(t, url, broker.RoleConsumer, &consumerErrs)
	var lost atomic.Int32
	life, err := consumer.Subscribe("herald.sys.lifecycle.disconnect.>", func(m *nats.Msg) {
		if ev, err := broker.DecodeLifecycle(m); err == nil && ev.Reason == broker.ReasonEdgeLost && ev.ReportedBy == "edge-b" {
			lost.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = life.Unsubscribe() }()
	_ = consumer.Flush()
	pc, err := broker.NewPresenceClient(consumer, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"client-00042-with-a-long-enough-id", "bob"} {
		r, err := pc.Lookup(ctx, broker.LookupRequest{Name: "Room", ClientID: id})
		if err != nil || !r.Connected || !slices.Equal(r.Edges, []string{"edge-a", "edge-b"}) || len(r.Missing) != 0 {
			t.Fatalf("lookup %s: %+v, %v", id, r, err)
		}
	}
	page, err := pc.List(ctx, broker.ListRequest{Name: "Room", Limit: 1000})
	if err != nil || len(page.Connections) != 1000 || page.Next == "" {
		t.Fatalf("list: %d connections, next %q, %v", len(page.Connections), page.Next, err)
	}
	check, err := pc.Check(ctx, broker.CheckRequest{Name: "Room", ClientID: "bob", Kind: broker.CheckSignal})
	if err != nil || check.Status != 200 {
		t.Fatalf("check: %+v, %v", check, err)
	}

	a.kill()
	natstest.Eventually(t, 20*time.Second, func() bool { return lost.Load() == many }, "the consumer did not read an edge_lost disconnect for each connection")
	edgeErrs.NoViolations(t, "an edge")
	consumerErrs.NoViolations(t, "the consumer")

	denied(t, url, broker.RoleConsumer,
		[]string{"herald.sys.presence.gather", "herald.sys.snapshot.edge-b", "herald.sys.edge.edge-b.lost", "herald.sys.lifecycle.connect.x.Room._.c"},
		[]string{"herald.sys.>", "herald.sys.edge.*.*", "herald.sys.presence.lookup", inbox + ".>"})
	denied(t, url, broker.RoleProducer, []string{"herald.sys.presence.lookup"}, []string{"herald.sys.lifecycle.>"})
}

// The lifecycle stream with roles' permissions: an edge creates it, and a
// consumer reads it through a durable consumer of its own, and through an
// ordered one. Neither may delete or purge the stream.
func TestLifecycleStreamRoles(t *testing.T) {
	s := broker.MustSubjects("")
	cfg := broker.LifecycleStreamConfig{MaxAge: time.Hour}
	stream := cfg.StreamConfig(s).Name
	srv := natstest.StartRoleServer(t, broker.Streams{Lifecycle: stream})
	url := srv.ClientURL()
	var edgeErrs, consumerErrs natstest.AsyncErrors
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	edge := natstest.ConnectAs(t, url, broker.RoleEdge, &edgeErrs)
	if name, err := broker.EnsureLifecycleStream(ctx, edge, s, cfg); err != nil || name != stream {
		t.Fatalf("the edge could not create the lifecycle stream: %q %v", name, err)
	}
	f := startFake(t, url, "edge-a", broker.PresenceOptions{}, nats.UserInfo("edge", "edge-secret"),
		nats.CustomInboxPrefix(s.EdgeInbox()), nats.ErrorHandler(edgeErrs.Handler))
	c1 := f.connect(t, "Room", "", "c1", "sse_h1")
	f.connect(t, "Room", "", "c2", "ws")
	f.disconnect(t, c1, "gone")

	consumer := natstest.ConnectAs(t, url, broker.RoleConsumer, &consumerErrs)
	js, err := jetstream.New(consumer)
	if err != nil {
		t.Fatal(err)
	}
	read := func(c jetstream.Consumer) []string {
		var got []string
		for len(got) < 3 {
			batch, err := c.Fetch(3-len(got), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for m := range batch.Messages() {
				ev, err := broker.DecodeLifecycle(&nats.Msg{Subject: m.Subject(), Data: m.Data()})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, ev.Event+" "+ev.ClientID)
				_ = m.Ack()
			}
			if err := batch.Error(); err != nil {
				t.Fatal(err)
			}
		}
		return got
	}
	want := []string{"connect c1", "connect c2", "disconnect c1"}
	durable, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "my-backend",
		AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: s.LifecycleAll()})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(durable); !slices.Equal(got, want) {
		t.Fatalf("the durable consumer read %q, want %q", got, want)
	}
	if _, err := js.Consumer(ctx, stream, "my-backend"); err != nil {
		t.Fatal(err)
	}
	ordered, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(ordered); !slices.Equal(got, want) {
		t.Fatalf("the ordered consumer read %q, want %q", got, want)
	}
	if st, err := js.Stream(ctx, stream); err != nil || st.CachedInfo().State.Msgs != 3 {
		t.Fatalf("the consumer reads the stream's info: %v", err)
	}
	edgeErrs.NoViolations(t, "the edge")
	consumerErrs.NoViolations(t, "the consumer")

	api := "$JS.API."
	for _, role := range []broker.Role{broker.RoleConsumer, broker.RoleEdge} {
		denied(t, url, role, []string{api + "STREAM.DELETE." + stream, api + "STREAM.PURGE." + stream,
			api + "STREAM.MSG.DELETE." + stream, api + "STREAM.UPDATE." + stream}, nil)
	}
	denied(t, url, broker.RoleProducer, []string{api + "CONSUMER.CREATE." + stream + ".x", api + "CONSUMER.MSG.NEXT." + stream + ".my-backend"}, nil)
}
