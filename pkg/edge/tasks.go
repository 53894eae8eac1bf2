package edge

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/broker/tasks"
	"github.com/herald-push/herald/pkg/policy"
)

// Async tasks: Pode's async routes (PODE-WIRE.md §6), run by workers
// anywhere through NATS (package broker/tasks). A request to a task route
// creates a task and answers 200 with Pode's task info at once; the
// task's stream is GET <path>_events?Id=<id> (tasks_sse.go); GET, DELETE
// and POST on TaskPath read, stop and query tasks.

// TaskRoute is one async route.
type TaskRoute struct {
	// Method and Path are the route: "POST", "/process-data".
	Method, Path string
	// MaxRunning is the most tasks of the route running at once across
	// the cluster (Pode's -MaxRunspaces). Default 2.
	MaxRunning int
	// Timeout is how long a task may take from its creation; then it is
	// Aborted with Error "Timeout" and its worker told to stop. Default 8 h
	// (Pode's 28800 s).
	Timeout time.Duration
	// Retention is how long a finished task stays readable. Default 10 min.
	Retention time.Duration
	// NotCancellable refuses stops (423). Default: cancellable.
	NotCancellable bool
	// SSEGroup is the group of the route's stream connections. Default
	// the route's path.
	SSEGroup string
	// SendResult puts the task's result into pode.taskCompleted (Pode's
	// -SendResult). Default false.
	SendResult bool
	// Access says who may start tasks and read or stop them by id:
	// TaskAccessOpen (anyone; the task id is the capability),
	// TaskAccessToken (a publish token) or TaskAccessConnect (the connect
	// mode of the name <path>_events: a connection token or the backend
	// decides, as for a connection). Default open. A task's stream is
	// guarded by the connect mode of its name, <path>_events?Id=<id>, in
	// the route's SSE group (a pattern "<path>_events*" covers a route's
	// streams and its start); with the default (open), its id is its
	// capability.
	Access string
	// Attempts is how many times a task is handed to a worker when workers
	// die mid-task. Default 3.
	Attempts int
	// Headers are the request headers passed to the worker. Default
	// Content-Type.
	Headers []string
}

// Task route access modes.
const (
	TaskAccessOpen    = "open"
	TaskAccessToken   = "token"
	TaskAccessConnect = "connect"
)

// Defaults of task routes.
const (
	DefaultTaskPath       = "/task"
	DefaultTaskLease      = tasks.DefaultLease
	DefaultTaskMaxRunning = 2
	DefaultTaskTimeout    = 8 * time.Hour
	DefaultTaskRetention  = 10 * time.Minute
	DefaultTaskAttempts   = 3
)

var taskMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

func (r TaskRoute) withDefaults() TaskRoute {
	r.Method = strings.ToUpper(r.Method)
	r.MaxRunning = cmp.Or(r.MaxRunning, DefaultTaskMaxRunning)
	r.Timeout = cmp.Or(r.Timeout, DefaultTaskTimeout)
	r.Retention = cmp.Or(r.Retention, DefaultTaskRetention)
	r.SSEGroup = cmp.Or(r.SSEGroup, r.Path)
	r.Access = cmp.Or(r.Access, TaskAccessOpen)
	r.Attempts = cmp.Or(r.Attempts, DefaultTaskAttempts)
	if r.Headers == nil {
		r.Headers = []string{"Content-Type"}
	}
	return r
}

// String is the route as ParseTaskRoute reads it, every setting spelled out.
func (r TaskRoute) String() string {
	r = r.withDefaults()
	return fmt.Sprintf("%s %s max=%d timeout=%v retention=%v cancellable=%v group=%s result=%v access=%s attempts=%d headers=%s",
		r.Method, r.Path, r.MaxRunning, r.Timeout, r.Retention, !r.NotCancellable, r.SSEGroup, r.SendResult, r.Access, r.Attempts, strings.Join(r.Headers, ";"))
}

// ParseTaskRoute reads "METHOD /path [setting=value ...]", the form of
// -task-routes. Settings: max (int), timeout and retention (durations),
// cancellable and result (booleans), group, access (open or token),
// attempts (int), headers (names separated by ";"). A setting alone
// means true: "result" is "result=true".
func ParseTaskRoute(s string) (TaskRoute, error) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return TaskRoute{}, fmt.Errorf("%q: want \"METHOD /path [setting=value ...]\"", s)
	}
	r := TaskRoute{Method: strings.ToUpper(f[0]), Path: f[1]}
	for _, kv := range f[2:] {
		k, v, hasValue := strings.Cut(kv, "=")
		if !hasValue {
			v = "true"
		}
		var err error
		switch strings.ToLower(k) {
		case "max":
			r.MaxRunning, err = strconv.Atoi(v)
		case "timeout":
			r.Timeout, err = time.ParseDuration(v)
		case "retention":
			r.Retention, err = time.ParseDuration(v)
		case "cancellable":
			var b bool
			b, err = strconv.ParseBool(v)
			r.NotCancellable = !b
		case "group":
			r.SSEGroup = v
		case "result":
			r.SendResult, err = strconv.ParseBool(v)
		case "access":
			r.Access = strings.ToLower(v)
		case "attempts":
			r.Attempts, err = strconv.Atoi(v)
		case "headers":
			r.Headers = []string{}
			for _, h := range strings.Split(v, ";") {
				if h = strings.TrimSpace(h); h != "" {
					r.Headers = append(r.Headers, http.CanonicalHeaderKey(h))
				}
			}
		default:
			return TaskRoute{}, fmt.Errorf("%q: unknown setting %q (max, timeout, retention, cancellable, group, result, access, attempts, headers)", s, k)
		}
		if err != nil {
			return TaskRoute{}, fmt.Errorf("%q: setting %s: bad value %q", s, k, v)
		}
	}
	return r, nil
}

// validateTasks checks the task configuration; mux holds the other routes,
// which task routes must not conflict with.
func (c Config) validateTasks(mux *http.ServeMux) error {
	bad := func(field string, err error) error { return &ConfigError{Field: field, Err: err} }
	if c.TaskLease < 0 {
		return bad("TaskLease", errNotPositive)
	}
	if len(c.TaskRoutes) == 0 {
		return nil
	}
	if c.History == nil {
		return bad("TaskRoutes", errors.New("async tasks need History: their streams resume from it"))
	}
	if c.TaskLease < 3*time.Second {
		return bad("TaskLease", errors.New("must be at least 3s (workers renew every third of it)"))
	}
	if !strings.HasPrefix(c.TaskPath, "/") || strings.ContainsAny(c.TaskPath, "{} ") {
		return bad("TaskPath", fmt.Errorf("%q must be a plain path starting with /", c.TaskPath))
	}
	if err := handlePattern(mux, c.TaskPath); err != nil {
		return bad("TaskPath", err)
	}
	keys := map[string]string{}
	for i, r := range c.TaskRoutes {
		field := item("TaskRoutes", i)
		if !containsString(taskMethods, r.Method) {
			return bad(field, fmt.Errorf("method %q: want one of %s", r.Method, strings.Join(taskMethods, ", ")))
		}
		if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "{}? \t") || len(r.Path) > 200 {
			return bad(field, fmt.Errorf("path %q must start with /, hold no wildcard, query or space, and be at most 200 bytes", r.Path))
		}
		for _, f := range []struct {
			name string
			v    int64
		}{{"max", int64(r.MaxRunning)}, {"timeout", int64(r.Timeout)}, {"retention", int64(r.Retention)}, {"attempts", int64(r.Attempts)}} {
			if f.v <= 0 {
				return bad(field, fmt.Errorf("%s must be positive", f.name))
			}
		}
		if r.Timeout < time.Second || r.Retention < time.Second {
			return bad(field, errors.New("timeout and retention must be at least 1s"))
		}
		if r.Access != TaskAccessOpen && r.Access != TaskAccessToken && r.Access != TaskAccessConnect {
			return bad(field, fmt.Errorf("access %q: want open, token or connect", r.Access))
		}
		if r.Access == TaskAccessToken && len(c.PublishTokens) == 0 {
			return bad(field, errors.New("access=token needs PublishTokens"))
		}
		if err := validateIdentity(tasks.StreamURL(r.Path, "00000000-0000-0000-0000-000000000000"), r.SSEGroup, ""); err != nil {
			return bad(field, fmt.Errorf("group %q: %w", r.SSEGroup, err))
		}
		key := tasks.RouteKey(r.Method, r.Path)
		if other, dup := keys[key]; dup {
			return bad(field, fmt.Errorf("%s %s and %s both map to the NATS name %s", r.Method, r.Path, other, key))
		}
		keys[key] = r.Method + " " + r.Path
		if err := handlePattern(mux, r.Method+" "+r.Path); err != nil {
			return bad(field, err)
		}
		if err := handlePattern(mux, "GET "+tasks.EventsPath(r.Path)); err != nil {
			return bad(field, err)
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// taskRoutes is the edge's side of async tasks.
type taskRoutes struct {
	svc    *tasks.Service
	routes map[string]TaskRoute // by route key
	reqs   *prometheus.CounterVec
}

// Endpoints of task requests (metric labels).
var taskEndpoints = []string{"start", "get", "stop", "query", "events"}

// startTasks opens the task service when task routes are configured.
func (e *Edge) startTasks(nc *broker.Conn, reg prometheus.Registerer) error {
	if len(e.cfg.TaskRoutes) == 0 {
		return nil
	}
	t := &taskRoutes{routes: map[string]TaskRoute{},
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "herald", Subsystem: "edge",
			Name: "task_requests_total", Help: "Requests to async-task endpoints, by endpoint and HTTP status."}, []string{"endpoint", "code"})}
	for _, ep := range taskEndpoints {
		t.reqs.WithLabelValues(ep, "200")
	}
	if err := reg.Register(t.reqs); err != nil {
		return err
	}
	cfg := tasks.Config{Prefix: e.cfg.SubjectPrefix, Replicas: e.cfg.History.Replicas, Lease: e.cfg.TaskLease, Logger: e.log}
	for _, r := range e.cfg.TaskRoutes {
		t.routes[tasks.RouteKey(r.Method, r.Path)] = r
		cfg.Routes = append(cfg.Routes, tasks.RouteConfig{Method: r.Method, Path: r.Path, MaxRunning: r.MaxRunning,
			Timeout: r.Timeout, Retention: r.Retention, Cancellable: !r.NotCancellable, SSEGroup: r.SSEGroup,
			SendResult: r.SendResult, Attempts: r.Attempts})
	}
	// A JetStream cluster that is still forming (no meta leader yet, a
	// peer not yet online) refuses to place the queue for a while: retry
	// within the bound rather than fail the edge's start.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := tasks.Open(ctx, nc, cfg)
	for wait := 100 * time.Millisecond; err != nil; wait = min(2*wait, 2*time.Second) {
		if errors.Is(err, tasks.ErrInvalid) || ctx.Err() != nil {
			return err
		}
		e.log.Warn("async tasks: JetStream cannot place the task queue yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		svc, err = tasks.Open(ctx, nc, cfg)
	}
	t.svc = svc
	e.tasks = t
	return nil
}

// stopTasks stops the task service, if any.
func (e *Edge) stopTasks() {
	if e.tasks != nil {
		e.tasks.svc.Close()
	}
}

// registerTasks adds the task routes to mux.
func (e *Edge) registerTasks(mux *http.ServeMux) {
	if e.tasks == nil {
		return
	}
	for key, r := range e.tasks.routes {
		mux.Handle(r.Method+" "+r.Path, e.handleTaskStart(key, r))
		mux.Handle("GET "+tasks.EventsPath(r.Path), e.handleTaskEvents(r))
	}
	mux.HandleFunc(e.cfg.TaskPath, e.handleTask)
}

// taskError answers a task request that failed, with Pode's body
// {"Id","Error"} (Id omitted when unknown).
func (e *Edge) taskError(w http.ResponseWriter, endpoint string, status int, id, msg string) {
	e.tasks.reqs.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	body := map[string]string{"Error": msg}
	if id != "" {
		body["Id"] = id
	}
	writeJSON(w, status, body)
}

func (e *Edge) taskOK(w http.ResponseWriter, endpoint string, v any) {
	e.tasks.reqs.WithLabelValues(endpoint, "200").Inc()
	writeJSON(w, http.StatusOK, v)
}

// taskStatus maps a service error to a status.
func taskStatus(err error) int {
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, tasks.ErrNotCancellable):
		return http.StatusLocked
	case errors.Is(err, tasks.ErrFinished):
		return http.StatusGone
	case errors.Is(err, tasks.ErrInvalid):
		return http.StatusBadRequest
	}
	return http.StatusServiceUnavailable
}

// handleTaskStart creates a task: 200 with its info at once.
func (e *Edge) handleTaskStart(key string, r TaskRoute) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if e.draining.Load() {
			w.Header().Set("Retry-After", "1")
			e.taskError(w, "start", http.StatusServiceUnavailable, "", "edge is draining; retry on another edge")
			return
		}
		if r.Access == TaskAccessToken && !e.authorized(req) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			e.taskError(w, "start", http.StatusUnauthorized, "", "Async Route operation requires authentication.")
			return
		}
		if !e.taskConnectAllowed(w, req, r) {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, int64(e.cfg.MaxPublishBytes)))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				e.taskError(w, "start", http.StatusRequestEntityTooLarge, "", fmt.Sprintf("body larger than %d bytes", e.cfg.MaxPublishBytes))
				return
			}
			e.taskError(w, "start", http.StatusBadRequest, "", "could not read body")
			return
		}
		in := tasks.Request{Body: body, Query: req.URL.RawQuery, Headers: map[string]string{}}
		for _, h := range r.Headers {
			if v := req.Header.Get(h); v != "" {
				in.Headers[h] = v
			}
		}
		rec, err := e.tasks.svc.Start(req.Context(), key, in)
		if err != nil {
			e.log.Warn("could not start a task", "route", r.Method+" "+r.Path, "err", err)
			e.taskError(w, "start", taskStatus(err), "", err.Error())
			return
		}
		e.taskOK(w, "start", taskInfoOf(rec))
	}
}

// taskID reads the id query parameter, matched case-insensitively (Pode
// reads $WebEvent.Query['id'] from a hashtable).
func taskID(req *http.Request) string {
	for k, v := range req.URL.Query() {
		if strings.EqualFold(k, "id") && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// handleTask is TaskPath: GET reads a task, DELETE stops it, POST queries.
func (e *Edge) handleTask(w http.ResponseWriter, req *http.Request) {
	switch req.Method {
	case http.MethodGet, http.MethodDelete:
		endpoint, missing := "get", "No Async Route operation Found"
		if req.Method == http.MethodDelete {
			endpoint, missing = "stop", "No Task Found."
		}
		id := taskID(req)
		if id == "" {
			e.taskError(w, endpoint, http.StatusBadRequest, "", "the query parameter id (the task id) is required")
			return
		}
		rec, err := e.tasks.svc.Get(req.Context(), id)
		if err != nil {
			if errors.Is(err, tasks.ErrNotFound) {
				e.taskError(w, endpoint, http.StatusNotFound, id, missing)
				return
			}
			e.taskError(w, endpoint, taskStatus(err), id, err.Error())
			return
		}
		r, ok := e.tasks.routes[tasks.RouteKey(rec.Method, rec.Path)]
		if (!ok || r.Access == TaskAccessToken) && !e.authorized(req) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			e.taskError(w, endpoint, http.StatusUnauthorized, id, "Async Route operation requires authentication.")
			return
		}
		if ok && !e.taskConnectAllowed(w, req, r) {
			return
		}
		if req.Method == http.MethodGet {
			e.taskOK(w, endpoint, taskInfoOf(rec))
			return
		}
		rec, err = e.tasks.svc.Stop(req.Context(), id)
		switch {
		case errors.Is(err, tasks.ErrNotCancellable):
			e.taskError(w, endpoint, http.StatusLocked, id, "The task has the 'NonCancellable' flag.")
		case errors.Is(err, tasks.ErrFinished):
			e.taskError(w, endpoint, http.StatusGone, id, "The Task is already completed.")
		case errors.Is(err, tasks.ErrNotFound):
			e.taskError(w, endpoint, http.StatusNotFound, id, missing)
		case err != nil:
			e.taskError(w, endpoint, taskStatus(err), id, err.Error())
		default:
			e.taskOK(w, endpoint, taskInfoOf(rec))
		}
	case http.MethodPost:
		e.handleTaskQuery(w, req)
	default:
		w.Header().Set("Allow", "GET, DELETE, POST")
		e.taskError(w, "get", http.StatusMethodNotAllowed, "", "GET reads a task, DELETE stops it, POST queries tasks")
	}
}

// handleTaskQuery answers Pode's task query: a filter body, ANDed
// conditions, an array of task info. Listing reveals task ids, which are
// the streams' capabilities, so it takes a publish token.
func (e *Edge) handleTaskQuery(w http.ResponseWriter, req *http.Request) {
	if !e.authorized(req) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		e.taskError(w, "query", http.StatusUnauthorized, "", "querying tasks needs a publish token (Authorization: Bearer …)")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, int64(e.cfg.MaxPublishBytes)))
	if err != nil {
		e.taskError(w, "query", http.StatusRequestEntityTooLarge, "", "query body too large or unreadable")
		return
	}
	f, err := parseTaskFilter(body)
	if err != nil {
		e.taskError(w, "query", http.StatusBadRequest, "", err.Error())
		return
	}
	recs, err := e.tasks.svc.List(req.Context())
	if err != nil {
		e.taskError(w, "query", http.StatusServiceUnavailable, "", err.Error())
		return
	}
	out := []taskInfo{}
	for _, rec := range recs {
		if f.match(rec) {
			out = append(out, taskInfoOf(rec))
		}
	}
	e.taskOK(w, "query", out)
}

// taskInfo is Pode's task info JSON (Export-PodeAsyncRouteInfo).
type taskInfo struct {
	ID            string          `json:"Id"`
	AsyncRouteID  string          `json:"AsyncRouteId"`
	State         string          `json:"State"`
	Cancellable   bool            `json:"Cancellable"`
	CreationTime  string          `json:"CreationTime"`
	ExpireTime    string          `json:"ExpireTime"`
	IsCompleted   bool            `json:"IsCompleted"`
	StartingTime  string          `json:"StartingTime,omitempty"`
	Progress      *float64        `json:"Progress,omitempty"`
	CompletedTime string          `json:"CompletedTime,omitempty"`
	Result        json.RawMessage `json:"Result,omitempty"`
	Error         string          `json:"Error,omitempty"`
	Sse           taskInfoSSE     `json:"Sse"`
}

type taskInfoSSE struct {
	Name  string `json:"Name"`
	State string `json:"State"`
	Group string `json:"Group"`
	URL   string `json:"Url"`
}

// podeTime formats t as Pode does: yyyy-MM-ddTHH:mm:ss.fffffffZ in UTC.
func podeTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0000000Z") }

func taskInfoOf(rec *tasks.Record) taskInfo {
	in := taskInfo{ID: rec.ID, AsyncRouteID: rec.Route, State: rec.State, Cancellable: rec.Cancellable,
		CreationTime: podeTime(rec.Created), ExpireTime: podeTime(rec.Expire), IsCompleted: rec.IsTerminal(),
		Sse: taskInfoSSE{Name: tasks.EventsPath(rec.Path), Group: rec.SSEGroup, URL: tasks.StreamURL(rec.Path, rec.ID)}}
	if rec.Started != nil {
		in.StartingTime = podeTime(*rec.Started)
	}
	if rec.Progress != nil {
		p := math.Round(*rec.Progress*100) / 100
		in.Progress = &p
	}
	if rec.Completed != nil {
		in.CompletedTime = podeTime(*rec.Completed)
	}
	switch rec.State {
	case tasks.StateCompleted:
		if r := rec.Result; len(r) > 0 && string(r) != "null" {
			in.Result = r
		}
	case tasks.StateFailed, tasks.StateAborted:
		in.Error = rec.Error
	}
	switch {
	case rec.IsTerminal():
		in.Sse.State = "Completed"
	case rec.State == tasks.StateRunning:
		in.Sse.State = "Waiting"
	default:
		in.Sse.State = "NotStarted"
	}
	return in
}

// taskConnectAllowed applies a TaskAccessConnect route's connect mode to
// a request for its tasks, answering the refusal itself; other routes
// pass.
func (e *Edge) taskConnectAllowed(w http.ResponseWriter, req *http.Request, r TaskRoute) bool {
	if r.Access != TaskAccessConnect {
		return true
	}
	if _, denied := e.authorize(req, transportHTTP, policy.Identity{Name: tasks.EventsPath(r.Path)}); denied != nil {
		e.tasks.reqs.WithLabelValues("start", strconv.Itoa(denied.status)).Inc()
		e.refuseAuth(w, req, denied, transportHTTP)
		return false
	}
	return true
}
