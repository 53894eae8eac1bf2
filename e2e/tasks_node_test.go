package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
)

// nodeWorker returns the node binary and the JavaScript worker's script,
// with its npm dependencies installed (.ci/run runs npm ci in
// e2e/jsworker). Without node the test is skipped, and fails under CI.
func nodeWorker(t *testing.T) (node, script string) {
	t.Helper()
	node, err := exec.LookPath("node")
	dir, _ := filepath.Abs("jsworker")
	if err == nil {
		if _, err = os.Stat(filepath.Join(dir, "node_modules", "nats")); err != nil {
			err = fmt.Errorf("run npm ci in e2e/jsworker: %w", err)
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the JavaScript worker cannot run: %v", err)
		}
		t.Skipf("the JavaScript worker cannot run: %v", err)
	}
	return node, filepath.Join(dir, "worker.mjs")
}

// A worker written in JavaScript on the npm nats client, speaking only
// the documented protocol (consumer, headers, report requests, the
// task's event subject): a browser-like client of the task's stream sees
// its progress, its own event, the final 100 and the completion carrying
// its result, then pode.close.
func TestTaskJavaScriptWorker(t *testing.T) {
	node, script := nodeWorker(t)
	c := startTaskCluster(t, 1)
	p := startProc(t, c.dir, "jsworker", node, script, c.natsURLs(), "POST_process-data", "1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := c.startTask(c.edges[0], "POST", "/process-data")
	w := watchTask(ctx, c.edges, 0, in.Sse.URL)
	w.wait(t, 45*time.Second)
	want := `{"State":"Completed","Result":{"worker":"javascript","echo":{"from":"e2e"}}}`
	w.checkEnd(t, "JavaScript worker", want)
	progress := strings.Join(w.of("pode.progress"), ",")
	if !strings.HasSuffix(progress, "25,50,75,100") {
		t.Errorf("progress %s, want it to end 25,50,75,100", progress)
	}
	if notes := w.of("js.note"); len(notes) != 1 || notes[0] != `{"from":"javascript","attempt":1}` {
		t.Errorf("the worker's own event: %q", notes)
	}
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !p.exited() {
			return fmt.Errorf("the worker is still running: %s", p.tail(5))
		}
		return nil
	})
	if p.err != nil {
		t.Errorf("the JavaScript worker failed: %v\n%s", p.err, p.tail(20))
	}
}
