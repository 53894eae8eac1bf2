package edge

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// podeWebPage mirrors Pode.Web's connectSse (default.js): it opens the
// page's sse-open route, keeps the clientId from pode.open, runs
// pode.web.action events, and on pode.close forgets the id but does not
// call es.close(), so the browser reconnects by itself (with Last-Event-ID).
// Everything the page sees is POSTed to /report for the test to read.
const podeWebPage = `<!doctype html><html><body pode-page-id="page_home"><script>
var SSE_CLIENT_ID = null;
function report(o) { fetch('/report', {method: 'POST', body: JSON.stringify(o)}); }
var es = new EventSource(window.location.origin + '/pode.web-dynamic/pages/page_home/sse-open');
es.addEventListener('pode.open', function (e) {
  var data = JSON.parse(e.data);
  SSE_CLIENT_ID = data.clientId;
  report({type: 'open', clientId: data.clientId, group: data.group, name: data.name, id: e.lastEventId});
});
es.addEventListener('pode.close', function () { SSE_CLIENT_ID = null; report({type: 'close'}); });
es.addEventListener('pode.web.action', function (e) {
  report({type: 'action', action: JSON.parse(e.data), id: e.lastEventId});
});
es.onmessage = function (e) { report({type: 'message', data: e.data, id: e.lastEventId}); };
es.onerror = function () { report({type: 'error'}); };
</script></body></html>`

type pageReport struct {
	Type     string          `json:"type"`
	ClientID string          `json:"clientId"`
	Group    string          `json:"group"`
	Name     string          `json:"name"`
	Data     string          `json:"data"`
	ID       string          `json:"id"`
	Action   json.RawMessage `json:"action"`
}

// chromiumPath finds Debian's chromium. CI installs it (.ci/run); a
// developer machine without it skips, CI fails.
func chromiumPath(t *testing.T) string {
	for _, p := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; .ci/run installs Debian's chromium package")
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// TestBrowserPodeWebClient drives real headless Chromium with a page that
// follows Pode.Web's client logic (podeWebPage) against an edge with
// Pode.Web's settings: strict signing and the pages/{group}/sse-open
// route, with history on.
func TestBrowserPodeWebClient(t *testing.T) {
	chromium := chromiumPath(t)
	srv := natstest.StartServer(t)
	signer := policy.Signer{Secret: "pode-web-secret", Strict: true}
	e := startEdge(t, srv.ClientURL(), Config{
		Signing:        signer,
		ExtraSSERoutes: []SSERoute{PodeWebRoute},
		Retry:          1500 * time.Millisecond, // the event below is published while the browser waits to reconnect
		History:        &broker.HistoryConfig{},
	})

	var mu sync.Mutex
	var reports []pageReport
	var userAgent string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, podeWebPage)
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var rep pageReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err == nil {
			mu.Lock()
			reports = append(reports, rep)
			userAgent = r.UserAgent()
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.Handle("/", e.Handler())
	site := httptest.NewServer(mux)
	defer site.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), site.URL+"/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()

	find := func(what string, f func(pageReport) bool) pageReport {
		t.Helper()
		var found pageReport
		natstest.Eventually(t, 30*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range reports {
				if f(r) {
					found = r
					return true
				}
			}
			return false
		}, "the page never reported %s", what)
		return found
	}
	count := func(typ string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range reports {
			if r.Type == typ {
				n++
			}
		}
		return n
	}

	open := find("pode.open", func(r pageReport) bool { return r.Type == "open" })
	if open.Name != "Pode.Web.Actions" || open.Group != "page_home" {
		t.Fatalf("pode.open %+v", open)
	}
	mu.Lock()
	ua := userAgent
	mu.Unlock()
	raw, err := signer.Verify(open.ClientID, ua, "127.0.0.1")
	if err != nil {
		t.Fatalf("clientId %q is not signed for the browser's User-Agent and IP: %v", open.ClientID, err)
	}

	// Send-PodeWebAction to this client (signed id, as Pode.Web sends it) and to the page.
	nc := natsConn(t, srv.ClientURL())
	pub, _ := broker.NewPublisher(nc, nil)
	action := `{"Operation":"Show","ObjectType":"Toast","Message":"Hi <b>&</b>","Duration":3000}`
	send := func(tg broker.Target, typ, data string) {
		t.Helper()
		if _, err := pub.Publish(context.Background(), tg, broker.Event{Type: typ, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	send(broker.Target{Name: "Pode.Web.Actions", ClientIDs: []string{open.ClientID}, Groups: []string{"page_home"}}, "pode.web.action", action)
	got := find("pode.web.action", func(r pageReport) bool { return r.Type == "action" })
	var a, want map[string]any
	_ = json.Unmarshal(got.Action, &a)
	_ = json.Unmarshal([]byte(action), &want)
	if a["Message"] != want["Message"] || a["Operation"] != "Show" {
		t.Fatalf("action %s", got.Action)
	}
	send(broker.Target{Name: "Pode.Web.Actions", Groups: []string{"PAGE_HOME"}}, "", "line1\nline2\r\nline3")
	find("multi-line message", func(r pageReport) bool { return r.Type == "message" && r.Data == "line1\nline2\nline3" })

	// The producer closes the connection: the page sees pode.close and,
	// like Pode.Web, lets the browser reconnect. It comes back with the
	// same clientId (its last event id proves it owned it), so events sent
	// to its clientId while it was away arrive after it resumes, like
	// those sent to its group.
	if _, err := pub.Close(context.Background(), broker.Target{Name: "Pode.Web.Actions", ClientIDs: []string{raw}}); err != nil {
		t.Fatal(err)
	}
	find("pode.close", func(r pageReport) bool { return r.Type == "close" })
	send(broker.Target{Name: "Pode.Web.Actions", Groups: []string{"page_home"}}, "", "while-away")
	toast := `{"Operation":"Show","ObjectType":"Toast","Message":"sent while away","Title":"Herald","Duration":3000,"Icon":"information"}`
	send(broker.Target{Name: "Pode.Web.Actions", ClientIDs: []string{open.ClientID}}, "pode.web.action", toast)
	find("second pode.open", func(r pageReport) bool { return r.Type == "open" && r.ID != open.ID })
	find("the event sent to the group while away", func(r pageReport) bool { return r.Type == "message" && r.Data == "while-away" })
	find("the toast sent to its clientId while away", func(r pageReport) bool {
		return r.Type == "action" && strings.Contains(string(r.Action), "sent while away")
	})
	if n := count("open"); n != 2 {
		t.Errorf("pode.open reported %d times, want 2", n)
	}
	mu.Lock()
	for _, r := range reports {
		if r.Type == "open" && r.ClientID != open.ClientID {
			t.Errorf("the page reconnected with clientId %q, want its own %q", r.ClientID, open.ClientID)
		}
	}
	mu.Unlock()
	if got := counter(t, e.reg, "herald_edge_kept_client_ids_total", "result", "kept"); got != 1 {
		t.Errorf("kept clientIds = %v, want 1", got)
	}
	if got := counter(t, e.reg, "herald_edge_resync_total", "cause", "resume"); got < 1 {
		t.Errorf("the browser's reconnect was not a resume (resume resyncs = %v)", got)
	}
	// Events are dispatched with the shared position id: the proof of the
	// clientId is only in the id-only frames, which dispatch nothing.
	mu.Lock()
	for _, r := range reports {
		if r.Type == "message" || r.Type == "action" {
			if _, err := broker.ParsePosition(r.ID); err != nil {
				t.Errorf("%s event's lastEventId %q is not a position", r.Type, r.ID)
			}
		}
	}
	mu.Unlock()
}
