package edge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/broker/tasks"
	"github.com/herald-push/herald/pkg/policy"
)

// A task's stream, GET <path>_events?Id=<id>, is an SSE connection whose
// identity comes from the task: name = the stream's URL
// ("<path>_events?Id=<id>", where workers and the edges publish its
// events), group = the route's SSE group. Its pode.open shows Pode's
// fields: {"clientId","group","name":"<path>_events","asyncRouteTaskId"}.
// Progress, the worker's events, pode.taskCompleted and the closing
// control reach it through the fan-out like any event, so a client
// resumes with Last-Event-ID on any edge.
//
// Attaching late: a new client of a running task gets the task's current
// progress right after pode.open (from its record); a client of a
// finished task gets the last progress, pode.taskCompleted and pode.close
// from the record, and the stream ends. The record is read twice: when
// the request arrives, and again once the connection is subscribed and
// placed in the stream but before it goes live. A worker's report updates
// the record before its events are stored, so a completion stored before
// the connection's place is in the second read, and one stored after it
// reaches the connection live, ahead of the stream's close. Should a
// completion land in the instant between the two (in the record, its
// events not yet stored), the client sees pode.taskCompleted twice.
// Likewise a progress report that lands while a new client attaches can
// reach it twice: once live (with an id) and once as the current
// progress (without). Progress is a state, so the repeat is harmless.

// handleTaskEvents serves a route's task streams.
func (e *Edge) handleTaskEvents(r TaskRoute) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if !acceptsEventStream(req.Header.Values("Accept")) {
			e.tasks.reqs.WithLabelValues("events", "406").Inc()
			e.reject(w, http.StatusNotAcceptable, "not_acceptable",
				"SSE can only be configured on requests with an Accept header value of text/event-stream")
			return
		}
		place, ok := e.admitSSE(w, req)
		if !ok {
			return
		}
		admitted := false
		defer func() {
			if !admitted {
				e.adm.leave(place) // refused below, or a finished task's short answer
			}
		}()
		id := taskID(req)
		rec, err := e.tasks.svc.Get(req.Context(), id)
		if err == nil && (rec.Path != r.Path || rec.Method != r.Method) {
			err = tasks.ErrNotFound // another route's task
		}
		if err != nil {
			status := taskStatus(err)
			e.tasks.reqs.WithLabelValues("events", strconv.Itoa(status)).Inc()
			msg := "no task with this Id (unknown, or its retention has passed)"
			if !errors.Is(err, tasks.ErrNotFound) {
				msg = err.Error()
			}
			e.reject(w, status, "bad_request", msg)
			return
		}
		q := req.URL.Query()
		offered := q.Get("clientId")
		if err := validateIdentity(rec.SSEName, rec.SSEGroup, offered); err != nil {
			e.reject(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		lastID := strings.TrimSpace(req.Header.Get("Last-Event-ID"))
		if lastID == "" {
			lastID = q.Get("lastEventId")
		}
		// The connect mode of the stream's name decides who may watch it
		// (open by default: the task id is the capability).
		g, denied := e.authorize(req, transportSSE, policy.Identity{Name: rec.SSEName, Group: rec.SSEGroup, ClientID: offered})
		if denied == nil && (g.local || g.Name != rec.SSEName || !strings.EqualFold(g.Group, rec.SSEGroup)) {
			denied = &denial{http.StatusForbidden, "forbidden", "a task's stream has the task's name and group, and is not Local"}
		}
		if denied != nil {
			e.tasks.reqs.WithLabelValues("events", strconv.Itoa(denied.status)).Inc()
			e.refuseAuth(w, req, denied, transportSSE)
			return
		}
		c, status, reason := e.identify(req, rec.SSEName, rec.SSEGroup, g.offered(e, req), e.resumeFrom(lastID))
		if c == nil {
			e.reject(w, status, "forbidden", reason)
			return
		}
		e.bind(c, g, req, transportSSE)
		e.tasks.reqs.WithLabelValues("events", "200").Inc()
		open := taskOpenData(c.shown, rec)
		if rec.IsTerminal() {
			e.serveFinishedTask(w, req, c, open, rec)
			return
		}
		c.ipSlot, admitted = place, true // the connection gives its place back when it closes
		e.serveSSE(w, req, c, streamSetup{openData: open, placed: func(c *conn) { e.taskPlaced(c, rec.ID, lastID != "") }})
	}
}

// taskOpenData is pode.open of a task stream: Pode's fields and key
// order, then "asyncRouteTaskId".
func taskOpenData(clientID string, rec *tasks.Record) []byte {
	d := openData(clientID, rec.SSEGroup, tasks.EventsPath(rec.Path))
	id, _ := json.Marshal(rec.ID)
	return append(append(append(d[:len(d)-1:len(d)-1], `,"asyncRouteTaskId":`...), id...), '}')
}

// finalFrames are the last events of a finished task, from its record.
func finalFrames(rec *tasks.Record) [][]byte {
	var out [][]byte
	if rec.State == tasks.StateCompleted {
		out = append(out, encodeSSE("", tasks.EventProgress, []byte("100")))
	} else if rec.Progress != nil {
		out = append(out, encodeSSE("", tasks.EventProgress, tasks.FormatProgress(*rec.Progress)))
	}
	return append(out, encodeSSE("", tasks.EventCompleted, tasks.CompletedData(rec)))
}

// serveFinishedTask answers a stream request for a finished task without
// registering a connection: pode.open, the last progress,
// pode.taskCompleted, pode.close.
func (e *Edge) serveFinishedTask(w http.ResponseWriter, req *http.Request, c *conn, open []byte, rec *tasks.Record) {
	e.headers(w.Header(), c, req.ProtoMajor == 1)
	w.WriteHeader(http.StatusOK)
	s := streamSetup{openData: open}
	frames := append([][]byte{s.openFrame(e, c, "")}, finalFrames(rec)...)
	for _, f := range append(frames, frameClose) {
		if _, err := w.Write(f); err != nil {
			return
		}
	}
	_ = http.NewResponseController(w).Flush()
}

// taskPlaced runs once a task stream is subscribed and placed, before it
// goes live: a new client (not one resuming: its replay has the exact
// events) gets the current progress; a task that finished meanwhile ends
// the stream from its record.
func (e *Edge) taskPlaced(c *conn, id string, resuming bool) {
	// The client waits for pode.open meanwhile: a record NATS cannot give
	// at once is skipped, and live events carry on.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rec, err := e.tasks.svc.Get(ctx, id)
	if err != nil {
		return // gone (retention) or NATS away: live events continue
	}
	if rec.IsTerminal() {
		for _, f := range finalFrames(rec) {
			if !c.push(f, nil) {
				return
			}
		}
		c.close(ReasonClosed)
		return
	}
	if !resuming && rec.Progress != nil {
		c.push(encodeSSE("", tasks.EventProgress, tasks.FormatProgress(*rec.Progress)), nil)
	}
}
