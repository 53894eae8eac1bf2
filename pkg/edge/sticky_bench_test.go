package edge

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// stampCountingTransport is discardTransport that does not count the
// id-only frames of kept clientIds as frames (they follow a batch), so a
// fixture waits for the same event frames with and without them, and
// counts them apart.
type stampCountingTransport struct {
	discardTransport
	stamps *int64 // written by this conn's writer only; read after the run
}

func (t *stampCountingTransport) write(bufs [][]byte) error {
	events := bufs[:0:0]
	for _, b := range bufs {
		if bytes.HasPrefix(b, []byte("id: ~")) {
			*t.stamps++
			t.bytes += int64(len(b))
			continue
		}
		events = append(events, b)
	}
	return t.discardTransport.write(events)
}

// BenchmarkFanoutKeepClientID is BenchmarkFanout with events that carry a
// producer id, to connections that do not keep their clientId (keep=false)
// and to connections that do (keep=true): the difference is the cost of
// the one id-only frame each write batch of a kept connection gets
// (sticky.go). The event frame is encoded once per message either way.
func BenchmarkFanoutKeepClientID(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, keep := range []bool{false, true} {
			srv := natstest.StartServer(b)
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				b.Fatal(err)
			}
			e, err := New(nc, Config{EdgeID: "bench", PingInterval: time.Hour, NoLifecycle: true}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			sink := newFrameSink()
			stamps := make([]int64, n)
			for i := range n {
				id := fmt.Sprintf("client-%06d", i)
				c := benchConn(e, "bench", "", id, &stampCountingTransport{discardTransport: discardTransport{sink: sink}, stamps: &stamps[i]})
				if keep {
					c.sticky = newSticky(id)
				}
				replay, ok := e.start(c, func(string) []byte { return nil })
				if !ok {
					b.Fatalf("connection %d did not register", i)
				}
				e.begin(c, replay)
			}
			ran := false // -bench may select none of this fixture's runs
			for _, inflight := range []int{1, 64} {
				b.Run(fmt.Sprintf("conns=%d/keep=%v/inflight=%d", n, keep, inflight), func(b *testing.B) {
					ran = true
					b.ReportAllocs()
					base := sink.frames.Load()
					run := make([]broker.Message, 1)
					b.ResetTimer()
					for i := range b.N {
						run[0] = broker.Message{Kind: broker.KindEvent, Addr: broker.Address{Name: "bench"},
							Event: broker.Event{ID: "order-42", Data: benchSmallJSON}}
						e.fan.Deliver(run)
						if i+1 >= inflight {
							sink.wait(base + int64(i+2-inflight)*int64(n))
						}
					}
					sink.wait(base + int64(b.N)*int64(n))
					b.StopTimer()
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*float64(n)), "ns/delivery")
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := e.Shutdown(ctx); err != nil {
				b.Errorf("shutdown: %v", err)
			}
			cancel()
			nc.Close()
			var total int64
			for _, s := range stamps {
				total += s
			}
			if ran && keep && total == 0 {
				b.Fatal("no id-only frame was written to a kept connection")
			}
			if !keep && total != 0 {
				b.Fatalf("%d id-only frames written to connections that do not keep their clientId", total)
			}
		}
	}
}
