package edge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/broker/tasks"
	"github.com/herald-push/herald/pkg/policy"
)

// taskEdge starts a NATS server and an edge with history and the given
// task routes (flag syntax).
func taskEdge(t *testing.T, routes ...string) (*testEdge, string) {
	t.Helper()
	srv := natstest.StartServer(t)
	cfg := Config{History: &broker.HistoryConfig{}}
	for _, r := range routes {
		tr, err := ParseTaskRoute(r)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TaskRoutes = append(cfg.TaskRoutes, tr)
	}
	return startEdge(t, srv.ClientURL(), cfg), srv.ClientURL()
}

// taskWorker runs h for route on its own NATS connection.
func taskWorker(t *testing.T, url, route string, h tasks.Handler) {
	t.Helper()
	w, err := tasks.NewWorker(natstest.Connect(t, url), &tasks.WorkerOptions{Name: "test-worker"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(route, 2, h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
}

// do sends a request and decodes the JSON answer into out (when not nil).
func do(t *testing.T, method, url, token, body string, out any) int {
	t.Helper()
	code, b := request(t, method, url, token, body)
	if out != nil {
		if err := json.Unmarshal([]byte(b), out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, code, b, err)
		}
	}
	return code
}

type info struct {
	ID, AsyncRouteID, State, CreationTime, ExpireTime, StartingTime, CompletedTime, Error string
	Cancellable, IsCompleted                                                              bool
	Progress                                                                              *float64
	Result                                                                                json.RawMessage
	Sse                                                                                   struct{ Name, State, Group, URL string }
}

func (i *info) UnmarshalJSON(b []byte) error {
	type plain info
	var p struct {
		plain
		ID           string `json:"Id"`
		AsyncRouteID string `json:"AsyncRouteId"`
		Sse          struct {
			Name, State, Group string
			URL                string `json:"Url"`
		}
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*i = info(p.plain)
	i.ID, i.AsyncRouteID = p.ID, p.AsyncRouteID
	i.Sse.Name, i.Sse.State, i.Sse.Group, i.Sse.URL = p.Sse.Name, p.Sse.State, p.Sse.Group, p.Sse.URL
	return nil
}

var podeDate = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$`)

// Pode's wire, end to end: the route answers 200 with task info at once,
// the stream opens with asyncRouteTaskId, carries pode.progress, the
// worker's own event, the final 100, one pode.taskCompleted with the
// result, then pode.close and ends; the task reads back Completed.
func TestTaskRouteWire(t *testing.T) {
	te, url := taskEdge(t, "POST /process-data max=2 result group=DataProcess headers=Content-Type;X-Trace")
	step := make(chan struct{})
	taskWorker(t, url, "POST /process-data", func(ctx context.Context, task *tasks.Task) (any, error) {
		if err := task.Progress().Range(ctx, 0, 100, 50); err != nil {
			return nil, err
		}
		<-step
		if err := task.Progress().Tick(ctx); err != nil {
			return nil, err
		}
		_ = task.Send(ctx, "", []byte(task.Header["X-Trace"]+" "+string(task.Body)+" "+task.Query))
		<-step
		return map[string]string{"message": "Processing completed"}, nil
	})
	req, _ := http.NewRequest(http.MethodPost, te.srv.URL+"/process-data?x=1", strings.NewReader(`{"n":1}`))
	req.Header.Set("X-Trace", "trace-7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var in info
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(b, &in); err != nil || resp.StatusCode != 200 {
		t.Fatalf("start: %d %s %v", resp.StatusCode, b, err)
	}
	for _, k := range []string{`"Id":`, `"AsyncRouteId":"[POST]/process-data"`, `"State":"NotStarted"`, `"Cancellable":true`, `"IsCompleted":false`,
		`"Sse":{"Name":"/process-data_events","State":"NotStarted","Group":"DataProcess","Url":"/process-data_events?Id=` + in.ID + `"}`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("task info %s lacks %s", b, k)
		}
	}
	if !podeDate.MatchString(in.CreationTime) || !podeDate.MatchString(in.ExpireTime) || strings.Contains(string(b), "StartingTime") {
		t.Errorf("task info dates: %s", b)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(in.ID) {
		t.Errorf("task id %q is not a 128-bit GUID string", in.ID)
	}

	c := connect(t, te, in.Sse.URL, http.Header{"Accept": {"text/event-stream"}})
	open := c.snapshot()[0]
	var od struct{ ClientID, Group, Name, AsyncRouteTaskID string }
	if err := json.Unmarshal([]byte(open.Data), &od); err != nil || od.Group != "DataProcess" || od.Name != "/process-data_events" || od.AsyncRouteTaskID != in.ID || !strings.HasPrefix(open.Data, `{"clientId":`) {
		t.Errorf("pode.open %s", open.Data)
	}
	c.waitData("pode.progress", "0")
	step <- struct{}{}
	c.waitData("pode.progress", "50")
	c.waitData("message", `trace-7 {"n":1} x=1`)
	var running info
	do(t, "GET", te.srv.URL+"/task?id="+in.ID, "", "", &running)
	if running.State != "Running" || running.Progress == nil || *running.Progress != 50 || !podeDate.MatchString(running.StartingTime) || running.Sse.State != "Waiting" {
		t.Errorf("running task info %+v", running)
	}
	step <- struct{}{}
	c.waitClosed()
	var got []string
	for _, ev := range c.snapshot() {
		if ev.Type != "pode.ping" {
			got = append(got, ev.Type+" "+ev.Data)
		}
	}
	wantTail := []string{"pode.progress 100", `pode.taskCompleted {"State":"Completed","Result":{"message":"Processing completed"}}`, "pode.close "}
	if len(got) < 3 || strings.Join(got[len(got)-3:], "|") != strings.Join(wantTail, "|") {
		t.Errorf("stream ended with %q, want %q", got, wantTail)
	}
	var done info
	if code := do(t, "GET", te.srv.URL+"/task?Id="+in.ID, "", "", &done); code != 200 || done.State != "Completed" || !done.IsCompleted ||
		string(done.Result) != `{"message":"Processing completed"}` || *done.Progress != 100 || !podeDate.MatchString(done.CompletedTime) {
		t.Errorf("completed task: %d %+v", code, done)
	}
}

// A client that attaches to a running task gets its current progress at
// once; one that attaches after completion still gets the last progress
// and pode.taskCompleted, then pode.close.
func TestTaskLateAttach(t *testing.T) {
	te, url := taskEdge(t, "GET /generate-report result")
	release := make(chan struct{})
	taskWorker(t, url, "GET /generate-report", func(ctx context.Context, task *tasks.Task) (any, error) {
		if err := task.Progress().Set(ctx, 40); err != nil {
			return nil, err
		}
		<-release
		return map[string]string{"report": "Report generation completed"}, nil
	})
	var in info
	if code := do(t, "GET", te.srv.URL+"/generate-report", "", "", &in); code != 200 {
		t.Fatalf("start: %d", code)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var now info
		do(t, "GET", te.srv.URL+"/task?id="+in.ID, "", "", &now)
		if now.Progress == nil || *now.Progress != 40 {
			return errors.New("no progress yet")
		}
		return nil
	})
	late := connect(t, te, in.Sse.URL, http.Header{"Accept": {"text/event-stream"}})
	if ev := late.waitFor(func(ev sseclient.Event) bool { return ev.Type == "pode.progress" }, "progress"); ev.Data != "40" {
		t.Errorf("a late client got progress %s first, want 40", ev.Data)
	}
	close(release)
	late.waitClosed()

	after := connect(t, te, in.Sse.URL, http.Header{"Accept": {"text/event-stream"}})
	after.waitClosed()
	var got []string
	for _, ev := range after.snapshot() {
		got = append(got, ev.Type+" "+ev.Data)
	}
	if len(got) != 4 || !strings.HasPrefix(got[0], "pode.open ") || got[1] != "pode.progress 100" ||
		got[2] != `pode.taskCompleted {"State":"Completed","Result":{"report":"Report generation completed"}}` || got[3] != "pode.close " {
		t.Errorf("a client attaching after completion got %q", got)
	}
}

// Stopping, and the errors of every endpoint, with Pode's statuses.
func TestTaskStopAndErrors(t *testing.T) {
	te, url := taskEdge(t, "POST /slow", "POST /fixed cancellable=false", "POST /private access=token")
	block := func(ctx context.Context, task *tasks.Task) (any, error) { <-ctx.Done(); return nil, ctx.Err() }
	taskWorker(t, url, "POST /slow", block)
	taskWorker(t, url, "POST /fixed", block)
	base := te.srv.URL
	var slow, fixed info
	do(t, "POST", base+"/slow", "", "", &slow)
	do(t, "POST", base+"/fixed", "", "", &fixed)
	c := connect(t, te, slow.Sse.URL, http.Header{"Accept": {"text/event-stream"}})

	var stopped info
	if code := do(t, "DELETE", base+"/task?id="+slow.ID, "", "", &stopped); code != 200 || stopped.State != "Aborted" || stopped.Error != "Aborted by the user" {
		t.Errorf("stop: %d %+v", code, stopped)
	}
	c.waitData("pode.taskCompleted", `{"State":"Aborted","Error":"Aborted by the user"}`)
	c.waitClosed()
	var e struct{ ID, Error string }
	for _, tc := range []struct {
		method, path, token string
		code                int
		err                 string
	}{
		{"DELETE", "/task?id=" + slow.ID, "", 410, "The Task is already completed."},
		{"DELETE", "/task?id=" + fixed.ID, "", 423, "The task has the 'NonCancellable' flag."},
		{"DELETE", "/task?id=00000000-0000-0000-0000-000000000000", "", 404, "No Task Found."},
		{"GET", "/task?id=nope", "", 404, "No Async Route operation Found"},
		{"POST", "/private", "", 401, "Async Route operation requires authentication."},
		{"POST", "/task", "", 401, "querying tasks needs a publish token (Authorization: Bearer …)"},
		{"POST", "/task", testToken, 400, `field "Color" cannot be queried`},
	} {
		body := ""
		if tc.path == "/task" {
			body = `{"Color":{"op":"EQ","value":"red"}}`
		}
		e.Error = ""
		if code := do(t, tc.method, base+tc.path, tc.token, body, &e); code != tc.code || !strings.HasPrefix(e.Error, tc.err) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, code, e.Error, tc.code, tc.err)
		}
	}
	var private info
	if code := do(t, "POST", base+"/private", testToken, "", &private); code != 200 {
		t.Errorf("start with a token: %d", code)
	}
	if code := do(t, "GET", base+"/task?id="+private.ID, "", "", nil); code != 401 {
		t.Errorf("reading a token route's task without a token: %d", code)
	}

	var found []info
	if code := do(t, "POST", base+"/task", testToken, `{"State":{"op":"EQ","value":"aborted"},"AsyncRouteId":{"op":"LIKE","value":"slow"}}`, &found); code != 200 ||
		len(found) != 1 || found[0].ID != slow.ID {
		t.Errorf("query Aborted + LIKE slow: %d %+v", code, found)
	}
	if code := do(t, "POST", base+"/task", testToken, `{"CreationTime":{"op":"GT","value":"2000-01-01T00:00:00Z"}}`, &found); code != 200 || len(found) != 3 {
		t.Errorf("query by date: %d, %d tasks, want 3", code, len(found))
	}
	for _, bad := range []string{`{"State":{"op":"ABOUT","value":"x"}}`, `{"State":{"value":"x"}}`, `[1]`} {
		if code := do(t, "POST", base+"/task", testToken, bad, nil); code != 400 {
			t.Errorf("query %s: %d, want 400", bad, code)
		}
	}
	if _, err := tryConnect(t, base+"/slow_events?Id=00000000-0000-0000-0000-000000000000", http.Header{"Accept": {"text/event-stream"}}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("stream of an unknown task: %v, want 404", err)
	}
	if code := do(t, "GET", base+slow.Sse.URL, "", "", nil); code != 406 {
		t.Errorf("stream without Accept: %d, want 406", code)
	}
}

// Task routes are validated with the rest of the configuration.
func TestTaskConfig(t *testing.T) {
	r, err := ParseTaskRoute("post /process-data max=3 timeout=1m retention=30s cancellable=false group=DataProcess result access=token attempts=5 headers=content-type;x-a")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.String(); got != "POST /process-data max=3 timeout=1m0s retention=30s cancellable=false group=DataProcess result=true access=token attempts=5 headers=Content-Type;X-A" {
		t.Errorf("parsed %s", got)
	}
	if d := (TaskRoute{Method: "GET", Path: "/r"}).String(); d != "GET /r max=2 timeout=8h0m0s retention=10m0s cancellable=true group=/r result=false access=open attempts=3 headers=Content-Type" {
		t.Errorf("defaults %s", d)
	}
	for _, bad := range []string{"POST", "POST /x colour=red", "POST /x max=two"} {
		if _, err := ParseTaskRoute(bad); err == nil {
			t.Errorf("ParseTaskRoute(%q) accepted", bad)
		}
	}
	hist := &broker.HistoryConfig{}
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{TaskRoutes: []TaskRoute{{Method: "POST", Path: "/x"}}}, "TaskRoutes"},
		{Config{History: hist, TaskRoutes: []TaskRoute{{Method: "TRACE", Path: "/x"}}}, "TaskRoutes[0]"},
		{Config{History: hist, TaskRoutes: []TaskRoute{{Method: "POST", Path: "/x"}, {Method: "POST", Path: "/x"}}}, "TaskRoutes[1]"},
		{Config{History: hist, TaskRoutes: []TaskRoute{{Method: "POST", Path: "/a_b"}, {Method: "POST", Path: "/a/b"}}}, "TaskRoutes[1]"},
		{Config{History: hist, TaskRoutes: []TaskRoute{{Method: "POST", Path: "/x", Access: "token"}}}, "TaskRoutes[0]"},
		{Config{History: hist, TaskPath: "task", TaskRoutes: []TaskRoute{{Method: "POST", Path: "/x"}}}, "TaskPath"},
		{Config{History: hist, SSEPath: "/sse/{name}", TaskRoutes: []TaskRoute{{Method: "GET", Path: "/sse/{name}"}}}, "TaskRoutes[0]"},
		{Config{History: hist, TaskLease: time.Second, TaskRoutes: []TaskRoute{{Method: "POST", Path: "/x"}}}, "TaskLease"},
	} {
		var ce *ConfigError
		if err := c.cfg.Validate(); !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("%+v: %v, want an error on %s", c.cfg.TaskRoutes, err, c.field)
		}
	}
}

// pkg/edge speaks no NATS itself: the broker (and broker/tasks) do.
func TestEdgeImportsNoNATS(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/nats-io/") {
			t.Errorf("pkg/edge imports %s; only pkg/broker and its packages may", p)
		}
	}
}

// Task routes and their streams obey the connect modes: a token-mode
// pattern over a route's stream names guards its start (access=connect)
// and every one of its streams.
func TestTaskRoutesUseConnectModes(t *testing.T) {
	srv := natstest.StartServer(t)
	tr, err := ParseTaskRoute("POST /guarded access=connect")
	if err != nil {
		t.Fatal(err)
	}
	te := startEdge(t, srv.ClientURL(), Config{History: &broker.HistoryConfig{}, TaskRoutes: []TaskRoute{tr},
		ConnectAuth: modes(t, "/guarded_events*=token"), Token: policy.TokenConfig{Secret: tokenSecret}})
	taskWorker(t, srv.ClientURL(), "POST /guarded", func(ctx context.Context, task *tasks.Task) (any, error) {
		return "done", nil
	})
	if code := do(t, "POST", te.srv.URL+"/guarded", "", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("start without a token: %d, want 401", code)
	}
	tok := mint(t, tokenSecret, time.Minute, map[string]any{"names": []string{"*"}, "group": "*"})
	var in info
	if code := do(t, "POST", te.srv.URL+"/guarded?token="+tok, "", "", &in); code != http.StatusOK {
		t.Fatalf("start with a token: %d", code)
	}
	if status, _, _ := sseStatus(t, te.srv.URL+in.Sse.URL, nil); status != http.StatusUnauthorized {
		t.Fatalf("the task's stream without a token: %d, want 401", status)
	}
	c := connect(t, te, in.Sse.URL+"&token="+tok, nil)
	c.waitData("pode.taskCompleted", `{"State":"Completed"}`)
}
