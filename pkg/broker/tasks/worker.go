package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/pkg/broker"
)

// Handler runs one task. Its ctx is cancelled when the task is stopped,
// times out, or the worker stops; the handler should then return soon.
// A nil error completes the task with result (marshalled to JSON; a
// json.RawMessage is sent as it is; nil means no result); an error fails
// it with the error's text.
type Handler func(ctx context.Context, t *Task) (result any, err error)

// WorkerOptions configures a Worker. A nil *WorkerOptions means every default.
type WorkerOptions struct {
	// Prefix is the subject prefix. Default "herald".
	Prefix string
	// Name identifies the worker in task records. Default host name and
	// process id.
	Name string
	// Logger receives warnings. Default: none.
	Logger *slog.Logger
}

// Worker runs tasks of async routes: it takes them from the routes'
// consumers, tells the edges what happens (reports), keeps its lease on
// each task while the handler runs, and acknowledges the work message
// once the task is finished. It is safe for concurrent use.
type Worker struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	names Names
	name  string
	log   *slog.Logger

	ctx    context.Context // cancelled by Stop (ErrWorkerStopped): running handlers end
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
}

// NewWorker returns a worker on nc.
func NewWorker(nc *nats.Conn, o *WorkerOptions) (*Worker, error) {
	var opts WorkerOptions
	if o != nil {
		opts = *o
	}
	names, err := NewNames(opts.Prefix)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if opts.Name == "" {
		host, _ := os.Hostname()
		opts.Name = host + "-" + strconv.Itoa(os.Getpid())
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Worker{nc: nc, js: js, names: names, name: opts.Name, log: opts.Logger, ctx: ctx, cancel: cancel}, nil
}

// Handle starts running tasks of route ("POST /process-data") with h, at
// most concurrency at a time in this worker (the route's cluster-wide
// limit applies on top). It returns at once; Stop ends it.
func (w *Worker) Handle(route string, concurrency int, h Handler) error {
	method, path, ok := strings.Cut(strings.TrimSpace(route), " ")
	if !ok || method == "" || !strings.HasPrefix(path, "/") {
		return fmt.Errorf("%w: route %q is not \"METHOD /path\"", ErrInvalid, route)
	}
	if concurrency <= 0 {
		concurrency = 1
	}
	key := RouteKey(method, strings.TrimSpace(path))
	for range concurrency {
		w.wg.Add(1)
		go w.loop(key, h)
	}
	return nil
}

// Stop stops taking tasks and cancels the running handlers; their tasks
// are handed back at once (a negative acknowledgement) and run again by
// another worker. It waits for the handlers to return.
func (w *Worker) Stop() {
	w.cancel(ErrWorkerStopped)
	w.wg.Wait()
}

// loop takes one task at a time from the route's consumer. The consumer
// is created by the edges; until one has, the loop waits.
func (w *Worker) loop(key string, h Handler) {
	defer w.wg.Done()
	var cons jetstream.Consumer
	backoff := 100 * time.Millisecond
	for cons == nil {
		ctx, cancel := context.WithTimeout(w.ctx, opTimeout)
		c, err := w.js.Consumer(ctx, w.names.Queue, key)
		cancel()
		if err == nil {
			cons = c
			break
		}
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(backoff):
			backoff = min(2*backoff, 5*time.Second)
		}
	}
	lease := DefaultLease
	if info := cons.CachedInfo(); info != nil && info.Config.AckWait > 0 {
		lease = info.Config.AckWait
	}
	for w.ctx.Err() == nil {
		// One task at a time: a worker never holds a message it is not
		// running, which would take one of the route's slots for nothing.
		fctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			select {
			case <-w.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for m := range batch.Messages() {
			w.run(m, lease, h)
		}
		cancel()
	}
}

// Task is one task handed to a handler.
type Task struct {
	// ID is the task id, the same on every attempt: use it to make side
	// effects idempotent.
	ID string
	// Attempt counts the deliveries of the task, from 1: more than 1
	// means an earlier worker did not finish it.
	Attempt int
	// Route is the route id, "[POST]/process-data".
	Route string
	// Body is the request's body.
	Body []byte
	// Query is the request's raw query string.
	Query string
	// Header holds the request headers the route forwards.
	Header map[string]string
	// Expire is the task's deadline (ctx's deadline too).
	Expire time.Time
	// Subject is the event subject of the task's stream.
	Subject string

	w      *Worker
	cancel context.CancelCauseFunc
	mu     sync.Mutex // serialises reports, so they arrive in order
	prog   Progress
}

// Causes a handler's ctx may be cancelled with (context.Cause).
var (
	// ErrStopped: the task was stopped, timed out, or is no longer wanted.
	ErrStopped = errors.New("tasks: task stopped")
	// ErrLeaseLost: the worker could not reach NATS for too long; the task
	// goes to another worker.
	ErrLeaseLost = errors.New("tasks: lease lost")
	// ErrWorkerStopped: Worker.Stop was called.
	ErrWorkerStopped = errors.New("tasks: worker stopping")
)

func (w *Worker) run(m jetstream.Msg, lease time.Duration, h Handler) {
	t := &Task{w: w, Body: m.Data(), Header: map[string]string{}}
	hd := m.Headers()
	t.ID = broker.HeaderValue(hd, HeaderID)
	t.Route = broker.HeaderValue(hd, HeaderRoute)
	t.Subject = broker.HeaderValue(hd, HeaderSubject)
	t.Query = broker.HeaderValue(hd, HeaderQuery)
	t.Expire, _ = time.Parse(time.RFC3339Nano, broker.HeaderValue(hd, HeaderExpire))
	for k, v := range hd {
		if name, ok := strings.CutPrefix(k, HeaderRequestPrefix); ok && len(v) > 0 {
			t.Header[name] = v[0]
		}
	}
	if meta, err := m.Metadata(); err == nil {
		t.Attempt = int(meta.NumDelivered)
	}
	t.prog.t = t
	if ValidID(t.ID) != nil || t.Expire.IsZero() {
		w.log.Warn("work message without a valid task id or deadline; dropped", "subject", m.Subject())
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithCancelCause(w.ctx)
	defer cancel(nil)
	ctx, cancelDeadline := context.WithDeadline(ctx, t.Expire)
	defer cancelDeadline()
	t.cancel = cancel

	stopSub, err := w.nc.Subscribe(w.names.Stop(t.ID), func(*nats.Msg) { cancel(ErrStopped) })
	if err == nil {
		defer func() { _ = stopSub.Unsubscribe() }()
	}
	reply, err := t.report(ctx, Report{State: StateRunning, Attempt: t.Attempt, Worker: w.name})
	switch {
	case err != nil:
		w.log.Warn("could not start a task: no edge answered; handing it back", "task", t.ID, "err", err)
		_ = m.Nak()
		return
	case reply.Stop:
		_ = m.Ack() // finished, stopped or gone: nothing to run
		return
	}

	beat := make(chan struct{})
	go func() {
		defer close(beat)
		w.keepLease(ctx, t, m, lease)
	}()
	result, herr := h(ctx, t)
	cause := context.Cause(ctx)
	cancel(context.Canceled) // ends the lease keeper
	<-beat

	var final Report
	switch {
	case errors.Is(cause, ErrStopped):
		_ = m.Ack()
		return
	case errors.Is(cause, ErrWorkerStopped):
		_ = m.Nak()
		return
	case errors.Is(cause, ErrLeaseLost):
		return // another worker has it, or will once the lease lapses
	case errors.Is(cause, context.DeadlineExceeded) && !time.Now().Before(t.Expire):
		final = Report{State: StateAborted, Error: ErrorTimeout}
	case herr != nil:
		final = Report{State: StateFailed, Error: herr.Error()}
	default:
		final = Report{State: StateCompleted}
		if result != nil {
			raw, ok := result.(json.RawMessage)
			if !ok {
				if raw, err = json.Marshal(result); err != nil {
					final = Report{State: StateFailed, Error: "result is not JSON: " + err.Error()}
				}
			}
			if final.State == StateCompleted {
				final.Result = raw
			}
		}
	}
	// Report the end with a fresh context: the handler's may be done. Keep
	// the lease while trying; give the task back if no edge answers.
	rctx, rcancel := context.WithTimeout(w.ctx, 4*lease)
	defer rcancel()
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(lease / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				_ = m.InProgress()
			}
		}
	}()
	_, err = t.report(rctx, final)
	close(done)
	if err != nil {
		w.log.Warn("could not report a task's end; it will run again", "task", t.ID, "err", err)
		_ = m.Nak()
		return
	}
	actx, acancel := context.WithTimeout(context.Background(), opTimeout)
	defer acancel()
	if err := m.DoubleAck(actx); err != nil {
		w.log.Warn("could not acknowledge a finished task; it may be delivered again and is then dropped", "task", t.ID, "err", err)
	}
}

// keepLease renews the worker's hold on the task every lease/3 and asks the
// edges whether the task is still wanted, until ctx ends. It cancels the
// task when the edges say stop, and when no renewal got through for
// 2/3 of the lease (the task then goes to another worker).
func (w *Worker) keepLease(ctx context.Context, t *Task, m jetstream.Msg, lease time.Duration) {
	every := lease / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := m.InProgress(); err == nil {
			rctx, cancel := context.WithTimeout(ctx, every)
			reply, err := t.report(rctx, Report{})
			cancel()
			if err == nil {
				lastOK = time.Now()
				if reply.Stop {
					t.cancel(ErrStopped)
					return
				}
			}
		}
		if time.Since(lastOK) > 2*lease/3 {
			t.cancel(ErrLeaseLost)
			return
		}
	}
}

// report sends one report and waits for the edges' answer, retrying while
// no edge answers, until ctx ends.
func (t *Task) report(ctx context.Context, rep Report) (Reply, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	body, err := json.Marshal(rep)
	if err != nil {
		return Reply{}, err
	}
	backoff := 50 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := t.w.nc.RequestWithContext(rctx, t.w.names.Report(t.ID), body)
		cancel()
		if err == nil {
			var reply Reply
			if err := json.Unmarshal(msg.Data, &reply); err != nil {
				return Reply{}, fmt.Errorf("tasks: malformed reply: %w", err)
			}
			if reply.Error != "" && !reply.Stop {
				return reply, fmt.Errorf("tasks: the edges refused the report: %s", reply.Error)
			}
			if reply.Stop {
				t.cancel(ErrStopped)
			}
			return reply, nil
		}
		select {
		case <-ctx.Done():
			return Reply{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
		}
	}
}

// Progress returns the task's progress, Pode's Set-PodeAsyncRouteProgress.
func (t *Task) Progress() *Progress { return &t.prog }

// Send publishes one of the task's own events to its stream: event type
// typ ("" for a plain message) and data, sent to clients as-is.
func (t *Task) Send(ctx context.Context, typ string, data []byte) error {
	m := broker.NewMsg(t.Subject, broker.Event{Type: typ, Data: data})
	err := publishJS(ctx, t.w.js, m)
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return t.w.nc.PublishMsg(m) // no history stream
	}
	return err
}
