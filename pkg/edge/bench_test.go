package edge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// Hot-path benchmarks. Run them with allocation figures:
//
//	go test -run '^$' -bench . -benchmem ./pkg/edge
//
// and profile one with -cpuprofile / -memprofile, e.g.
//
//	go test -run '^$' -bench 'Fanout/conns=10000' -benchmem -cpuprofile cpu.out ./pkg/edge

var (
	benchSmallJSON = []byte(`{"seq":123456,"ts":1700000000000000000,"kind":"tick"}`)
	benchMultiLine = []byte("line one of the payload\nline two of the payload\r\nline three\rline four\n\nlast line")
	bench4KiB      = []byte(strings.Repeat(`{"k":"0123456789abcdef"},`, 4096/25) + strings.Repeat("x", 4096%25))
)

func BenchmarkEncodeSSE(b *testing.B) {
	cases := []struct {
		name    string
		id, typ string
		data    []byte
	}{
		{"small_json", "", "", benchSmallJSON},
		{"small_json_id_event", "123456", "tick", benchSmallJSON},
		{"multi_line", "42", "note", benchMultiLine},
		{"4KiB", "42", "blob", bench4KiB},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.data)))
			var out []byte
			for b.Loop() {
				out = encodeSSE(tc.id, tc.typ, tc.data)
			}
			if len(out) == 0 {
				b.Fatal("empty frame")
			}
		})
	}
}

// frameSink counts the frames the discarding transports of a fan-out
// fixture have written, and wakes a waiter when a target count is crossed.
type frameSink struct {
	frames  atomic.Int64
	target  atomic.Int64
	reached chan struct{}
}

func newFrameSink() *frameSink { return &frameSink{reached: make(chan struct{}, 1)} }

// wait blocks until at least n frames have been written.
func (s *frameSink) wait(n int64) {
	s.target.Store(n)
	for s.frames.Load() < n {
		<-s.reached
	}
}

// discardTransport is an in-memory transport: writes are counted and
// dropped, so a benchmark measures the edge's own cost and not the
// kernel's. Its writer is serialised by the conn, so bytes needs no atomic.
type discardTransport struct {
	sink  *frameSink
	bytes int64
}

var _ transport = (*discardTransport)(nil)

func (t *discardTransport) write(bufs [][]byte) error {
	for _, b := range bufs {
		t.bytes += int64(len(b))
	}
	n := int64(len(bufs))
	now := t.sink.frames.Add(n)
	if tg := t.sink.target.Load(); now >= tg && now-n < tg {
		select {
		case t.sink.reached <- struct{}{}:
		default:
		}
	}
	return nil
}

func (t *discardTransport) end(CloseReason) error { return nil }
func (t *discardTransport) close()                {}

// fanoutFixture is a real Edge on a real embedded NATS server whose
// connections write to discarding transports.
type fanoutFixture struct {
	e    *Edge
	nc   *nats.Conn
	sink *frameSink
	n    int
}

func newFanoutFixture(b *testing.B, n int, name string, groups int) *fanoutFixture {
	b.Helper()
	srv := natstest.StartServer(b)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	e, err := New(nc, Config{EdgeID: "bench", PingInterval: time.Hour}, nil, nil)
	if err != nil {
		nc.Close()
		b.Fatal(err)
	}
	f := &fanoutFixture{e: e, nc: nc, sink: newFrameSink(), n: n}
	for i := range n {
		group := ""
		if groups > 0 {
			group = "g" + strconv.Itoa(i%groups)
		}
		c := benchConn(e, name, group, fmt.Sprintf("client-%06d", i), &discardTransport{sink: f.sink})
		replay, ok := e.start(c, func(string) []byte { return nil })
		if !ok {
			f.close(b)
			b.Fatalf("connection %d did not register", i)
		}
		e.begin(c, replay)
	}
	// Let the edge's own "replace" announcements go through the dispatcher
	// before measuring: they share the registry with the benchmark.
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for counterValue(e.m.received) < float64(n) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := e.Connections(); got != n {
		f.close(b)
		b.Fatalf("%d connections registered, want %d", got, n)
	}
	return f
}

// benchConn builds a connection the way newConn and serveHijacked do, on
// transport t.
func benchConn(e *Edge, name, group, id string, t transport) *conn {
	now := time.Now().UnixNano()
	c := &conn{
		e:      e,
		token:  e.cfg.EdgeID + "-" + strconv.FormatUint(e.serial.Add(1), 10),
		since:  now,
		name:   name,
		group:  group,
		gkey:   strings.ToLower(group),
		id:     id,
		shown:  id,
		chosen: true, // offered by the client, so announced to other edges
		kind:   "sse_h1",
		spawn:  true,
		t:      t,
		done:   make(chan struct{}),
		space:  make(chan struct{}, 1),
	}
	c.res.on = e.hist != nil
	c.drainFn = c.drain
	c.lastSend.Store(now)
	return c
}

func (f *fanoutFixture) close(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.e.Shutdown(ctx); err != nil {
		b.Errorf("shutdown: %v", err)
	}
	f.nc.Close()
}

// BenchmarkFanout measures one NATS message to a name with N local
// connections: the fan-out's Deliver (match, one encode, N queue pushes) and
// the writers draining every queue into a discarding transport (which the
// writer pool cannot write itself: each connection's writer goroutine
// does; herald-bench measures the pool on real sockets). With
// inflight=1 each message is fully written before the next is delivered
// (the per-message cost at low rates: every writer starts and exits); with
// inflight=64 up to 64 messages are outstanding, so writers batch (the
// cost near saturation). deliveries/s is N × messages per second of wall
// time on this machine.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		f := newFanoutFixture(b, n, "bench", 0)
		for _, inflight := range []int{1, 64} {
			b.Run(fmt.Sprintf("conns=%d/inflight=%d", n, inflight), func(b *testing.B) {
				b.ReportAllocs()
				base := f.sink.frames.Load()
				run := make([]broker.Message, 1)
				b.ResetTimer()
				for i := range b.N {
					// What the feed hands the fan-out for one message.
					run[0] = broker.Message{Kind: broker.KindEvent, Addr: broker.Address{Name: "bench"}, Event: broker.Event{Data: benchSmallJSON}}
					f.e.fan.Deliver(run)
					if i+1 >= inflight {
						f.sink.wait(base + int64(i+2-inflight)*int64(n))
					}
				}
				f.sink.wait(base + int64(b.N)*int64(n))
				b.StopTimer()
				b.ReportMetric(float64(b.N)*float64(n)/b.Elapsed().Seconds(), "deliveries/s")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*float64(n)), "ns/delivery")
			})
		}
		f.close(b)
	}
}

// BenchmarkRegistryMatch measures finding the targets of one address among
// 10k connections of one name in 100 groups of 100.
func BenchmarkRegistryMatch(b *testing.B) {
	const n, groups = 10000, 100
	r := newRegistry()
	for i := range n {
		g := "G" + strconv.Itoa(i%groups)
		r.add(&conn{name: "bench", group: g, gkey: strings.ToLower(g), id: fmt.Sprintf("client-%06d", i)})
	}
	cases := []struct {
		name string
		addr broker.Address
		want int
	}{
		{"client", broker.Address{Name: "bench", ClientID: "client-004242"}, 1},
		{"group+client", broker.Address{Name: "bench", Group: "g42", ClientID: "client-004242"}, 1},
		{"group", broker.Address{Name: "bench", Group: "g42"}, n / groups},
		{"name", broker.Address{Name: "bench"}, n},
		{"all_names", broker.Address{}, n},
		{"miss", broker.Address{Name: "nobody"}, 0},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var dst []*conn
			for b.Loop() {
				dst = r.match(tc.addr, dst[:0])
			}
			if len(dst) != tc.want {
				b.Fatalf("matched %d, want %d", len(dst), tc.want)
			}
		})
	}
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
