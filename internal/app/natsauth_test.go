package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/broker/tasks"
)

// userKey makes a user nkey: the seed stays with the test (the client),
// the public key goes into -nats-auth.
func userKey(t *testing.T) (nats.Option, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, kp.Sign), pub
}

// cmd/embedded with -nats-auth: its NATS port admits only the configured
// credentials, each with its role's least privilege, while its own edge
// keeps working. The producer of README's example publishes an event that
// reaches a client and can do nothing else: it reads no event, forges no
// position or connection notice, and cannot delete or purge the history.
// A consumer reads client messages and answers. cmd/edge joins
// with an edge credential and serves, resumes included, with exactly the
// edge's permissions.
func TestEmbeddedNATSAuth(t *testing.T) {
	adminKey, adminPub := userKey(t)
	const token = "auth-test-token"
	var logs natstest.SyncBuffer
	addrs, cancel, done := started(t, app.RunEmbedded, []string{
		"-listen", "127.0.0.1:0",
		"-nats-listen", "127.0.0.1:0",
		"-data", t.TempDir(),
		"-publish-token", token,
		"-ws-echo", "",
		"-shutdown-grace", "5s",
		"-nats-auth", "edge:user:edge-2:edge-secret-2,producer:user:orders:orders-secret,consumer:token:worker-secret-token,admin:nkey:" + adminPub,
	}, &logs)
	defer stopped(t, cancel, done, 15*time.Second)
	base := "http://" + addrs.HTTP
	waitReadyz(t, base, http.StatusOK, 10*time.Second)
	ctx, cancelCtx := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelCtx()

	// No credential, no entry.
	if nc, err := nats.Connect(addrs.NATS, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to the NATS port")
	}

	a := openSSE(t, base, "/sse/%2Fpriv", nil)
	aID := a.open.Data
	var producerErrs natstest.AsyncErrors
	producer := natstest.Connect(t, addrs.NATS, nats.UserInfo("orders", "orders-secret"), nats.ErrorHandler(producerErrs.Handler))

	// The producer's events reach the client: plain and acknowledged.
	if err := producer.Publish("herald.ev./priv._._", []byte("plain")); err != nil {
		t.Fatal(err)
	}
	pub, err := broker.NewPublisher(producer, &broker.PublisherOptions{Acked: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, broker.Target{Name: "/priv"}, broker.Event{Data: []byte("acked")}); err != nil {
		t.Fatalf("the producer's acknowledged publish: %v", err)
	}
	a.expect(t, 10*time.Second, "message plain", "message acked")

	// It reads nothing.
	for _, subject := range []string{"herald.live.>", "herald.ev.>", "herald.in.>", "herald.sys.>", "_INBOX_HERALD_EDGE.>"} {
		if _, err := producer.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		producerErrs.WaitViolation(t, subject)
	}
	// It forges nothing: a position on the live subjects, a notice that
	// replaces (closes) the client.
	forged := nats.NewMsg("herald.live./priv._._")
	forged.Header.Set("Nats-Sequence", "1000")
	forged.Data = []byte("forged position")
	if err := producer.PublishMsg(forged); err != nil {
		t.Fatal(err)
	}
	producerErrs.WaitViolation(t, "herald.live./priv._._")
	clientID := strings.Split(strings.Split(aID, `"clientId":"`)[1], `"`)[0]
	kick := nats.NewMsg("herald.sys.conn./priv." + clientID)
	kick.Header.Set("Herald-Control", "replace")
	kick.Header.Set("Herald-Conn", "forged")
	kick.Header.Set("Herald-Since", "9999999999999999999")
	if err := producer.PublishMsg(kick); err != nil {
		t.Fatal(err)
	}
	producerErrs.WaitViolation(t, "herald.sys.conn./priv."+clientID)
	// It cannot remove the history.
	pjs, _ := jetstream.New(producer)
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	if err := pjs.DeleteStream(short, "HERALD_EVENTS"); err == nil {
		t.Error("the producer deleted the history stream")
	}
	cancelShort()
	producerErrs.WaitViolation(t, "$JS.API.STREAM.DELETE.HERALD_EVENTS")
	short, cancelShort = context.WithTimeout(ctx, time.Second)
	if s, err := pjs.Stream(short, "HERALD_EVENTS"); err == nil {
		_ = s.Purge(short)
		t.Error("the producer read the stream's info")
	}
	cancelShort()
	if err := producer.Publish("$JS.API.STREAM.PURGE.HERALD_EVENTS", nil); err != nil {
		t.Fatal(err)
	}
	producerErrs.WaitViolation(t, "$JS.API.STREAM.PURGE.HERALD_EVENTS")

	// The client is still connected, saw none of it, and gets what follows.
	if err := producer.Publish("herald.ev./priv._._", []byte("after")); err != nil {
		t.Fatal(err)
	}
	a.expect(t, 10*time.Second, "message after")
	admin := natstest.Connect(t, addrs.NATS, adminKey)
	ajs, _ := jetstream.New(admin)
	stream, err := ajs.Stream(ctx, "HERALD_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Fatalf("the history after the producer's tries: %v messages (%v), want its 3 events", info.State.Msgs, err)
	}

	// A consumer reads what WebSocket clients send and answers them; it
	// reads no event.
	var workerErrs natstest.AsyncErrors
	worker := natstest.Connect(t, addrs.NATS, nats.Token("worker-secret-token"), nats.ErrorHandler(workerErrs.Handler))
	inbound, err := worker.SubscribeSync("herald.in.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.SubscribeSync("herald.live.>"); err != nil {
		t.Fatal(err)
	}
	workerErrs.WaitViolation(t, "herald.live.>")
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(ctx, "ws://"+addrs.HTTP+"/ws/priv", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"message":"hello worker"}`)); err != nil {
		t.Fatal(err)
	}
	m, err := inbound.NextMsg(10 * time.Second)
	if err != nil || !strings.Contains(string(m.Data), "hello worker") {
		t.Fatalf("the worker did not receive the client's message: %v %v", m, err)
	}
	if err := worker.Publish("herald.ev./priv._._", []byte("worker answer")); err != nil {
		t.Fatal(err)
	}
	a.expect(t, 10*time.Second, "message worker answer")

	// cmd/edge joins with an edge credential: live events, and a resume.
	var edgeLogs natstest.SyncBuffer
	edgeAddrs, cancelEdge, edgeDone := started(t, app.RunEdge, []string{
		"-listen", "127.0.0.1:0",
		"-nats", addrs.NATS,
		"-nats-user", "edge-2",
		"-nats-password", "edge-secret-2",
		"-publish-token", token,
		"-drain-window", "0s",
		"-shutdown-grace", "5s",
	}, &edgeLogs)
	defer stopped(t, cancelEdge, edgeDone, 15*time.Second)
	edge2 := "http://" + edgeAddrs.HTTP
	waitReadyz(t, edge2, http.StatusOK, 10*time.Second)
	b := openSSE(t, edge2, "/sse/%2Fpriv", nil)
	if code, body := publishHTTP(t, edge2, token, `{"name":"/priv","data":"via edge 2"}`); code != http.StatusAccepted {
		t.Fatalf("POST /publish on cmd/edge = %d %s", code, body)
	}
	last := b.expect(t, 10*time.Second, "message via edge 2")[0].ID
	a.expect(t, 10*time.Second, "message via edge 2")
	b.close()
	for _, d := range []string{"missed 1", "missed 2"} {
		if _, err := pub.Publish(ctx, broker.Target{Name: "/priv"}, broker.Event{Data: []byte(d)}); err != nil {
			t.Fatal(err)
		}
	}
	r := openSSE(t, edge2, "/sse/%2Fpriv", http.Header{"Last-Event-ID": {last}})
	r.expect(t, 10*time.Second, "message missed 1", "message missed 2")

	for name, out := range map[string]string{"cmd/embedded": logs.String(), "cmd/edge": edgeLogs.String()} {
		for _, bad := range []string{"Permissions Violation", "permissions violation", "orders-secret", "worker-secret-token", "edge-secret-2"} {
			if strings.Contains(out, bad) {
				i := strings.Index(out, bad)
				t.Errorf("%s's log shows %q: %s", name, bad, out[max(0, i-300):min(len(out), i+300)])
			}
		}
	}
}

// -nats-auth: each item names a role and one credential; a bad one is an
// error of the option that never repeats its secret; the summary in the
// logs shows roles, user names and public keys only.
func TestNATSAuthOption(t *testing.T) {
	_, pub := userKey(t)
	seed := "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"
	for _, tc := range []struct {
		item, want string
	}{
		{"root:user:a:secret-one", `role "root"`},
		{"producer", "want producer:user:NAME:PASSWORD"},
		{"producer:user:a", "want producer:user:NAME:PASSWORD"},
		{"producer:user::secret-one", "want producer:user:NAME:PASSWORD"},
		{"producer:password:a:secret-one", `kind "password"`},
		{"producer:token:", "token is empty"},
		{"admin:nkey:" + seed, "seed"},
		{"admin:nkey:UABC", "not a public user nkey"},
		{"producer:user:a:secret-one,consumer:user:a:secret-two", "item 2"},
		{"producer:token:secret-one,consumer:token:secret-one", "item 2"},
		{"producer:user:a:secret one", "whitespace"},
	} {
		t.Run(tc.item, func(t *testing.T) {
			_, err := app.Load(app.ModeEmbedded, []string{"-nats-auth", tc.item}, nil, io.Discard)
			var oe *app.OptionError
			if !errors.As(err, &oe) || oe.Option != "nats-auth" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want an OptionError on -nats-auth saying %q", err, tc.want)
			}
			for _, secret := range []string{"secret-one", "secret-two", "secret one", seed} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q shows a secret", err)
				}
			}
		})
	}
	if _, err := app.Load(app.ModeEdge, []string{"-nats-auth", "admin:token:abc"}, nil, io.Discard); err == nil {
		t.Error("cmd/edge accepts -nats-auth (its NATS server is not its own)")
	}
	notSeed := writeSecretFile(t, "not-a-seed", pub)
	for _, args := range [][]string{
		{"-nats-nkey", notSeed},
		{"-nats-nkey", notSeed + ".missing"},
		{"-nats-nkey", notSeed, "-nats-token", "some-token"},
	} {
		_, err := app.Load(app.ModeEdge, append([]string{"-nats", "nats://127.0.0.1:4222"}, args...), nil, io.Discard)
		var oe *app.OptionError
		if !errors.As(err, &oe) || oe.Option != "nats-nkey" {
			t.Errorf("%q: err = %v, want an OptionError on -nats-nkey", args, err)
		}
	}

	o, err := app.Load(app.ModeEmbedded, nil, func(k string) (string, bool) {
		if k == "HERALD_NATS_AUTH" {
			return "producer:user:orders:pw:with:colons,consumer:token:tok-secret,admin:nkey:" + pub, true
		}
		return "", false
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := o.String()
	want := "nats-auth=producer:user:orders:" + app.Redacted + ",consumer:token:" + app.Redacted + ",admin:nkey:" + pub
	if !strings.Contains(got, want) || strings.Contains(got, "pw:with:colons") || strings.Contains(got, "tok-secret") {
		t.Errorf("summary %s, want %s", got, want)
	}
}

// Without -nats-auth, a NATS listener other machines can reach is worth a
// warning at start; on loopback it is not.
func TestOpenNATSWarning(t *testing.T) {
	for _, tc := range []struct {
		listen string
		auth   []string
		warn   bool
	}{
		{"127.0.0.1:0", nil, false},
		{"0.0.0.0:0", nil, true},
		{"0.0.0.0:0", []string{"-nats-auth", "admin:token:some-admin-token"}, false},
	} {
		var logs natstest.SyncBuffer
		args := append([]string{"-listen", "127.0.0.1:0", "-nats-listen", tc.listen, "-data", t.TempDir(),
			"-publish-token", "warn-test-token", "-shutdown-grace", "5s"}, tc.auth...)
		_, cancel, done := started(t, app.RunEmbedded, args, &logs)
		stopped(t, cancel, done, 15*time.Second)
		if got := strings.Contains(logs.String(), "without authentication"); got != tc.warn {
			t.Errorf("-nats-listen %s %v: warned %v, want %v", tc.listen, tc.auth, got, tc.warn)
		}
	}
}

// cmd/edge with credentials the NATS server refuses does not linger,
// unready for ever: once nats.go gives up it stops, saying why.
func TestEdgeWithRefusedCredentialsStops(t *testing.T) {
	addrs, cancel, done := started(t, app.RunEmbedded, []string{
		"-listen", "127.0.0.1:0", "-nats-listen", "127.0.0.1:0", "-data", t.TempDir(),
		"-publish-token", "refused-test", "-shutdown-grace", "5s",
		"-nats-auth", "edge:user:edge-2:right-secret",
	}, &natstest.SyncBuffer{})
	defer stopped(t, cancel, done, 15*time.Second)

	var logs natstest.SyncBuffer
	ctx, cancelEdge := context.WithCancel(context.Background())
	defer cancelEdge()
	result := make(chan error, 1)
	go func() {
		result <- app.RunEdge(ctx, app.Runtime{Args: []string{
			"-listen", "127.0.0.1:0", "-nats", addrs.NATS, "-nats-user", "edge-2", "-nats-password", "wrong-secret",
			"-publish-token", "refused-test", "-drain-window", "0s", "-shutdown-grace", "5s",
		}, Stderr: &logs})
	}()
	select {
	case err := <-result:
		if err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
			t.Fatalf("cmd/edge returned %v, want the refusal", err)
		}
		if strings.Contains(err.Error()+logs.String(), "wrong-secret") {
			t.Fatal("the password reached the error or the log")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cmd/edge with refused credentials still runs after 30 s")
	}
}

// cmd/edge joins cmd/embedded with an edge credential of each kind
// -nats-auth takes: a token (-nats-token) and an nkey (-nats-nkey, the
// seed in a file); the user and password kind is TestEmbeddedNATSAuth's.
func TestEdgeJoinsWithTokenOrNkey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := writeSecretFile(t, "edge.nk", string(seed))
	const token = "join-test-token"
	addrs, cancel, done := started(t, app.RunEmbedded, []string{
		"-listen", "127.0.0.1:0", "-nats-listen", "127.0.0.1:0", "-data", t.TempDir(),
		"-publish-token", token, "-shutdown-grace", "5s",
		"-nats-auth", "edge:token:edge-token-secret,edge:nkey:" + pub,
	}, &natstest.SyncBuffer{})
	defer stopped(t, cancel, done, 15*time.Second)
	for _, creds := range [][]string{
		{"-nats-token", "edge-token-secret"},
		{"-nats-nkey", seedFile},
	} {
		t.Run(creds[0], func(t *testing.T) {
			var logs natstest.SyncBuffer
			edgeAddrs, cancelEdge, edgeDone := started(t, app.RunEdge, append([]string{
				"-listen", "127.0.0.1:0", "-nats", addrs.NATS, "-publish-token", token,
				"-drain-window", "0s", "-shutdown-grace", "5s",
			}, creds...), &logs)
			defer stopped(t, cancelEdge, edgeDone, 15*time.Second)
			base := "http://" + edgeAddrs.HTTP
			waitReadyz(t, base, http.StatusOK, 10*time.Second)
			c := openSSE(t, base, "/sse/Join", nil)
			if code, body := publishHTTP(t, base, token, `{"name":"Join","data":"joined"}`); code != http.StatusAccepted {
				t.Fatalf("POST /publish = %d %s", code, body)
			}
			c.expect(t, 10*time.Second, "message joined")
			if strings.Contains(logs.String(), "edge-token-secret") || strings.Contains(logs.String(), string(seed)) {
				t.Error("a secret reached the log")
			}
		})
	}
}

func writeSecretFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cmd/embedded with -nats-auth, a task route and the lifecycle stream:
// its own edge sets up the queue, the records and the lifecycle stream
// with the edge's permissions; a worker credential runs a task started
// over HTTP (its progress and completion reach the task's stream); a
// backend credential reads the lifecycle stream through a durable
// consumer of its own. Nobody needs more than its permissions.
func TestEmbeddedNATSAuthTasksAndLifecycle(t *testing.T) {
	var logs natstest.SyncBuffer
	addrs, cancel, done := started(t, app.RunEmbedded, []string{
		"-listen", "127.0.0.1:0",
		"-nats-listen", "127.0.0.1:0",
		"-data", t.TempDir(),
		"-ws-echo", "",
		"-shutdown-grace", "5s",
		"-task-routes", "POST /work result",
		"-lifecycle-max-age", "1h",
		"-nats-auth", "worker:user:resizer:resizer-secret,backend:user:app:app-secret",
	}, &logs)
	defer stopped(t, cancel, done, 15*time.Second)
	base := "http://" + addrs.HTTP
	waitReadyz(t, base, http.StatusOK, 10*time.Second)
	ctx, cancelCtx := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelCtx()

	var workerErrs, backendErrs natstest.AsyncErrors
	wc := natstest.Connect(t, addrs.NATS, nats.UserInfo("resizer", "resizer-secret"), nats.ErrorHandler(workerErrs.Handler))
	w, err := tasks.NewWorker(wc, &tasks.WorkerOptions{Name: "resizer"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := w.Handle("POST /work", 1, func(ctx context.Context, task *tasks.Task) (any, error) {
		if err := task.Progress().Set(ctx, 50); err != nil {
			return nil, err
		}
		return map[string]string{"got": string(task.Body)}, nil
	}); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Post(base+"/work", "text/plain", strings.NewReader("picture"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /work = %d %s", resp.StatusCode, body)
	}
	var info struct {
		ID  string `json:"Id"`
		Sse struct {
			URL string `json:"Url"`
		}
	}
	if err := json.Unmarshal(body, &info); err != nil || info.Sse.URL == "" {
		t.Fatalf("task info %s: %v", body, err)
	}
	stream := openSSE(t, base, info.Sse.URL, nil)
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		resp, err := http.Get(base + "/task?id=" + info.ID)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"State":"Completed"`) || !strings.Contains(string(b), `"got":"picture"`) {
			return fmt.Errorf("task %s", b)
		}
		return nil
	})
	for ev := stream.next(t, 10*time.Second); ev.Type != "pode.taskCompleted"; ev = stream.next(t, 10*time.Second) {
	}
	stream.close()

	// The stream's connect and disconnect are kept; the backend reads them.
	bc := natstest.Connect(t, addrs.NATS, nats.UserInfo("app", "app-secret"), nats.ErrorHandler(backendErrs.Handler))
	js, err := jetstream.New(bc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "HERALD_LIFECYCLE", jetstream.ConsumerConfig{Durable: "app",
		AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "herald.sys.lifecycle.connect.>"})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var connects int
	for m := range batch.Messages() {
		if ev, err := broker.DecodeLifecycle(&nats.Msg{Subject: m.Subject(), Data: m.Data()}); err == nil && ev.Event == "connect" {
			connects++
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if connects != 1 {
		t.Fatalf("the backend read %d connects from the lifecycle stream (%v)", connects, batch.Error())
	}

	workerErrs.NoViolations(t, "the worker")
	backendErrs.NoViolations(t, "the backend")
	for _, bad := range []string{"Permissions Violation", "permissions violation"} {
		if out := logs.String(); strings.Contains(out, bad) {
			i := strings.Index(out, bad)
			t.Errorf("cmd/embedded's log shows %q: %s", bad, out[max(0, i-300):min(len(out), i+300)])
		}
	}
}
