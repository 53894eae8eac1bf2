package edge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-push/herald/internal/browsertest"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
)

// refusal opens an SSE stream that the edge refuses and returns the
// herald.refused event's reason and retry, after checking the stream ended.
func refusal(t *testing.T, e *testEdge, path string) (string, int64) {
	t.Helper()
	s, err := sseclient.Dial(context.Background(), nil, e.srv.URL+path, nil)
	if err != nil {
		t.Fatalf("a refused SSE client must get 200 (EventSource gives up on anything else): %v", err)
	}
	defer s.Close()
	ev, err := s.Next()
	if err != nil || ev.Type != EventRefused {
		t.Fatalf("first event %+v, %v; want %s", ev, err, EventRefused)
	}
	if ev.Retry < 1000 || ev.Retry > 5000 {
		t.Fatalf("retry: %d ms, want 1 to 5 s", ev.Retry)
	}
	var r struct {
		Reason string `json:"reason"`
		Retry  int64  `json:"retry"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &r); err != nil || r.Retry != int64(ev.Retry) {
		t.Fatalf("data %q: %v", ev.Data, err)
	}
	if ev, err := s.Next(); err == nil {
		t.Fatalf("the refused stream goes on: %+v", ev)
	}
	return r.Reason, r.Retry
}

// Every limit refuses a client in the way its kind of client retries, is
// counted, and gives its place back when a connection ends.
func TestConnectionLimits(t *testing.T) {
	srv := natstest.StartServer(t)
	t.Run("per edge", func(t *testing.T) {
		e := startEdge(t, srv.ClientURL(), Config{MaxConnections: 2})
		a := connect(t, e, "/sse/A", nil)
		connect(t, e, "/sse/A", nil)
		if reason, _ := refusal(t, e, "/sse/A"); reason != refuseConnections {
			t.Fatalf("reason %q", reason)
		}
		c, err := dialWS(t, wsURL(e.srv.URL, "/ws/a"), nil, true)
		if err != nil {
			t.Fatalf("a refused WebSocket is upgraded and closed: %v", err)
		}
		if code, reason := c.waitClose(); code != websocket.StatusTryAgainLater || reason != refuseConnections {
			t.Fatalf("close %d %q, want 1013 %q", code, reason, refuseConnections)
		}
		a.close()
		natstest.Eventually(t, 10*time.Second, func() bool { return e.Connections() == 1 })
		connect(t, e, "/sse/A", nil) // the place is free again
		if got := counter(t, e.reg, "herald_edge_rejections_total", "reason", "limit_connections"); got != 2 {
			t.Fatalf("limit_connections = %v, want 2", got)
		}
	})
	t.Run("per address", func(t *testing.T) {
		e := startEdge(t, srv.ClientURL(), Config{MaxConnectionsPerIP: 2, PerIPExempt: []string{NoExemptions}})
		a := connect(t, e, "/sse/B", nil)
		connect(t, e, "/sse/B", nil)
		if reason, _ := refusal(t, e, "/sse/B"); reason != refusePerIP {
			t.Fatalf("reason %q", reason)
		}
		a.close()
		natstest.Eventually(t, 10*time.Second, func() bool { return e.Connections() == 1 })
		connect(t, e, "/sse/B", nil)
		// Loopback is exempt by default: a proxy in front of an edge
		// connects from one address.
		f := startEdge(t, srv.ClientURL(), Config{MaxConnectionsPerIP: 1})
		connect(t, f, "/sse/B", nil)
		connect(t, f, "/sse/B", nil)
	})
	t.Run("rate", func(t *testing.T) {
		e := startEdge(t, srv.ClientURL(), Config{ConnectRate: 0.01, ConnectBurst: 2})
		connect(t, e, "/sse/C", nil)
		connect(t, e, "/sse/C", nil)
		if reason, _ := refusal(t, e, "/sse/C"); reason != refuseRate {
			t.Fatalf("reason %q", reason)
		}
		if got := counter(t, e.reg, "herald_edge_rejections_total", "reason", "limit_rate"); got != 1 {
			t.Fatalf("limit_rate = %v", got)
		}
	})
	t.Run("bad requests give their place back", func(t *testing.T) {
		e := startEdge(t, srv.ClientURL(), Config{MaxConnections: 1})
		for range 5 {
			if code, _ := status(t, e, "/sse/D?group=a%0Db", http.Header{"Accept": {"text/event-stream"}}); code != http.StatusBadRequest {
				t.Fatalf("%d", code)
			}
		}
		connect(t, e, "/sse/D", nil)
	})
}

// A browser's EventSource that is refused comes back by itself and gets in
// once there is room: nothing in the page handles the refusal.
func TestRefusedEventSourceRetries(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{MaxConnections: 1})
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(`<!doctype html><script>
window.refused = 0; window.opened = false;
const es = new EventSource("/sse/Full");
es.addEventListener("herald.refused", () => { window.refused++; });
es.addEventListener("pode.open", () => { window.opened = true; });
</script>`))
			return
		}
		e.Handler().ServeHTTP(w, r)
	}))
	defer page.Close()
	holder := connect(t, e, "/sse/Full", nil)
	b := browsertest.Launch(t)
	p := b.Open(t, page.URL+"/")
	p.Wait(t, 20*time.Second, "window.refused >= 1", "a refusal")
	holder.close()
	p.Wait(t, 30*time.Second, "window.opened === true", "the EventSource coming back and getting in")
	if strings.Contains(strings.Join(p.Logs(), "\n"), "EventSource") {
		t.Logf("browser log: %v", p.Logs())
	}
}
