package edge

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/browsertest"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// The pages of TestBrowserWhoMayConnect. Each records what its EventSource
// sees in window.seen.
const (
	// tokenPage gets a token from the app, then connects with it.
	tokenPage = `<!doctype html><script>
window.seen = [];
fetch('/token').then(r => r.text()).then(t => {
  const es = new EventSource('/sse/Orders?token=' + encodeURIComponent(t));
  es.addEventListener('pode.open', e => seen.push('open ' + JSON.parse(e.data).clientId));
  es.onmessage = e => seen.push('message ' + e.data);
});
</script>`
	// noTokenPage connects without one: EventSource gives up for good.
	noTokenPage = `<!doctype html><script>
window.seen = [];
const es = new EventSource('/sse/Orders');
es.onopen = () => seen.push('open');
es.onerror = () => seen.push('error ' + es.readyState);
</script>`
	// localPage follows Pode's advice: on pode.close, close the EventSource.
	localPage = `<!doctype html><body><ul id="rows"></ul><script>
window.seen = [];
const es = new EventSource('/sse/Report');
es.onmessage = e => {
  const li = document.createElement('li');
  li.textContent = e.data;
  document.getElementById('rows').appendChild(li);
};
es.addEventListener('pode.close', () => { es.close(); seen.push('closed'); });
</script></body>`
)

// TestBrowserWhoMayConnect: in real Chromium, a page that gets a token from
// the app's endpoint connects and receives events; a page without one is
// refused and its EventSource stops; a Local stream renders its rows and
// ends.
func TestBrowserWhoMayConnect(t *testing.T) {
	b := browsertest.Launch(t)
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{
		ConnectAuth: modes(t, "Orders=token"),
		Token:       policy.TokenConfig{Secret: tokenSecret},
		Scopes:      scopes(t, "Report=local"),
	})
	backend := natsConn(t, srv.ClientURL())
	serveLocal(t, backend, "Report", func(ctx context.Context, req broker.LocalRequest, w *broker.LocalWriter) {
		for _, row := range []string{"row 1", "row 2", "row 3"} {
			_ = w.Send(broker.Event{Data: []byte(row)})
		}
	})

	// The app: its pages, and the endpoint that mints a token (after its
	// own authentication, which this test leaves out).
	mux := http.NewServeMux()
	page := func(html string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, html)
		}
	}
	mux.HandleFunc("GET /token-page", page(tokenPage))
	mux.HandleFunc("GET /no-token-page", page(noTokenPage))
	mux.HandleFunc("GET /local-page", page(localPage))
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, mint(t, tokenSecret, time.Minute, map[string]any{"names": []string{"Orders"}, "clientId": "page-1"}))
	})
	mux.Handle("/", e.Handler())
	site := httptest.NewServer(mux)
	defer site.Close()

	withToken := b.Open(t, site.URL+"/token-page")
	withToken.Wait(t, 30*time.Second, `seen.includes('open page-1')`, "the page with a token connected")
	pub, _ := broker.NewPublisher(backend, nil)
	if _, err := pub.Publish(context.Background(), broker.Target{Name: "Orders"}, broker.Event{Data: []byte("order 9")}); err != nil {
		t.Fatal(err)
	}
	withToken.Wait(t, 30*time.Second, `seen.includes('message order 9')`, "the page with a token received an event")

	without := b.Open(t, site.URL+"/no-token-page")
	without.Wait(t, 30*time.Second, `seen.includes('error 2')`, "the page without a token was refused and its EventSource closed")
	var seen []string
	if err := without.Eval(context.Background(), `seen`, &seen); err != nil || strings.Contains(strings.Join(seen, ","), "open") {
		t.Fatalf("the page without a token saw %v (%v)", seen, err)
	}

	local := b.Open(t, site.URL+"/local-page")
	local.Wait(t, 30*time.Second, `seen.includes('closed')`, "the Local stream closed")
	var rows string
	if err := local.Eval(context.Background(), `[...document.querySelectorAll('#rows li')].map(li => li.textContent).join('|')`, &rows); err != nil || rows != "row 1|row 2|row 3" {
		t.Fatalf("rendered %q (%v)", rows, err)
	}
	if got := counter(t, e.reg, "herald_edge_rejections_total", "reason", refuseAuthMissing); got < 1 {
		t.Fatalf("the refusal was not counted: %v", got)
	}
}
