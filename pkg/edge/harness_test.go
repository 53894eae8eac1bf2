package edge

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
)

const testToken = "test-publish-token"

// testEdge is one edge behind a real HTTP server.
type testEdge struct {
	*Edge
	srv *httptest.Server
	reg *prometheus.Registry
	nc  *nats.Conn
}

// startEdge starts an edge on its own NATS connection to urls.
func startEdge(t *testing.T, urls string, cfg Config) *testEdge {
	t.Helper()
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublishTokens == nil {
		cfg.PublishTokens = []string{testToken}
	}
	reg := prometheus.NewRegistry()
	e, err := New(nc, cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.Handler())
	te := &testEdge{Edge: e, srv: srv, reg: reg, nc: nc}
	t.Cleanup(func() { te.stop(t) })
	return te
}

func (te *testEdge) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := te.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	te.srv.CloseClientConnections()
	te.srv.Close()
	te.nc.Close()
}

// client is an SSE client that records every event in the background.
type client struct {
	t      *testing.T
	stream *sseclient.Stream
	mu     sync.Mutex
	events []sseclient.Event
	err    error // why the stream ended
	done   chan struct{}
}

// connect opens an SSE stream at path on te and waits for pode.open.
func connect(t *testing.T, te *testEdge, path string, header http.Header) *client {
	t.Helper()
	c, err := tryConnect(t, te.srv.URL+path, header)
	if err != nil {
		t.Fatalf("connect %s: %v", path, err)
	}
	return c
}

func tryConnect(t *testing.T, url string, header http.Header) (*client, error) {
	t.Helper()
	s, err := sseclient.Dial(context.Background(), nil, url, header)
	if err != nil {
		return nil, err
	}
	c := &client{t: t, stream: s, done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	c.waitFor(func(ev sseclient.Event) bool { return ev.Type == "pode.open" }, "pode.open")
	return c, nil
}

func (c *client) read() {
	defer close(c.done)
	for {
		ev, err := c.stream.Next()
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.mu.Unlock()
			return
		}
		c.events = append(c.events, ev)
		c.mu.Unlock()
	}
}

func (c *client) close() {
	_ = c.stream.Close()
	<-c.done
}

// snapshot returns the events received so far.
func (c *client) snapshot() []sseclient.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sseclient.Event(nil), c.events...)
}

// payloads returns the data of received events of type typ.
func (c *client) payloads(typ string) []string {
	var out []string
	for _, ev := range c.snapshot() {
		if ev.Type == typ {
			out = append(out, ev.Data)
		}
	}
	return out
}

// waitFor polls until an event matching f has arrived and returns it.
func (c *client) waitFor(f func(sseclient.Event) bool, what string) sseclient.Event {
	c.t.Helper()
	var found sseclient.Event
	natstest.Eventually(c.t, 10*time.Second, func() bool {
		for _, ev := range c.snapshot() {
			if f(ev) {
				found = ev
				return true
			}
		}
		return false
	}, "waiting for %s", what)
	return found
}

// waitData waits for a "message" (or typed) event with data d.
func (c *client) waitData(typ, d string) sseclient.Event {
	c.t.Helper()
	return c.waitFor(func(ev sseclient.Event) bool { return ev.Type == typ && ev.Data == d }, typ+" "+d)
}

// waitClosed waits until the server has ended the stream.
func (c *client) waitClosed() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatal("stream did not end")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil && !errors.Is(c.err, io.EOF) && !errors.Is(c.err, io.ErrUnexpectedEOF) && !strings.Contains(c.err.Error(), "closed") {
		c.t.Logf("stream ended with %v", c.err)
	}
}

// isClosed reports whether the stream has ended.
func (c *client) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func publishHTTP(t *testing.T, te *testEdge, token, body string) (int, string) {
	t.Helper()
	return request(t, http.MethodPost, te.srv.URL+"/publish", token, body)
}

// request sends a JSON request with an optional bearer token and returns
// the status and the body.
func request(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// natsConn connects a plain nats.go client to url, closed on cleanup.
var natsConn = natstest.Connect

func newServer(e *Edge) *httptest.Server { return httptest.NewServer(e.Handler()) }

func testCounter(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
