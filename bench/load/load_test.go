package load

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// heraldBinary is cmd/embedded, built once by TestMain.
var heraldBinary string

func TestMain(m *testing.M) {
	if os.Getenv(WorkerEnv) == "1" {
		if err := ServeWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "herald-load-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := FindModuleRoot(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	heraldBinary = filepath.Join(dir, "herald-embedded")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := Build(ctx, root, "./cmd/embedded", heraldBinary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func startHerald(t *testing.T, args ...string) *Server {
	t.Helper()
	s, err := StartServer(context.Background(), ServerConfig{Binary: heraldBinary, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

// publishRun publishes count messages of step to name and waits until
// want deliveries are accounted.
func publishRun(t *testing.T, f *Fleet, pub Publisher, step int64, count int, want int64) PhaseReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.Begin(ctx, step, int64(count)); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := range count {
		ts := time.Now().UnixNano()
		buf = AppendPayload(buf[:0], step, int64(i), ts, 0)
		if err := pub.Publish(ctx, &Message{Name: "bench", Step: step, Seq: int64(i), TS: ts, Payload: buf}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := f.Delivered(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n >= want {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("delivered %d of %d", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep, err := f.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Delivered != rep.Expected || rep.Expected != want || rep.Duplicates != 0 || rep.OutOfOrder != 0 || rep.Incomplete != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if rep.Latency.Count != uint64(want) || rep.Latency.Quantile(0.5) <= 0 {
		t.Fatalf("latency: %+v", rep.Latency)
	}
	return rep
}

func TestPoolAgainstHerald(t *testing.T) {
	s := startHerald(t)
	before, err := s.Usage()
	if err != nil || before.RSS == 0 || before.FDs == 0 {
		t.Fatalf("usage %+v, %v", before, err)
	}
	const n = 20
	f, err := NewFleet(FleetConfig{Pool: PoolConfig{N: n, Endpoint: Endpoint{URL: s.URL + "/sse/bench?clientId={client}", OpenEvent: "pode.open"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	crep, err := f.Connect(ctx, 0, false)
	if err != nil || crep.Opened != n || crep.Failed != 0 || crep.Elapsed() <= 0 || crep.Latency.Count != n {
		t.Fatalf("connect: %+v, %v", crep, err)
	}

	np, err := NewNATSPublisher(s.NATS, "")
	if err != nil {
		t.Fatal(err)
	}
	defer np.Close()
	publishRun(t, f, np, 1, 10, n*10)

	hdr := http.Header{"Authorization": {"Bearer " + s.Token}}
	hp := NewHTTPPublisher(s.URL+"/publish", HeraldPublishTemplate, hdr)
	defer hp.Close()
	publishRun(t, f, hp, 2, 5, n*5)

	// A drop and a resumed reconnect: every client comes back.
	if err := f.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	crep, err = f.Connect(ctx, -1, true)
	if err != nil || crep.Opened != n {
		t.Fatalf("reconnect: %+v, %v", crep, err)
	}
	publishRun(t, f, np, 3, 3, n*3)
}

// TestFleetWorkers runs a fleet in two worker processes (this test binary
// re-executed).
func TestFleetWorkers(t *testing.T) {
	s := startHerald(t)
	const n = 12
	f, err := NewFleet(FleetConfig{PerProcess: 6, Pool: PoolConfig{N: n, Endpoint: Endpoint{URL: s.URL + "/sse/bench", OpenEvent: "pode.open"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Processes() != 2 {
		t.Fatalf("%d processes, want 2", f.Processes())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if crep, err := f.Connect(ctx, 0, false); err != nil || crep.Opened != n {
		t.Fatalf("connect: %+v, %v", crep, err)
	}
	np, err := NewNATSPublisher(s.NATS, "")
	if err != nil {
		t.Fatal(err)
	}
	defer np.Close()
	publishRun(t, f, np, 1, 7, n*7)
	if u, err := f.Usage(ctx); err != nil || u.RSS == 0 {
		t.Fatalf("usage %+v, %v", u, err)
	}
}

// TestWebSocketClients subscribes over WebSocket when the server has the
// /ws/ route.
func TestWebSocketClients(t *testing.T) {
	s := startHerald(t)
	wsURL := "ws" + strings.TrimPrefix(s.URL, "http") + "/ws/bench"
	const n = 5
	f, err := NewFleet(FleetConfig{Pool: PoolConfig{N: n, Endpoint: Endpoint{URL: wsURL, Transport: WebSocket}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	crep, err := f.Connect(ctx, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if crep.Opened == 0 {
		t.Skipf("no WebSocket route on this build: %v", crep.Errors)
	}
	if crep.Opened != n {
		t.Fatalf("connect: %+v", crep)
	}
	np, err := NewNATSPublisher(s.NATS, "")
	if err != nil {
		t.Fatal(err)
	}
	defer np.Close()
	// WebSocket names are paths: /ws/bench is the name "/bench".
	step := int64(1)
	if err := f.Begin(ctx, step, 4); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		ts := time.Now().UnixNano()
		p := AppendPayload(nil, step, int64(i), ts, 0)
		if err := np.Publish(ctx, &Message{Name: "/bench", Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		d, _ := f.Delivered(ctx)
		if d == n*4 {
			break
		}
		if ctx.Err() != nil {
			rep, _ := f.Report(ctx)
			t.Fatalf("delivered %d of %d: %+v", d, n*4, rep)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, 10, 64, 1024} {
		p := AppendPayload(nil, 7, 123456, 1700000000000000001, size)
		if size > 50 && len(p) != size {
			t.Errorf("size %d: payload is %d bytes: %s", size, len(p), p)
		}
		m, ok := ParseMarker(p)
		if !ok || m != (Marker{7, 123456, 1700000000000000001}) {
			t.Errorf("size %d: %+v %v from %s", size, m, ok, p)
		}
		// The same payload inside another server's envelope, as a JSON string.
		wrapped := fmt.Sprintf(`{"data":%q}`, p)
		if m2, ok := ParseMarker([]byte(wrapped)); !ok || m2 != m {
			t.Errorf("wrapped: %+v %v from %s", m2, ok, wrapped)
		}
	}
	if _, ok := ParseMarker([]byte(`{"hello":"world"}`)); ok {
		t.Error("marker found in a foreign payload")
	}
}

// TestChunkedSSEServer reads a server that streams inside net/http
// (chunked transfer encoding), as most SSE servers do.
func TestChunkedSSEServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 5 {
			fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, AppendPayload(nil, 1, int64(i), time.Now().UnixNano(), 0))
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	}))
	defer srv.Close()
	defer srv.CloseClientConnections()
	p := NewPool(PoolConfig{N: 3, Endpoint: Endpoint{URL: srv.URL + "/events"}})
	defer p.Close()
	p.Begin(1, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if rep := p.Connect(ctx, 0, false); rep.Opened != 3 {
		t.Fatalf("connect: %+v", rep)
	}
	for p.Delivered() < 15 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	rep := p.Report()
	if rep.Delivered != 15 || rep.Duplicates != 0 || rep.OutOfOrder != 0 || rep.Incomplete != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if p.LastIDs() != 3 {
		t.Fatalf("%d clients hold a last id, want 3", p.LastIDs())
	}
}

func TestParseHead(t *testing.T) {
	for _, tc := range []struct {
		head string
		want responseHead
	}{
		{"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n", responseHead{200, false, -1}},
		{"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n", responseHead{200, true, -1}},
		{"HTTP/1.0 404 Not Found\nContent-Length: 9\n\n", responseHead{404, false, 9}},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", responseHead{101, false, -1}},
	} {
		got, err := parseHead([]byte(tc.head))
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.head, got, err, tc.want)
		}
	}
	if _, err := parseHead([]byte("SSH-2.0-OpenSSH\r\n\r\n")); err == nil {
		t.Error("a non-HTTP answer parsed")
	}
}
