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
// and a recorder of the events the tasks' streams receive.
type env struct {
	t   *testing.T
	url string
	svc *tasks.Service

	mu     sync.Mutex
	events []recorded
}

type recorded struct {
	subject, typ, data string
	close              bool
}

func newEnv(t *testing.T, lease time.Duration, routes ...tasks.RouteConfig) *env {
	t.Helper()
	srv := natstest.StartServer(t)
	e := &env{t: t, url: srv.ClientURL()}
	nc := natstest.Connect(t, e.url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := broker.OpenHistory(ctx, nc, broker.MustSubjects(""), broker.HistoryConfig{}); err != nil {
		t.Fatal(err)
	}
	sub, err := nc.Subscribe("herald.live.>", func(m *nats.Msg) {
		ev, control := broker.DecodeEvent(m)
		e.mu.Lock()
		e.events = append(e.events, recorded{subject: m.Subject, typ: ev.Type, data: string(ev.Data), close: control == broker.ControlClose})
		e.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	e.svc, err = tasks.Open(ctx, nc, tasks.Config{Lease: lease, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.svc.Close)
	return e
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
	nc := natstest.Connect(e.t, e.url)
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
	ncA := natstest.Connect(t, e.url)
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
	nc := natstest.Connect(t, e.url)
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
