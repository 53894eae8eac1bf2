package tasks

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// RouteConfig is one async route as the edges run it.
type RouteConfig struct {
	Method, Path string
	// MaxRunning is the most tasks of the route running at once across the
	// cluster (Pode's -MaxRunspaces): the consumer's MaxAckPending.
	MaxRunning int
	// Timeout is how long a task may take from its creation; past it the
	// task is Aborted with Error "Timeout" and its worker told to stop.
	Timeout time.Duration
	// Retention is how long a finished task is kept.
	Retention time.Duration
	// Cancellable tasks can be stopped.
	Cancellable bool
	// SSEGroup is the group of the task streams' connections.
	SSEGroup string
	// SendResult puts the result into pode.taskCompleted.
	SendResult bool
	// Attempts bounds how many times a task is handed to a worker (a
	// worker that dies mid-task has it redelivered): MaxDeliver.
	Attempts int
}

// Key returns the route key (RouteKey).
func (r RouteConfig) Key() string { return RouteKey(r.Method, r.Path) }

// Config configures a Service.
type Config struct {
	// Prefix is the subject prefix. Default "herald".
	Prefix string
	// Replicas of the work-queue stream and the bucket: 1 on one node, 3
	// in a cluster. Default 1.
	Replicas int
	// Lease is how long a worker holds a task without renewing it before
	// the task is handed to another worker (the consumers' AckWait). The
	// Go worker renews every Lease/3. Default 30 s.
	Lease time.Duration
	// Routes are the async routes.
	Routes []RouteConfig
	// Logger receives warnings. Default: none.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultLease = 30 * time.Second
	// markerTTL is how long the bucket keeps the marker of an expired
	// deadline: an edge that starts within it still times the task out.
	markerTTL = time.Hour
	// opTimeout bounds one NATS round trip of the service.
	opTimeout = 10 * time.Second
	// maxReportWorkers bounds the reports one edge handles at once.
	maxReportWorkers = 64
)

// Errors of Stop, Start and reports.
var (
	ErrNotCancellable = errors.New("tasks: the task is not cancellable")
	ErrFinished       = errors.New("tasks: the task is already completed")
	ErrUnavailable    = errors.New("tasks: NATS unavailable")
)

// Service is the edges' side of async routes: it queues tasks, keeps
// their records, applies workers' reports, stops and times tasks out, and
// publishes progress and completion to the tasks' streams. Every edge runs
// one; they share everything through NATS and none is special.
type Service struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	names  Names
	cfg    Config
	routes map[string]RouteConfig // by key
	log    *slog.Logger

	sub    *nats.Subscription
	gaveUp *nats.Subscription // max-deliveries advisories of the routes' consumers
	watch  jetstream.KeyWatcher
	slots  chan struct{} // bounds concurrent report handling

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// Open creates (or updates) the work-queue stream, one consumer per route
// and the bucket, then starts answering reports and watching deadlines.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Service, error) {
	names, err := NewNames(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	cfg.Lease = cmp.Or(cfg.Lease, DefaultLease)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Service{nc: nc, js: js, names: names, cfg: cfg, routes: map[string]RouteConfig{}, log: log,
		slots: make(chan struct{}, maxReportWorkers), stop: make(chan struct{})}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        names.Queue,
		Description: "Herald async tasks: the work queue",
		Subjects:    []string{names.RunAll()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("tasks: stream %s: %w", names.Queue, err)
	}
	for _, r := range cfg.Routes {
		key := r.Key()
		if _, dup := s.routes[key]; dup {
			return nil, fmt.Errorf("%w: routes %s and %s share the key %s", ErrInvalid, RouteID(s.routes[key].Method, s.routes[key].Path), RouteID(r.Method, r.Path), key)
		}
		s.routes[key] = r
		if _, err := js.CreateOrUpdateConsumer(ctx, names.Queue, jetstream.ConsumerConfig{
			Durable:       key,
			Description:   RouteID(r.Method, r.Path),
			FilterSubject: names.Run(key),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.Lease,
			MaxAckPending: r.MaxRunning,
			MaxDeliver:    r.Attempts,
		}); err != nil {
			return nil, fmt.Errorf("tasks: consumer %s: %w", key, err)
		}
	}
	s.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         names.Bucket,
		Description:    "Herald async tasks: records and deadlines",
		History:        1,
		Replicas:       cfg.Replicas,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: markerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("tasks: bucket %s: %w", names.Bucket, err)
	}
	s.sub, err = nc.QueueSubscribe(names.report+"*", "herald-tasks", s.onReport)
	if err != nil {
		return nil, fmt.Errorf("tasks: subscribe to reports: %w", err)
	}
	s.gaveUp, err = nc.QueueSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+names.Queue+".*", "herald-tasks", s.onGaveUp)
	if err != nil {
		_ = s.sub.Unsubscribe()
		return nil, fmt.Errorf("tasks: subscribe to advisories: %w", err)
	}
	s.watch, err = s.kv.Watch(ctx, "d.>")
	if err != nil {
		_ = s.sub.Unsubscribe()
		_ = s.gaveUp.Unsubscribe()
		return nil, fmt.Errorf("tasks: watch deadlines: %w", err)
	}
	s.wg.Add(1)
	go s.deadlines()
	return s, nil
}

// Names returns the NATS names the service uses.
func (s *Service) Names() Names { return s.names }

// Route returns the route with key key.
func (s *Service) Route(key string) (RouteConfig, bool) {
	r, ok := s.routes[key]
	return r, ok
}

// Close stops answering reports and watching deadlines, and waits for the
// work in progress.
func (s *Service) Close() {
	s.once.Do(func() {
		close(s.stop)
		_ = s.sub.Unsubscribe()
		_ = s.gaveUp.Unsubscribe()
		_ = s.watch.Stop()
	})
	s.wg.Wait()
}

// Request is what reaches the worker of a new task.
type Request struct {
	Body    []byte
	Query   string
	Headers map[string]string // forwarded request headers, by canonical name
}

// Start creates a task of route key: its record and deadline, then its
// work message. It returns the new record.
func (s *Service) Start(ctx context.Context, key string, req Request) (*Record, error) {
	r, ok := s.routes[key]
	if !ok {
		return nil, fmt.Errorf("%w: no route %s", ErrInvalid, key)
	}
	id := policy.NewClientID() // 128 random bits: the stream URL is the capability
	now := time.Now().UTC()
	rec := &Record{
		ID: id, Route: RouteID(r.Method, r.Path), Method: strings.ToUpper(r.Method), Path: r.Path,
		State: StateNotStarted, Cancellable: r.Cancellable, Created: now, Expire: now.Add(r.Timeout),
		SSEName: StreamURL(r.Path, id), SSEGroup: r.SSEGroup, SendResult: r.SendResult, Retention: r.Retention,
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if err := s.create(ctx, recordKey(id), val, r.Timeout+r.Retention); err != nil {
		return nil, fmt.Errorf("%w: create task record: %v", ErrUnavailable, err)
	}
	if err := s.create(ctx, deadlineKey(id), []byte(key), r.Timeout); err != nil {
		s.forget(id)
		return nil, fmt.Errorf("%w: create task deadline: %v", ErrUnavailable, err)
	}
	m := nats.NewMsg(s.names.Run(key))
	m.Data = req.Body
	m.Header.Set(HeaderID, id)
	m.Header.Set(HeaderRoute, rec.Route)
	m.Header.Set(HeaderSubject, s.names.EventSubject(rec.SSEName))
	m.Header.Set(HeaderExpire, rec.Expire.Format(time.RFC3339Nano))
	if req.Query != "" {
		m.Header.Set(HeaderQuery, req.Query)
	}
	for k, v := range req.Headers {
		m.Header.Set(HeaderRequestPrefix+k, v)
	}
	if err := s.publish(ctx, m, id); err != nil {
		s.forget(id)
		return nil, fmt.Errorf("%w: queue task: %v", ErrUnavailable, err)
	}
	return rec, nil
}

// create creates a key with a TTL, retrying while the bucket has no
// leader (an election after a node died). A retry that finds the key is
// a success: ids are random, so it is this call's own write.
func (s *Service) create(ctx context.Context, key string, val []byte, life time.Duration) error {
	return retry(ctx, func(ctx context.Context) error {
		_, err := s.kv.Create(ctx, key, val, jetstream.KeyTTL(ttl(life)))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return err
	})
}

// retry runs op until it succeeds, fails for a reason other than an
// unanswered request (no stream leader during an election, a timeout), or
// ctx (bounded by opTimeout) ends. Each attempt has its own shorter bound.
func retry(ctx context.Context, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	backoff := 50 * time.Millisecond
	for {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		err := op(actx)
		acancel()
		transient := errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
			errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
		if err == nil || !transient {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
			backoff = min(2*backoff, 500*time.Millisecond)
		}
	}
}

// forget removes a task that could not be queued.
func (s *Service) forget(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_ = s.kv.Purge(ctx, recordKey(id))
	_ = s.kv.Purge(ctx, deadlineKey(id))
}

// ttl is a per-message TTL: JetStream takes whole seconds, at least one.
func ttl(d time.Duration) time.Duration {
	return max(time.Second, d.Round(time.Second))
}

// Get returns task id's record, or ErrNotFound. A task past its deadline
// that no edge has timed out yet (every edge was down when it expired) is
// timed out now.
func (s *Service) Get(ctx context.Context, id string) (*Record, error) {
	rec, _, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !rec.IsTerminal() && time.Now().After(rec.Expire.Add(2*time.Second)) {
		if r, err := s.timeout(ctx, id); err == nil {
			return r, nil
		}
	}
	return rec, nil
}

func (s *Service) get(ctx context.Context, id string) (*Record, uint64, error) {
	if err := ValidID(id); err != nil {
		return nil, 0, ErrNotFound
	}
	var e jetstream.KeyValueEntry
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		e, err = s.kv.Get(ctx, recordKey(id))
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var rec Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("tasks: record %s: %w", id, err)
	}
	return &rec, e.Revision(), nil
}

// List returns every task's record.
func (s *Service) List(ctx context.Context) ([]*Record, error) {
	w, err := s.kv.Watch(ctx, "t.>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer func() { _ = w.Stop() }()
	var out []*Record
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("%w: list interrupted", ErrUnavailable)
			}
			if e == nil {
				return out, nil // the initial values are all in
			}
			var rec Record
			if json.Unmarshal(e.Value(), &rec) == nil {
				out = append(out, &rec)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
}

// update changes task id's record with fn by compare-and-set, retrying on
// a conflict with a fresh read. fn reports whether it changed the record;
// when it did not, nothing is written.
func (s *Service) update(ctx context.Context, id string, fn func(*Record) (bool, error)) (*Record, bool, error) {
	for {
		rec, rev, err := s.get(ctx, id)
		if err != nil {
			return nil, false, err
		}
		changed, err := fn(rec)
		if err != nil || !changed {
			return rec, false, err
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return nil, false, err
		}
		life := rec.Retention
		if !rec.IsTerminal() {
			life += time.Until(rec.Expire)
		}
		m := nats.NewMsg("$KV." + s.names.Bucket + "." + recordKey(id))
		m.Data = val
		err = retry(ctx, func(ctx context.Context) error {
			_, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl(life)))
			return err
		})
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // someone else changed it: decide again on the fresh record
		}
		if err != nil {
			return nil, false, fmt.Errorf("%w: update task: %v", ErrUnavailable, err)
		}
		return rec, true, nil
	}
}

// Stop aborts task id ("Aborted by the user") and tells its worker. It
// returns ErrNotFound, ErrNotCancellable or ErrFinished when it cannot.
func (s *Service) Stop(ctx context.Context, id string) (*Record, error) {
	return s.abort(ctx, id, ErrorAborted, func(r *Record) error {
		switch {
		case r.IsTerminal():
			return ErrFinished
		case !r.Cancellable:
			return ErrNotCancellable
		}
		return nil
	})
}

// timeout aborts task id with "Timeout" if it has not finished.
func (s *Service) timeout(ctx context.Context, id string) (*Record, error) {
	return s.abort(ctx, id, ErrorTimeout, func(r *Record) error {
		if r.IsTerminal() {
			return ErrFinished
		}
		return nil
	})
}

func (s *Service) abort(ctx context.Context, id, why string, check func(*Record) error) (*Record, error) {
	rec, changed, err := s.update(ctx, id, func(r *Record) (bool, error) {
		if err := check(r); err != nil {
			return false, err
		}
		now := time.Now().UTC()
		r.State, r.Error, r.Completed, r.Notified = StateAborted, why, &now, false
		return true, nil
	})
	if err != nil {
		return rec, err
	}
	if changed {
		_ = s.nc.Publish(s.names.Stop(id), nil) // the running worker; a missed signal is caught by its next report
		s.notify(ctx, rec)
	}
	return rec, nil
}

// notify publishes a finished task's last events — pode.progress 100 when
// it completed, pode.taskCompleted, and the close of its stream — then
// marks the record notified. Each message has a fixed Nats-Msg-Id, so
// edges that notify the same task twice (one died half way) store each
// once within the history's duplicate window.
func (s *Service) notify(ctx context.Context, rec *Record) {
	subject := s.names.EventSubject(rec.SSEName)
	var msgs []*nats.Msg
	if rec.State == StateCompleted {
		msgs = append(msgs, withMsgID(broker.NewMsg(subject, broker.Event{Type: EventProgress, Data: []byte("100")}), rec.ID+":progress"))
	}
	msgs = append(msgs,
		withMsgID(broker.NewMsg(subject, broker.Event{Type: EventCompleted, Data: CompletedData(rec)}), rec.ID+":completed"),
		withMsgID(broker.NewCloseMsg(subject), rec.ID+":close"))
	for _, m := range msgs {
		if err := s.publishEvent(ctx, m); err != nil {
			s.log.Warn("could not publish a task's completion; the next report or stop retries", "task", rec.ID, "err", err)
			return
		}
	}
	_, _, err := s.update(ctx, rec.ID, func(r *Record) (bool, error) {
		if r.Notified || !r.IsTerminal() {
			return false, nil
		}
		r.Notified = true
		return true, nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("could not mark a task notified", "task", rec.ID, "err", err)
	}
}

func withMsgID(m *nats.Msg, id string) *nats.Msg {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(jetstream.MsgIDHeader, id)
	return m
}

// CompletedData is the data of pode.taskCompleted for a finished task:
// {"State":"Completed"} (with "Result" when the route sends it and there
// is one) or {"State":"Failed"|"Aborted","Error":"…"}.
func CompletedData(rec *Record) []byte {
	var b bytes.Buffer
	b.WriteString(`{"State":`)
	b.Write(jsonString(rec.State))
	switch {
	case rec.State == StateCompleted:
		if res := bytes.TrimSpace(rec.Result); rec.SendResult && len(res) > 0 && !bytes.Equal(res, []byte("null")) {
			b.WriteString(`,"Result":`)
			b.Write(res)
		}
	default:
		b.WriteString(`,"Error":`)
		b.Write(jsonString(rec.Error))
	}
	b.WriteByte('}')
	return b.Bytes()
}

func jsonString(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// FormatProgress is the data of a pode.progress event: the number as JSON.
func FormatProgress(p float64) []byte { return strconv.AppendFloat(nil, p, 'f', -1, 64) }

// publish stores m in JetStream with message id msgID (a retry within the
// stream's duplicate window is stored once), retrying while no stream
// answers, until ctx ends.
func (s *Service) publish(ctx context.Context, m *nats.Msg, msgID string) error {
	return publishJS(ctx, s.js, withMsgID(m, msgID))
}

// publishEvent stores an event in the history stream (or, without history,
// just publishes it: a stream that does not exist answers nobody).
func (s *Service) publishEvent(ctx context.Context, m *nats.Msg) error {
	err := publishJS(ctx, s.js, m)
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return s.nc.PublishMsg(m)
	}
	return err
}

func publishJS(ctx context.Context, js jetstream.JetStream, m *nats.Msg) error {
	if m.Header.Get(jetstream.MsgIDHeader) == "" {
		withMsgID(m, nuid.Next()) // a retry after a lost acknowledgement is stored once
	}
	return retry(ctx, func(ctx context.Context) error {
		_, err := js.PublishMsg(ctx, m, jetstream.WithRetryAttempts(0))
		return err
	})
}

// onReport answers a worker's report, off the NATS dispatcher, at most
// maxReportWorkers at once per edge.
func (s *Service) onReport(m *nats.Msg) {
	select {
	case s.slots <- struct{}{}:
	case <-s.stop:
		return
	}
	s.wg.Add(1)
	go func() {
		defer func() { <-s.slots; s.wg.Done() }()
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		id := strings.TrimPrefix(m.Subject, s.names.report)
		var rep Report
		dec := json.NewDecoder(bytes.NewReader(m.Data))
		dec.DisallowUnknownFields()
		var reply Reply
		if len(bytes.TrimSpace(m.Data)) > 0 {
			if err := dec.Decode(&rep); err != nil {
				reply.Error = "malformed report: " + err.Error()
			}
		}
		if reply.Error == "" {
			reply = s.apply(ctx, id, rep)
		}
		b, _ := json.Marshal(reply)
		_ = m.Respond(b)
	}()
}

// apply applies one report to task id.
func (s *Service) apply(ctx context.Context, id string, rep Report) Reply {
	var (
		rec     *Record
		changed bool
		err     error
	)
	switch {
	case rep.State == StateRunning:
		rec, _, err = s.update(ctx, id, func(r *Record) (bool, error) {
			if r.IsTerminal() {
				return false, nil
			}
			if r.Started == nil {
				now := time.Now().UTC()
				r.Started = &now
			}
			r.State, r.Attempt, r.Worker = StateRunning, rep.Attempt, rep.Worker
			return true, nil
		})
	case IsTerminal(rep.State):
		if rep.State == StateAborted && rep.Error != ErrorTimeout {
			return Reply{Error: `a worker reports Aborted only with error "Timeout"; stop tasks through the edges`}
		}
		rec, changed, err = s.update(ctx, id, func(r *Record) (bool, error) {
			if r.IsTerminal() {
				return false, nil
			}
			if rep.State == StateAborted && time.Now().Before(r.Expire.Add(-2*time.Second)) {
				return false, fmt.Errorf("%w: the task's deadline is %s", ErrInvalid, r.Expire.Format(time.RFC3339))
			}
			now := time.Now().UTC()
			r.State, r.Completed, r.Notified = rep.State, &now, false
			switch rep.State {
			case StateCompleted:
				full := 100.0
				r.Progress, r.Result, r.Error = &full, rep.Result, ""
			default:
				r.Error = rep.Error
				if r.Error == "" {
					r.Error = "the worker reported a failure without a message"
				}
			}
			return true, nil
		})
		if err == nil && changed {
			s.notify(ctx, rec)
			return Reply{State: rec.State, Stop: true}
		}
	case rep.State != "":
		return Reply{Error: fmt.Sprintf("unknown state %q", rep.State)}
	case rep.Progress != nil:
		p := *rep.Progress
		if math.IsNaN(p) || p < 0 || p > 100 {
			return Reply{Error: "progress must be a number from 0 to 100"}
		}
		rec, changed, err = s.update(ctx, id, func(r *Record) (bool, error) {
			if r.IsTerminal() {
				return false, nil
			}
			r.Progress = &p
			return true, nil
		})
		if err == nil && changed {
			m := broker.NewMsg(s.names.EventSubject(rec.SSEName), broker.Event{Type: EventProgress, Data: FormatProgress(p)})
			if err := s.publishEvent(ctx, m); err != nil {
				return Reply{State: rec.State, Error: "progress recorded, event not stored: " + err.Error()}
			}
		}
	default: // a heartbeat
		rec, _, err = s.get(ctx, id)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return Reply{Stop: true, Error: "no such task (expired or never created)"}
	case err != nil:
		return Reply{Error: err.Error()}
	}
	if rec.IsTerminal() {
		if !rec.Notified {
			s.notify(ctx, rec) // whoever finished it did not get this far
		}
		return Reply{State: rec.State, Stop: true}
	}
	return Reply{State: rec.State}
}

// onGaveUp fails a task whose work message reached the route's Attempts
// (its workers kept dying): JetStream stops delivering it and says so in
// an advisory. The message leaves the queue.
func (s *Service) onGaveUp(m *nats.Msg) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries int    `json:"deliveries"`
	}
	if json.Unmarshal(m.Data, &adv) != nil || adv.StreamSeq == 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		st, err := s.js.Stream(ctx, s.names.Queue)
		if err != nil {
			return
		}
		raw, err := st.GetMsg(ctx, adv.StreamSeq)
		if err != nil {
			return // another edge handled it
		}
		id := raw.Header.Get(HeaderID)
		why := fmt.Sprintf("the task was handed to a worker %d times and no worker finished it", adv.Deliveries)
		rec, changed, err := s.update(ctx, id, func(r *Record) (bool, error) {
			if r.IsTerminal() {
				return false, nil
			}
			now := time.Now().UTC()
			r.State, r.Error, r.Completed, r.Notified = StateFailed, why, &now, false
			return true, nil
		})
		if err == nil && changed {
			s.notify(ctx, rec)
		}
		_ = st.DeleteMsg(ctx, adv.StreamSeq)
	}()
}

// deadlines times out the tasks whose deadline key expired: the bucket
// leaves a marker that every edge's watcher sees; the edges race and the
// compare-and-set picks one.
func (s *Service) deadlines() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case e, ok := <-s.watch.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() == jetstream.KeyValuePut {
				continue
			}
			id := strings.TrimPrefix(e.Key(), "d.")
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			if _, err := s.timeout(ctx, id); err != nil && !errors.Is(err, ErrFinished) && !errors.Is(err, ErrNotFound) {
				s.log.Warn("could not time out a task; its next read or report does", "task", id, "err", err)
			}
			cancel()
		}
	}
}
