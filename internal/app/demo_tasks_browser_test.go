package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/internal/browsertest"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker/tasks"
)

// The demo page's task panel in headless Chromium against cmd/embedded
// with a task route and a Go worker: Start shows the task's progress on
// the bar as its stream brings it, then its result; a second task is
// stopped with Stop and shows Aborted.
func TestDemoTaskPanel(t *testing.T) {
	b := browsertest.Launch(t)
	var logs natstest.SyncBuffer
	addrs, cancel, done := started(t, app.RunEmbedded, []string{"-listen", "127.0.0.1:0", "-nats-listen", "127.0.0.1:0",
		"-data", t.TempDir(), "-publish-token", "demo-token-123", "-task-routes", "POST /process-data max=2 result"}, &logs)
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	w, err := tasks.NewWorker(natstest.Connect(t, addrs.NATS), nil)
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	bodies := make(chan string, 2)
	if err := w.Handle("POST /process-data", 2, func(ctx context.Context, task *tasks.Task) (any, error) {
		bodies <- string(task.Body)
		if err := task.Progress().Set(ctx, 40); err != nil {
			return nil, err
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return map[string]string{"message": "Processing completed"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	tab := b.Open(t, "http://"+addrs.HTTP+"/")
	ctx, cancelTab := context.WithTimeout(context.Background(), time.Minute)
	defer cancelTab()
	click := func(id string) {
		t.Helper()
		if err := tab.Eval(ctx, `document.getElementById("`+id+`").click()`, nil); err != nil {
			t.Fatal(err)
		}
	}
	tab.Wait(t, 10*time.Second, `document.getElementById("t-route").value === "POST /process-data"`, "the panel offers the route")
	click("t-start")
	tab.Wait(t, 20*time.Second, `document.getElementById("t-progress").value === 40 &&
		document.getElementById("t-state").textContent === "Running: 40%"`, "the bar shows the task's progress")
	if got := <-bodies; got != `{"from":"the demo page"}` {
		t.Errorf("the worker got body %s", got)
	}
	close(gate)
	tab.Wait(t, 20*time.Second, `document.getElementById("t-progress").value === 100 &&
		document.getElementById("t-state").textContent === "Completed" &&
		document.getElementById("t-result").textContent === '{"message":"Processing completed"}'`, "the result shows")

	gate = make(chan struct{}) // the next task waits until stopped
	click("t-start")
	tab.Wait(t, 20*time.Second, `document.getElementById("t-state").textContent === "Running: 40%" &&
		!document.getElementById("t-stop").disabled`, "the second task runs")
	<-bodies
	click("t-stop")
	tab.Wait(t, 20*time.Second, `document.getElementById("t-state").textContent === "Aborted: Aborted by the user" &&
		document.getElementById("t-stop").disabled`, "the stopped task shows Aborted")
	for _, l := range tab.Logs() {
		if strings.Contains(l, "Content Security Policy") || strings.HasPrefix(l, "exception") {
			t.Errorf("the page logged %s", l)
		}
	}
}
