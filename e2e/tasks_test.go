package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
)

// Async tasks across real processes: nats-server nodes, cmd/edge processes
// with task routes, and examples/taskworker processes (the Go worker SDK).
// Each scenario checks what a browser's EventSource would see on a task's
// stream — reconnecting to another edge with its last id when a stream
// ends without pode.close — and what the workers' journals record.

// taskRoutes are the seed's two routes; the step makes /process-data take
// 21 steps.
const (
	taskRoutesFlag = "POST /process-data max=2 result group=DataProcess, GET /generate-report max=3 result"
	taskLease      = 3 * time.Second
)

var workerBin struct {
	once sync.Once
	path string
	err  error
}

// taskWorkerBinary builds examples/taskworker once per run.
func taskWorkerBinary(t testing.TB) string {
	t.Helper()
	edge, _ := binaries(t) // the same temporary directory
	workerBin.once.Do(func() {
		workerBin.path = filepath.Join(filepath.Dir(edge), "taskworker")
		root, _ := filepath.Abs("..")
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", workerBin.path, "./examples/taskworker")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			workerBin.err = fmt.Errorf("go build ./examples/taskworker: %v\n%s", err, out)
		}
	})
	if workerBin.err != nil {
		t.Fatal(workerBin.err)
	}
	return workerBin.path
}

// taskCluster is a cluster with task edges and task workers.
type taskCluster struct {
	*cluster
	workers []*proc
	journal string // the workers' shared journal
}

func startTaskCluster(t *testing.T, edges int) *taskCluster {
	t.Helper()
	skipUnlessEnabled(t)
	c := &taskCluster{cluster: startCluster(t, clusterOptions{})}
	c.journal = filepath.Join(c.dir, "tasks-journal.jsonl")
	for range edges {
		c.startEdge("-task-routes", taskRoutesFlag, "-task-lease", taskLease.String())
	}
	return c
}

// startWorker starts a taskworker process connected to every NATS node.
func (c *taskCluster) startWorker(step time.Duration, concurrency int) *proc {
	c.t.Helper()
	name := fmt.Sprintf("worker%d", len(c.workers))
	p := startProc(c.t, c.dir, name, taskWorkerBinary(c.t), "-nats", c.natsURLs(), "-name", name,
		"-step", step.String(), "-log", c.journal, "-concurrency", fmt.Sprint(concurrency))
	c.workers = append(c.workers, p)
	return p
}

// taskClient starts tasks: a start waits out a stream leader election.
var taskClient = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

type taskInfo struct {
	ID, State, Error string
	Result           json.RawMessage
	Sse              struct {
		URL string `json:"Url"`
	}
}

// startTask starts a task of route on edge e.
func (c *taskCluster) startTask(e *edgeProc, method, path string) taskInfo {
	c.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(`{"from":"e2e"}`))
	resp, err := taskClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var in taskInfo
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &in); err != nil || resp.StatusCode != 200 {
		c.t.Fatalf("start %s %s on %s: %d %s", method, path, e.name, resp.StatusCode, b)
	}
	return in
}

// task reads a task's info from edge e.
func (c *taskCluster) task(e *edgeProc, id string) (taskInfo, error) {
	resp, err := httpGet(e.url + "/task?id=" + id)
	if err != nil {
		return taskInfo{}, err
	}
	var in taskInfo
	if err := json.Unmarshal([]byte(resp.body), &in); err != nil {
		return taskInfo{}, fmt.Errorf("%d %s", resp.code, resp.body)
	}
	return in, nil
}

// waitDone waits until task id is finished, as any edge reports it.
func (c *taskCluster) waitDone(id string, within time.Duration) taskInfo {
	c.t.Helper()
	var in taskInfo
	natstest.CheckFor(c.t, within, 100*time.Millisecond, func() error {
		var err error
		for _, e := range c.edges {
			if e.proc.exited() {
				continue
			}
			if in, err = c.task(e, id); err == nil {
				break
			}
		}
		if err != nil {
			return err
		}
		if in.State == "NotStarted" || in.State == "Running" {
			return fmt.Errorf("task %s is %s", id, in.State)
		}
		return nil
	})
	return in
}

// journalLine is one line of a worker's journal.
type journalLine struct {
	Ev, Worker, Task, Route string
	Attempt                 int
	At                      int64
}

func (c *taskCluster) readJournal() []journalLine {
	c.t.Helper()
	f, err := os.Open(c.journal)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var out []journalLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l journalLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// watcher follows one task's stream like a browser: it reconnects to the
// next edge with its last event id when a stream ends without pode.close.
type watcher struct {
	mu         sync.Mutex
	events     []sseclient.Event
	ownID      []bool // events[i] carried an id line of its own
	reconnects int
	err        error
	done       chan struct{}
}

func watchTask(ctx context.Context, edges []*edgeProc, first int, url string) *watcher {
	w := &watcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		lastID, closed := "", false
		for i := first; !closed && ctx.Err() == nil; i++ {
			e := edges[i%len(edges)]
			if e.proc.exited() {
				continue
			}
			h := http.Header{"Accept": {"text/event-stream"}}
			if lastID != "" {
				h.Set("Last-Event-ID", lastID)
			}
			s, err := sseclient.Dial(ctx, &http.Client{}, e.url+url, h)
			if err != nil {
				w.note(err)
				hold(200 * time.Millisecond)
				continue
			}
			prev := "" // the id in force: an event without an id line keeps it
			for {
				ev, err := s.Next()
				if err != nil {
					break
				}
				w.mu.Lock()
				w.events = append(w.events, ev)
				w.ownID = append(w.ownID, ev.ID != prev)
				w.mu.Unlock()
				prev = ev.ID
				if ev.ID != "" {
					lastID = ev.ID
				}
				if ev.Type == "pode.close" {
					closed = true
					break
				}
			}
			_ = s.Close()
			if !closed {
				w.mu.Lock()
				w.reconnects++
				w.mu.Unlock()
				hold(200 * time.Millisecond)
			}
		}
	}()
	return w
}

func (w *watcher) note(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// of returns the data of the events of type typ received so far.
func (w *watcher) of(typ string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, ev := range w.events {
		if ev.Type == typ {
			out = append(out, ev.Data)
		}
	}
	return out
}

// wait waits until the stream ended with pode.close.
func (w *watcher) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(within):
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Fatalf("stream not closed within %v; last error %v; received %d events", within, w.err, len(w.events))
	}
}

// checkEnd asserts one pode.taskCompleted with want, and no herald.gap.
func (w *watcher) checkEnd(t *testing.T, what, want string) {
	t.Helper()
	if done := w.of("pode.taskCompleted"); len(done) != 1 || done[0] != want {
		t.Errorf("%s: pode.taskCompleted %q, want exactly one %s", what, done, want)
	}
	if gaps := w.of("herald.gap"); len(gaps) > 0 {
		t.Errorf("%s: herald.gap %q", what, gaps)
	}
}

// progressAtLeast waits until the stream has shown progress p or more.
func (w *watcher) progressAtLeast(t *testing.T, p float64, within time.Duration) {
	t.Helper()
	natstest.CheckFor(t, within, 20*time.Millisecond, func() error {
		for _, d := range w.of("pode.progress") {
			var v float64
			if json.Unmarshal([]byte(d), &v) == nil && v >= p {
				return nil
			}
		}
		return fmt.Errorf("no progress >= %v yet", p)
	})
}

const processDone = `{"State":"Completed","Result":{"message":"Processing completed"}}`

// A worker killed with -9 mid-task: once its lease lapses the task is
// delivered again, to the other worker, as attempt 2; the client sees the
// progress go on and exactly one pode.taskCompleted.
func TestTaskWorkerKilled(t *testing.T) {
	c := startTaskCluster(t, 1)
	w0 := c.startWorker(150*time.Millisecond, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in := c.startTask(c.edges[0], "POST", "/process-data")
	watch := watchTask(ctx, c.edges, 0, in.Sse.URL)
	watch.progressAtLeast(t, 20, 30*time.Second)
	c.startWorker(150*time.Millisecond, 1) // only now: the task is w0's
	if err := w0.kill(); err != nil {
		t.Fatal(err)
	}
	done := c.waitDone(in.ID, 60*time.Second)
	watch.wait(t, 30*time.Second)
	watch.checkEnd(t, "after the worker was killed", processDone)
	if done.State != "Completed" {
		t.Errorf("task %+v", done)
	}
	var starts []string
	for _, l := range c.readJournal() {
		if l.Task == in.ID && l.Ev == "start" {
			starts = append(starts, fmt.Sprintf("%s#%d", l.Worker, l.Attempt))
		}
	}
	if strings.Join(starts, ",") != "worker0#1,worker1#2" {
		t.Errorf("the task started as %v, want worker0#1,worker1#2", starts)
	}
}

// An edge killed with -9 while a client watches: the client resumes on
// another edge with Last-Event-ID and still sees progress and completion.
func TestTaskEdgeKilled(t *testing.T) {
	c := startTaskCluster(t, 2)
	c.startWorker(150*time.Millisecond, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in := c.startTask(c.edges[1], "POST", "/process-data")
	watch := watchTask(ctx, c.edges, 0, in.Sse.URL) // on edge0
	watch.progressAtLeast(t, 15, 30*time.Second)
	before := len(watch.of("pode.progress"))
	c.edges[0].kill(t)
	watch.wait(t, 60*time.Second)
	watch.checkEnd(t, "after the edge was killed", processDone)
	if watch.reconnects < 1 {
		t.Errorf("the client did not reconnect")
	}
	if after := len(watch.of("pode.progress")); after <= before+1 {
		t.Errorf("no progress after the edge died (%d before, %d in all)", before, after)
	}
	// The resume must not repeat events: no event id twice, and no
	// progress value twice among the events from the stream (those with
	// an id). The progress a client is given when it attaches has no id;
	// it may repeat a report that lands in the same instant.
	ids, values := map[string]int{}, map[string]int{}
	watch.mu.Lock()
	for i, ev := range watch.events {
		if !watch.ownID[i] {
			continue
		}
		ids[ev.ID]++
		if ev.Type == "pode.progress" {
			values[ev.Data]++
		}
	}
	watch.mu.Unlock()
	for id, n := range ids {
		if n > 1 {
			t.Errorf("event id %s delivered %d times: the resume repeated events", id, n)
		}
	}
	for p, n := range values {
		if n > 1 && p != "99" { // 99 is sent twice by Pode's arithmetic (the cap)
			t.Errorf("progress %s delivered %d times with ids: the resume repeated events", p, n)
		}
	}
}

// A NATS node killed with -9 (the leader of the task records): tasks go
// on and finish, and their clients see each one complete.
func TestTaskNATSNodeKilled(t *testing.T) {
	c := startTaskCluster(t, 2)
	c.startWorker(100*time.Millisecond, 2)
	c.startWorker(100*time.Millisecond, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js, err := jetstream.New(c.connect("e2e-admin"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	var watches []*watcher
	for i := range 4 {
		in := c.startTask(c.edges[i%2], "POST", "/process-data")
		ids = append(ids, in.ID)
		watches = append(watches, watchTask(ctx, c.edges, i, in.Sse.URL))
	}
	watches[0].progressAtLeast(t, 10, 30*time.Second)
	leader := c.streamLeader(js, "KV_HERALD_TASKS")
	c.killNode(leader)
	more := c.startTask(c.edges[0], "POST", "/process-data") // started with a node down
	ids = append(ids, more.ID)
	watches = append(watches, watchTask(ctx, c.edges, 0, more.Sse.URL))
	for i, id := range ids {
		if done := c.waitDone(id, 90*time.Second); done.State != "Completed" {
			t.Errorf("task %d: %+v", i, done)
		}
	}
	for i, w := range watches {
		w.wait(t, 30*time.Second)
		w.checkEnd(t, fmt.Sprintf("task %d", i), processDone)
	}
}

// The routes' limits hold across 3 edges and 4 workers (8 local slots):
// from the workers' own start and end times, never more than 2 tasks of
// /process-data and 3 of /generate-report run at once, and the limits are
// reached.
func TestTaskConcurrencyLimit(t *testing.T) {
	c := startTaskCluster(t, 3)
	for range 4 {
		c.startWorker(40*time.Millisecond, 2)
	}
	var ids []string
	for i := range 18 {
		e := c.edges[i%3]
		if i%2 == 0 {
			ids = append(ids, c.startTask(e, "POST", "/process-data").ID)
		} else {
			ids = append(ids, c.startTask(e, "GET", "/generate-report").ID)
		}
	}
	for _, id := range ids {
		if done := c.waitDone(id, 2*time.Minute); done.State != "Completed" {
			t.Errorf("task %s: %+v", id, done)
		}
	}
	limits := map[string]int{"[POST]/process-data": 2, "[GET]/generate-report": 3}
	type edge struct {
		at    int64
		delta int
	}
	byRoute := map[string][]edge{}
	for _, l := range c.readJournal() {
		d := 1
		if l.Ev == "end" {
			d = -1
		}
		byRoute[l.Route] = append(byRoute[l.Route], edge{l.At, d})
	}
	for route, limit := range limits {
		evs := byRoute[route]
		sort.Slice(evs, func(i, j int) bool {
			if evs[i].at != evs[j].at {
				return evs[i].at < evs[j].at
			}
			return evs[i].delta < evs[j].delta // an end before a start at the same instant
		})
		running, peak := 0, 0
		for _, e := range evs {
			running += e.delta
			peak = max(peak, running)
		}
		if peak > limit {
			t.Errorf("%s: %d tasks ran at once, limit %d", route, peak, limit)
		}
		if peak < limit {
			t.Errorf("%s: at most %d tasks ran at once: the limit %d was never reached, so the test proves nothing", route, peak, limit)
		}
		t.Logf("%s: peak %d running (limit %d) over %d journal events", route, peak, limit, len(evs))
	}
}
