package edge

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
)

// A client that stops reading fills its socket: the writer pool's
// non-blocking writes then leave a rest, often cut mid-frame, for the
// connection's writer goroutine. When the client reads again, every event
// must arrive whole, once and in order, interleaved correctly with events
// queued while the socket was full.
func TestStalledReaderResumesIntact(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the non-blocking pool writes are Linux-only")
	}
	srv := natstest.StartServer(t)
	// Queues that hold everything published while the reader is stalled,
	// so that it is not closed as slow.
	e := startEdge(t, srv.ClientURL(), Config{QueueBytes: 256 << 20, QueueMessages: 1 << 16, WriteTimeout: 30 * time.Second})

	nc, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A fixed receive buffer (no autotuning) larger than the loopback MSS:
	// smaller ones make TCP fall back to slow zero-window probing.
	_ = nc.(*net.TCPConn).SetReadBuffer(128 << 10)
	fmt.Fprintf(nc, "GET /sse/Feed HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("response %v, %v", resp, err)
	}
	p := sseclient.NewParser(resp.Body)
	if ev, err := p.Next(); err != nil || ev.Type != "pode.open" {
		t.Fatalf("first event %+v, %v", ev, err)
	}

	// Odd sizes, so that a full socket cuts frames at arbitrary bytes.
	data := func(i int) string {
		return fmt.Sprintf("%d:%s", i, strings.Repeat(string(rune('a'+i%26)), 500+(i*7919)%6000))
	}
	raw := natsConn(t, srv.ClientURL())
	// One event read back, then no writer left on the socket: the burst
	// below meets the writer pool first. (Events that reach a connection
	// still starting are written by its own writer goroutine, which would
	// then meet the full socket instead; on a busy machine a burst
	// published right after pode.open can.)
	if err := raw.Publish("herald.ev.Feed._._", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if ev, err := p.Next(); err != nil || ev.Data != "warm" {
		t.Fatalf("first event %+v, %v", ev, err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		cs := e.Edge.reg.all(nil)
		if len(cs) != 1 {
			return false
		}
		cs[0].mu.Lock()
		defer cs[0].mu.Unlock()
		return !cs[0].out.writing && len(cs[0].out.q) == 0
	}, "the connection's writer never went idle")
	const n = 3000 // ~10 MB: far more than the socket buffers
	for i := range n {
		if err := raw.Publish("herald.ev.Feed._._", []byte(data(i))); err != nil {
			t.Fatal(err)
		}
		if i == n/2 {
			// Half-way, make sure the socket is full, so that the rest
			// queues behind a handed-off remainder.
			natstest.Eventually(t, 20*time.Second, func() bool {
				return counter(t, e.reg, "herald_edge_pool_writes_total", "outcome", "handoff") > 0
			}, "the socket never filled")
		}
	}
	if counter(t, e.reg, "herald_edge_pool_writes_total", "outcome", "done") == 0 {
		t.Fatal("no pool write took a whole batch")
	}
	_ = nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := range n {
		ev, err := p.Next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := data(i); ev.Data != want {
			t.Fatalf("event %d: got %.20q… (%d bytes), want %.20q… (%d bytes)", i, ev.Data, len(ev.Data), want, len(want))
		}
	}
	if e.Connections() != 1 {
		t.Fatalf("connections = %d, want 1", e.Connections())
	}
}

// unwritten must drop exactly the written bytes, whole buffers or not.
func TestUnwritten(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "abc|de|f"}, {1, "bc|de|f"}, {3, "de|f"}, {4, "e|f"}, {5, "f"}, {6, ""},
	} {
		bufs := [][]byte{[]byte("abc"), []byte("de"), []byte("f")}
		var parts []string
		for _, b := range unwritten(bufs, tc.n) {
			parts = append(parts, string(b))
		}
		if got := strings.Join(parts, "|"); got != tc.want {
			t.Errorf("unwritten(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
