package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/broker/tasks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A producer or worker importing the SDK compiles no NATS server.
func TestNoServerInDeps(t *testing.T) { natstest.RequireNoServer(t, ".") }

// env is a NATS server with the history stream, a task service for routes
// and a recorder of the events the tasks' streams receive. The server's
// users are Herald's roles: the service runs with the edge's permissions,
// workers with the worker's, and neither may need more (checked when the
// test ends); the recorder is an admin.
type env struct {
	t     *testing.T
	url   string
	svc   *tasks.Service
	names tasks.Names

	edgeErrs, workerErrs natstest.AsyncErrors

	mu     sync.Mutex
	events []recorded
}

type recorded struct {
	subject, typ, data string
	close              bool
}

func newEnv(t *testing.T, lease time.Duration, routes ...tasks.RouteConfig) *env {
	t.Helper()
	s := broker.MustSubjects("")
	names, err := tasks.NewNames("")
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.StartRoleServer(t, broker.Streams{History: broker.HistoryConfig{}.StreamConfig(s).Name,
		TaskQueue: names.Queue, TaskBucket: names.Bucket})
	e := &env{t: t, url: srv.ClientURL(), names: names}
	t.Cleanup(func() {
		e.edgeErrs.NoViolations(t, "the edge")
		e.workerErrs.NoViolations(t, "a worker")
	})
	nc := e.connect(broker.RoleEdge)
	admin := e.connect(broker.RoleAdmin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := broker.OpenHistory(ctx, nc, s, broker.HistoryConfig{}); err != nil {
		t.Fatal(err)
	}
	sub, err := admin.Subscribe("herald.live.>", func(m *nats.Msg) {
		ev, control := broker.DecodeEvent(m)
		e.mu.Lock()
		e.events = append(e.events, recorded{subject: m.Subject, typ: ev.Type, data: string(ev.Data), close: control == broker.ControlClose})
		e.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	e.svc, err = tasks.Open(ctx, nc, tasks.Config{Lease: lease, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.svc.Close)
	return e
}

// connect connects to the env's server as role; the edge's and the
// workers' permissions violations are recorded.
func (e *env) connect(role broker.Role) *nats.Conn {
	e.t.Helper()
	var errs natstest.AsyncErrors
	switch role {
	case broker.RoleEdge:
		return natstest.ConnectAs(e.t, e.url, role, &e.edgeErrs)
	case broker.RoleWorker:
		return natstest.ConnectAs(e.t, e.url, role, &e.workerErrs)
	}
	return natstest.ConnectAs(e.t, e.url, role, &errs)
}

// streamOf returns what the stream of task rec received, in order: event
// type and data, or "close".
func (e *env) streamOf(rec *tasks.Record) []string {
	subject := strings.Replace(e.svc.Names().EventSubject(rec.SSEName), "herald.ev.", "herald.live.", 1)
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, r := range e.events {
		if r.subject != subject {
			continue
		}
		if r.close {
			out = append(out, "close")
			continue
		}
		out = append(out, r.typ+" "+r.data)
	}
	return out
}

func (e *env) worker(name string, route string, concurrency int, h tasks.Handler) *tasks.Worker {
	e.t.Helper()
	nc := e.connect(broker.RoleWorker)
	w, err := tasks.NewWorker(nc, &tasks.WorkerOptions{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Handle(route, concurrency, h); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.Stop)
	return w
}

func (e *env) waitState(id, state string) *tasks.Record {
	e.t.Helper()
	var rec *tasks.Record
	natstest.CheckFor(e.t, 20*time.Second, 20*time.Millisecond, func() error {
		var err error
		rec, err = e.svc.Get(context.Background(), id)
		if err != nil {
			return err
		}
		if rec.State != state {
			return fmt.Errorf("task %s is %s, want %s", id, rec.State, state)
		}
		return nil
	})
	return rec
}

func route(path string) tasks.RouteConfig {
	return tasks.RouteConfig{Method: "POST", Path: path, MaxRunning: 2, Timeout: time.Minute, Retention: time.Minute,
		Cancellable: true, SSEGroup: path, SendResult: true, Attempts: 3}
}

// A task runs on a worker: progress as Pode computes it reaches the
// stream, then the final 100, pode.taskCompleted with the result, and the
// close of the stream; the record says Completed with the result.
func TestTaskCompletes(t *testing.T) {
	e := newEnv(t, 0, route("/process-data"))
	var got atomic.Value
	e.worker("w1", "POST /process-data", 1, func(ctx context.Context, task *tasks.Task) (any, error) {
		got.Store(fmt.Sprintf("%s %s %q %s", task.Route, task.Query, task.Body, task.Header["Content-Type"]))
		p := task.Progress()
		if err := p.Range(ctx, 0, 100, 25); err != nil {
			return nil, err
		}
		for range 5 { // one tick more than the range: capped at 99
			if err := p.Tick(ctx); err != nil {
				return nil, err
			}
		}
		if err := task.Send(ctx, "note", []byte(`{"attempt":`+fmt.Sprint(task.Attempt)+`}`)); err != nil {
			return nil, err
		}
		return map[string]string{"message": "Processing completed"}, nil
	})
	rec, err := e.svc.Start(context.Background(), "POST_process-data", tasks.Request{
		Body: []byte(`{"n":1}`), Query: "a=1", Headers: map[string]string{"Content-Type": "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != tasks.StateNotStarted || rec.SSEName != "/process-data_events?Id="+rec.ID || len(rec.ID) != 36 {
		t.Fatalf("new record %+v", rec)
	}
	done := e.waitState(rec.ID, tasks.StateCompleted)
	if string(done.Result) != `{"message":"Processing completed"}` || done.Progress == nil || *done.Progress != 100 || done.Attempt != 1 || done.Worker != "w1" || done.Started == nil {
		t.Errorf("completed record %+v", done)
	}
	if g := got.Load(); g != `[POST]/process-data a=1 "{\"n\":1}" application/json` {
		t.Errorf("the worker saw %v", g)
	}
	want := []string{"pode.progress 0", "pode.progress 25", "pode.progress 50", "pode.progress 75", "pode.progress 99", "pode.progress 99",
		`note {"attempt":1}`, "pode.progress 100", `pode.taskCompleted {"State":"Completed","Result":{"message":"Processing completed"}}`, "close"}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := e.streamOf(rec); strings.Join(got, "|") != strings.Join(want, "|") {
			return fmt.Errorf("stream received\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		return nil
	})
}

// Stopping a running task aborts it, cancels the handler's context with
// ErrStopped, and ends the stream with pode.taskCompleted Aborted; stopping
// it again is ErrFinished; a task that is not cancellable refuses.
func TestTaskStop(t *testing.T) {
	r := route("/slow")
	fixed := route("/fixed")
	fixed.Cancellable = false
	e := newEnv(t, 0, r, fixed)
	running := make(chan string, 2)
	cause := make(chan error, 2)
	block := func(ctx context.Context, task *tasks.Task) (any, error) {
		running <- task.ID
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	}
	e.worker("w1", "POST /slow", 1, block)
	e.worker("w2", "POST /fixed", 1, block)
	ctx := context.Background()
	rec, err := e.svc.Start(ctx, "POST_slow", tasks.Request{})
	if err != nil {
		t.Fatal(err)
	}
	<-running
	e.waitState(rec.ID, tasks.StateRunning)
	stopped, err := e.svc.Stop(ctx, rec.ID)
	if err != nil || stopped.State != tasks.StateAborted || stopped.Error != tasks.ErrorAborted {
		t.Fatalf("stop: %+v %v", stopped, err)
	}
	select {
	case c := <-cause:
		if !errors.Is(c, tasks.ErrStopped) {
			t.Errorf("handler's context ended with %v, want ErrStopped", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler was not told to stop")
	}
	if _, err := e.svc.Stop(ctx, rec.ID); !errors.Is(err, tasks.ErrFinished) {
		t.Errorf("second stop: %v, want ErrFinished", err)
	}
	if _, err := e.svc.Stop(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, tasks.ErrNotFound) {
		t.Errorf("stop of an unknown task: %v, want ErrNotFound", err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		got := strings.Join(e.streamOf(rec), "|")
		if got != `pode.taskCompleted {"State":"Aborted","Error":"Aborted by the user"}|close` {
			return fmt.Errorf("stream received %s", got)
		}
		return nil
	})

	other, err := e.svc.Start(ctx, "POST_fixed", tasks.Request{})
	if err != nil {
		t.Fatal(err)
	}
	<-running
	if _, err := e.svc.Stop(ctx, other.ID); !errors.Is(err, tasks.ErrNotCancellable) {
		t.Errorf("stop of a non-cancellable task: %v", err)
	}
}

// A task past its timeout is Aborted with "Timeout" by the edges (its
// deadline key expires) and its worker's context ends.
func TestTaskTimeout(t *testing.T) {
	r := route("/late")
	r.Timeout = 2 * time.Second
	e := newEnv(t, 0, r)
	ended := make(chan struct{})
	e.worker("w1", "POST /late", 1, func(ctx context.Context, task *tasks.Task) (any, error) {
		<-ctx.Done()
		close(ended)
		return nil, ctx.Err()
	})
	rec, err := e.svc.Start(context.Background(), "POST_late", tasks.Request{})
	if err != nil {
		t.Fatal(err)
	}
	done := e.waitState(rec.ID, tasks.StateAborted)
	if done.Error != tasks.ErrorTimeout {
		t.Errorf("aborted with %q, want Timeout", done.Error)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not stop at the deadline")
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		got := strings.Join(e.streamOf(rec), "|")
		if got != `pode.taskCompleted {"State":"Aborted","Error":"Timeout"}|close` {
			return fmt.Errorf("stream received %s", got)
		}
		return nil
	})
}

// The route's limit holds across workers: three workers with room for
// three tasks each never run more than MaxRunning tasks of the route at once.
func TestConcurrencyLimit(t *testing.T) {
	r := route("/limited")
	e := newEnv(t, 0, r)
	var running, peak atomic.Int32
	h := func(ctx context.Context, task *tasks.Task) (any, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(150 * time.Millisecond)
		running.Add(-1)
		return nil, nil
	}
	for i := range 3 {
		e.worker(fmt.Sprintf("w%d", i), "POST /limited", 3, h)
	}
	var ids []string
	for range 8 {
		rec, err := e.svc.Start(context.Background(), "POST_limited", tasks.Request{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	for _, id := range ids {
		e.waitState(id, tasks.StateCompleted)
	}
	if p := peak.Load(); p != int32(r.MaxRunning) {
		t.Errorf("at most %d tasks ran at once, want exactly the limit %d", p, r.MaxRunning)
	}
}

// A worker that vanishes mid-task (its NATS connection closed) stops
// renewing its lease: the task goes to another worker as attempt 2, which
// completes it; the stream gets one pode.taskCompleted.
func TestRedeliveryAfterWorkerLoss(t *testing.T) {
	e := newEnv(t, 2*time.Second, route("/fragile"))
	ncA := e.connect(broker.RoleWorker)
	a, err := tasks.NewWorker(ncA, &tasks.WorkerOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	startedA := make(chan struct{})
	if err := a.Handle("POST /fragile", 1, func(ctx context.Context, task *tasks.Task) (any, error) {
		close(startedA)
		<-ctx.Done()
		return nil, ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	rec, err := e.svc.Start(context.Background(), "POST_fragile", tasks.Request{})
	if err != nil {
		t.Fatal(err)
	}
	<-startedA
	e.waitState(rec.ID, tasks.StateRunning)
	ncA.Close() // worker a is gone for NATS
	e.worker("b", "POST /fragile", 1, func(ctx context.Context, task *tasks.Task) (any, error) {
		return json.RawMessage(fmt.Sprintf(`{"attempt":%d}`, task.Attempt)), nil
	})
	done := e.waitState(rec.ID, tasks.StateCompleted)
	a.Stop()
	if done.Worker != "b" || done.Attempt != 2 || string(done.Result) != `{"attempt":2}` {
		t.Errorf("completed by %s on attempt %d with %s, want b, 2", done.Worker, done.Attempt, done.Result)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		n := 0
		for _, ev := range e.streamOf(rec) {
			if strings.HasPrefix(ev, tasks.EventCompleted) {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d pode.taskCompleted events", n)
		}
		return nil
	})
}

// RouteKey names routes readably in subjects and as consumers.
func TestRouteKey(t *testing.T) {
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/process-data", "POST_process-data"},
		{"get", "/generate-report", "GET_generate-report"},
		{"PUT", "/a/b.c d", "PUT_a_b-c-d"},
		{"POST", "/", "POST_"},
	} {
		if got := tasks.RouteKey(c.method, c.path); got != c.want {
			t.Errorf("RouteKey(%s, %s) = %s, want %s", c.method, c.path, got, c.want)
		}
	}
}

// A task whose workers keep dying is failed once it was delivered
// Attempts times, with a message saying so, and its stream is told.
func TestTaskGivenUp(t *testing.T) {
	r := route("/doomed")
	r.Attempts = 1
	e := newEnv(t, 2*time.Second, r)
	nc := e.connect(broker.RoleWorker)
	w, err := tasks.NewWorker(nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	if err := w.Handle("POST /doomed", 1, func(ctx context.Context, task *tasks.Task) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	rec, err := e.svc.Start(context.Background(), "POST_doomed", tasks.Request{})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	e.waitState(rec.ID, tasks.StateRunning)
	nc.Close() // the only attempt's worker is gone
	failed := e.waitState(rec.ID, tasks.StateFailed)
	w.Stop()
	if failed.Error != "the task was handed to a worker 1 times and no worker finished it" {
		t.Errorf("error %q", failed.Error)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		got := strings.Join(e.streamOf(rec), "|")
		if !strings.HasPrefix(got, `pode.taskCompleted {"State":"Failed","Error":"the task was handed`) || !strings.HasSuffix(got, "|close") {
			return fmt.Errorf("stream received %s", got)
		}
		return nil
	})
}

// What the roles may not do with tasks: a worker neither reads nor writes
// task records, nor answers reports (deciding for the edges), nor
// removes the queue; a producer and a consumer take no task and hear no
// stop. The task they all tried to touch is then run by a worker as if
// nothing happened.
func TestTaskPermissions(t *testing.T) {
	e := newEnv(t, 0, route("/guarded"))
	ctx := context.Background()
	rec, err := e.svc.Start(ctx, "POST_guarded", tasks.Request{Body: []byte("private")})
	if err != nil {
		t.Fatal(err)
	}
	q, b := e.names.Queue, e.names.Bucket
	try := func(role broker.Role, publish, subscribe []string) {
		t.Helper()
		var errs natstest.AsyncErrors
		nc := natstest.ConnectAs(t, e.url, role, &errs)
		for _, subject := range subscribe {
			if _, err := nc.QueueSubscribeSync(subject, "herald-tasks"); err != nil {
				t.Fatal(err)
			}
			errs.WaitViolation(t, subject)
		}
		for _, subject := range publish {
			if err := nc.PublishRequest(subject, nc.NewInbox(), []byte(`{"batch":1}`)); err != nil {
				t.Fatal(err)
			}
			errs.WaitViolation(t, subject)
		}
	}
	api := "$JS.API."
	try(broker.RoleWorker, []string{
		api + "DIRECT.GET.KV_" + b + ".$KV." + b + ".t." + rec.ID,
		api + "STREAM.MSG.GET.KV_" + b,
		"$KV." + b + ".t." + rec.ID,
		api + "STREAM.DELETE." + q, api + "STREAM.PURGE." + q, api + "CONSUMER.DELETE." + q + ".POST_guarded",
		"herald.task.run.POST_guarded", "herald.task.stop." + rec.ID,
	}, []string{"herald.task.report.*", "herald.task.run.>"})
	for _, role := range []broker.Role{broker.RoleProducer, broker.RoleConsumer} {
		try(role, []string{api + "CONSUMER.MSG.NEXT." + q + ".POST_guarded", api + "DIRECT.GET.KV_" + b + ".$KV." + b + ".t." + rec.ID,
			"herald.task.report." + rec.ID}, []string{"herald.task.stop.*"})
	}
	if got, err := e.svc.Get(ctx, rec.ID); err != nil || got.State != tasks.StateNotStarted {
		t.Fatalf("the task after the tries: %+v, %v", got, err)
	}
	e.worker("w1", "POST /guarded", 1, func(ctx context.Context, task *tasks.Task) (any, error) {
		if err := task.Progress().Set(ctx, 50); err != nil {
			return nil, err
		}
		return string(task.Body), nil
	})
	if done := e.waitState(rec.ID, tasks.StateCompleted); string(done.Result) != `"private"` {
		t.Errorf("result %s", done.Result)
	}
}

// The workers' protocol, spoken with core NATS only under the worker's
// permissions, as a worker in another language does: read the route's
// consumer, pull one message, report, renew the lease, publish an event
// of its own, complete and acknowledge. The task completes and its stream
// gets the worker's event, the edges' completion and the close.
func TestWorkerProtocolUnderWorkerRole(t *testing.T) {
	e := newEnv(t, 0, route("/raw"))
	ctx := context.Background()
	rec, err := e.svc.Start(ctx, "POST_raw", tasks.Request{Body: []byte(`{"n":7}`)})
	if err != nil {
		t.Fatal(err)
	}
	nc := e.connect(broker.RoleWorker)
	consumer := e.names.Queue + ".POST_raw"
	info, err := nc.Request("$JS.API.CONSUMER.INFO."+consumer, nil, 5*time.Second)
	if err != nil || !strings.Contains(string(info.Data), `"name":"POST_raw"`) {
		t.Fatalf("consumer info: %v %s", err, info.Data)
	}
	inbox := nc.NewInbox()
	pulls, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	var m *nats.Msg
	for m == nil {
		if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+consumer, inbox, []byte(`{"batch":1,"expires":2000000000}`)); err != nil {
			t.Fatal(err)
		}
		for {
			got, err := pulls.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got.Header.Get(tasks.HeaderID) != "" {
				m = got
				break
			}
			if status := got.Header.Get("Status"); status == "404" || status == "408" {
				break // no message yet, or the pull expired: pull again
			}
		}
	}
	if m.Header.Get(tasks.HeaderID) != rec.ID || string(m.Data) != `{"n":7}` {
		t.Fatalf("work message %q %s", m.Header, m.Data)
	}
	report := func(body string) tasks.Reply {
		t.Helper()
		r, err := nc.Request(e.names.Report(rec.ID), []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var reply tasks.Reply
		if err := json.Unmarshal(r.Data, &reply); err != nil || reply.Error != "" {
			t.Fatalf("report %s: %s %v", body, r.Data, err)
		}
		return reply
	}
	if r := report(`{"state":"Running","attempt":1,"worker":"raw"}`); r.Stop || r.State != tasks.StateRunning {
		t.Fatalf("start: %+v", r)
	}
	if err := nc.Publish(m.Reply, []byte("+WPI")); err != nil {
		t.Fatal(err)
	}
	if r := report(`{"progress":50}`); r.Stop {
		t.Fatalf("progress: %+v", r)
	}
	note := nats.NewMsg(m.Header.Get(tasks.HeaderSubject))
	note.Header.Set("Herald-Event", "note")
	note.Data = []byte(`"from a raw worker"`)
	if err := nc.PublishMsg(note); err != nil {
		t.Fatal(err)
	}
	if r := report(`{"state":"Completed","result":{"message":"done"}}`); r.State != tasks.StateCompleted {
		t.Fatalf("completion: %+v", r)
	}
	if _, err := nc.Request(m.Reply, []byte("+ACK"), 5*time.Second); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if done := e.waitState(rec.ID, tasks.StateCompleted); string(done.Result) != `{"message":"done"}` || done.Worker != "raw" {
		t.Errorf("completed record %+v", done)
	}
	want := []string{"pode.progress 50", `note "from a raw worker"`, "pode.progress 100",
		`pode.taskCompleted {"State":"Completed","Result":{"message":"done"}}`, "close"}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := e.streamOf(rec); strings.Join(got, "|") != strings.Join(want, "|") {
			return fmt.Errorf("stream received\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		return nil
	})
}
