package edge

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// jsBackendDir holds a backend written in JavaScript with the npm "nats"
// client; .ci/run installs its dependencies with npm ci.
const jsBackendDir = "testdata/jsbackend"

// startJSBackend runs testdata/jsbackend/backend.mjs against natsURL until
// the test ends (or stop is called) and waits until it has subscribed.
// Without node or the installed dependencies the test is skipped, and
// fails under CI.
func startJSBackend(t *testing.T, natsURL string) (stop func()) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(jsBackendDir, "node_modules", "nats"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the JavaScript backend needs node and npm ci in %s (.ci/run does both): %v", jsBackendDir, err)
		}
		t.Skipf("JavaScript backend not runnable (install node, run npm ci in %s): %v", jsBackendDir, err)
	}
	cmd := exec.Command(node, "backend.mjs", natsURL)
	cmd.Dir = jsBackendDir
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		s := bufio.NewScanner(out)
		for s.Scan() {
			if strings.TrimSpace(s.Text()) == "ready" {
				close(ready)
			}
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-lines
		_ = cmd.Wait()
	}
	t.Cleanup(stop)
	select {
	case <-ready:
	case <-lines:
		t.Fatal("the JavaScript backend exited before it was ready")
	case <-time.After(30 * time.Second):
		t.Fatal("the JavaScript backend was not ready within 30 s")
	}
	return stop
}

// The same edge behaviour with a backend in another language: deny,
// assign, timeout, Local streams (events, the end marker, a stall), and no
// responder once the backend is gone.
func TestJavaScriptBackend(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{
		ConnectAuth:      modes(t, "Js*=backend"),
		Scopes:           scopes(t, "JsReport=local,JsQuiet=local"),
		AuthTimeout:      500 * time.Millisecond,
		LocalIdleTimeout: 500 * time.Millisecond,
		History:          &broker.HistoryConfig{},
	})
	stop := startJSBackend(t, srv.ClientURL())

	if status, _, body := sseStatus(t, e.srv.URL+"/sse/JsDeny", nil); status != 403 || !strings.Contains(body, "js says no") {
		t.Fatalf("deny: %d %q", status, body)
	}
	if o := opened(t, connect(t, e, "/sse/JsAssign", http.Header{"Cookie": {"session=bob"}})); o != (podeOpen{ClientID: "js-bob", Group: "js-group", Name: "JsAssign"}) {
		t.Fatalf("assign: %+v", o)
	}
	if reason, _ := refusal(t, e, "/sse/JsSlow"); reason != refuseAuthUnavailable {
		t.Fatalf("timeout: %q", reason)
	}

	c := connect(t, e, "/sse/JsReport", nil)
	c.waitClosed()
	o := opened(t, c)
	if got, want := events(c), "pode.open, message hello "+o.ClientID+", pode.progress 50, message done, pode.close"; got != want {
		t.Fatalf("Local stream: %q, want %q", got, want)
	}
	if ev := c.snapshot()[2]; ev.ID != "1" {
		t.Fatalf("the backend's id: %+v", ev)
	}
	q := connect(t, e, "/sse/JsQuiet", nil)
	q.waitClosed()
	if got := events(q); got != `pode.open, herald.close {"reason":"unavailable"}, pode.close` {
		t.Fatalf("stalled: %q", got)
	}

	stop()
	if reason, _ := refusal(t, e, "/sse/JsAssign"); reason != refuseAuthUnavailable {
		t.Fatalf("no responders: %q", reason)
	}
	if got := counter(t, e.reg, "herald_edge_auth_decisions_total", "mode", "backend", "result", "unavailable"); got != 2 {
		t.Fatalf("unavailable decisions %v, want 2 (timeout, no responders)", got)
	}
}
