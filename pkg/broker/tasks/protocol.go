package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/broker"
)

// Task states, as Pode names them.
const (
	StateNotStarted = "NotStarted"
	StateRunning    = "Running"
	StateCompleted  = "Completed"
	StateFailed     = "Failed"
	StateAborted    = "Aborted"
)

// Error texts Pode uses for aborted tasks.
const (
	ErrorAborted = "Aborted by the user"
	ErrorTimeout = "Timeout"
)

// Event types of a task's stream.
const (
	EventProgress  = "pode.progress"
	EventCompleted = "pode.taskCompleted"
)

// Headers of a work message (herald.task.run.<route key>). The body is the
// request's body.
const (
	// HeaderID is the task id: stable across attempts, for idempotency.
	HeaderID = "Herald-Task-Id"
	// HeaderRoute is the route's id, "[POST]/process-data".
	HeaderRoute = "Herald-Task-Route"
	// HeaderSubject is the event subject of the task's stream: publish
	// the task's own events there (any NATS client).
	HeaderSubject = "Herald-Task-Subject"
	// HeaderExpire is the task's deadline, RFC 3339 with nanoseconds (UTC).
	HeaderExpire = "Herald-Task-Expire"
	// HeaderQuery is the request's raw query string.
	HeaderQuery = "Herald-Task-Query"
	// HeaderRequestPrefix starts the request headers the route forwards:
	// Herald-Request-Content-Type, ...
	HeaderRequestPrefix = "Herald-Request-"
)

// IsTerminal reports whether a state is final.
func IsTerminal(state string) bool {
	return state == StateCompleted || state == StateFailed || state == StateAborted
}

// Record is a task's state, the JSON value of key t.<id> of the bucket.
// Edges change it by compare-and-set only.
type Record struct {
	ID          string          `json:"id"`
	Route       string          `json:"route"`  // "[POST]/process-data"
	Method      string          `json:"method"` // "POST"
	Path        string          `json:"path"`   // "/process-data"
	State       string          `json:"state"`
	Cancellable bool            `json:"cancellable"`
	Created     time.Time       `json:"created"`
	Expire      time.Time       `json:"expire"`
	Started     *time.Time      `json:"started,omitempty"`
	Completed   *time.Time      `json:"completed,omitempty"`
	Progress    *float64        `json:"progress,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	Attempt     int             `json:"attempt,omitempty"`
	Worker      string          `json:"worker,omitempty"`
	// The stream: its address name (the stream's URL), its SSE group, and
	// whether the completion event carries the result.
	SSEName    string `json:"sseName"`
	SSEGroup   string `json:"sseGroup"`
	SendResult bool   `json:"sendResult,omitempty"`
	// Retention is how long the record stays after completion.
	Retention time.Duration `json:"retention"`
	// Notified is set once the completion events are stored in history.
	Notified bool `json:"notified,omitempty"`
}

// IsTerminal reports whether the task has finished.
func (r *Record) IsTerminal() bool { return IsTerminal(r.State) }

// Report is what a worker tells the edges about a task, as JSON in a
// request on herald.task.report.<id>. Exactly one kind per report:
//
//	{"state":"Running","attempt":2,"worker":"w1"}  the worker starts the task
//	{"progress":42.5}                              progress (0..100)
//	{}                                             a heartbeat: is the task still wanted?
//	{"state":"Completed","result":{...}}           done; result is any JSON (optional)
//	{"state":"Failed","error":"disk full"}         failed
//	{"state":"Aborted","error":"Timeout"}          the worker gave up at the deadline
type Report struct {
	State    string          `json:"state,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	Worker   string          `json:"worker,omitempty"`
	Progress *float64        `json:"progress,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// Reply is the edges' answer to a report. Stop tells the worker to stop
// (the task was stopped, timed out, or has finished): cancel the work and
// acknowledge the work message. Error reports a report the edges refused.
type Reply struct {
	State string `json:"state,omitempty"`
	Stop  bool   `json:"stop,omitempty"`
	Error string `json:"error,omitempty"`
}

// RouteKey is the token that names a route in subjects and as its
// consumer: the method, "_", and the path without its leading slash, with
// "/" as "_" and every byte outside A-Z a-z 0-9 "-" "_" as "-".
// "POST /process-data" is "POST_process-data".
func RouteKey(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('_')
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case i == 0 && c == '/':
			continue
		case c == '/':
			c = '_'
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			c = '-'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// RouteID is Pode's AsyncRouteId: "[POST]/process-data".
func RouteID(method, path string) string { return "[" + strings.ToUpper(method) + "]" + path }

// EventsPath is the path of a route's SSE stream: "<path>_events".
func EventsPath(path string) string { return path + "_events" }

// StreamURL is a task's stream URL, "<path>_events?Id=<id>", also the
// Herald name its events are addressed to.
func StreamURL(path, id string) string { return EventsPath(path) + "?Id=" + id }

// Names are the NATS names of the task system under one subject prefix.
type Names struct {
	Subjects broker.Subjects
	Queue    string // work-queue stream: HERALD_TASK_QUEUE
	Bucket   string // key-value bucket: HERALD_TASKS
	run      string // herald.task.run.
	report   string // herald.task.report.
	stop     string // herald.task.stop.
}

// NewNames returns the names under prefix ("" means "herald").
func NewNames(prefix string) (Names, error) {
	s, err := broker.NewSubjects(prefix)
	if err != nil {
		return Names{}, err
	}
	up := strings.ToUpper(strings.ReplaceAll(s.Prefix(), ".", "_"))
	p := s.Prefix() + ".task."
	return Names{Subjects: s, Queue: up + "_TASK_QUEUE", Bucket: up + "_TASKS",
		run: p + "run.", report: p + "report.", stop: p + "stop."}, nil
}

// Run is the work subject of a route key.
func (n Names) Run(key string) string { return n.run + key }

// RunAll matches every work subject.
func (n Names) RunAll() string { return n.run + ">" }

// Report is the subject a worker reports task id on.
func (n Names) Report(id string) string { return n.report + id }

// Stop is the subject on which the running worker of task id is told to stop.
func (n Names) Stop(id string) string { return n.stop + id }

// EventSubject is the event subject of a task's stream (its name, any
// group, any client).
func (n Names) EventSubject(sseName string) string { return n.Subjects.EventName(sseName) }

// recordKey and deadlineKey are the bucket's keys for a task.
func recordKey(id string) string   { return "t." + id }
func deadlineKey(id string) string { return "d." + id }

// ErrNotFound reports an unknown (or expired) task.
var ErrNotFound = errors.New("tasks: no such task")

// ErrInvalid reports a bad request: the error says what is wrong.
var ErrInvalid = errors.New("tasks: invalid")

// ValidID reports whether id can be a task id (it is part of subjects and
// keys): 1 to 64 bytes of A-Z a-z 0-9 "-" "_".
func ValidID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w: task id must be 1 to 64 characters", ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: task id has a character other than letters, digits, - and _", ErrInvalid)
		}
	}
	return nil
}
