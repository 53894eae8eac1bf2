package edge

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// BenchmarkWSFanout measures one NATS message fanned out to N real
// WebSocket connections over loopback TCP: one op is a publish and the
// wait until every client has read the message. allocs/op counts the
// whole process, the clients' readers included.
func BenchmarkWSFanout(b *testing.B) {
	for _, tc := range []struct {
		name  string
		n     int
		proto []string
	}{
		{"raw/conns=1000", 1000, nil},
		{"herald.v1/conns=1000", 1000, []string{WSSubprotocol}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchWSFanout(b, tc.n, tc.proto) })
	}
}

func benchWSFanout(b *testing.B, n int, proto []string) {
	srv := natstest.StartServer(b)
	enc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	e, err := New(enc, Config{PingInterval: time.Hour}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(e.Handler())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
		hs.CloseClientConnections()
		hs.Close()
	}()

	var got sync.WaitGroup // one Done per message read
	var readers sync.WaitGroup
	clients := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, ws := range clients {
			_ = ws.CloseNow()
		}
		readers.Wait()
	}()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ws, _, err := websocket.Dial(ctx, wsURL(hs.URL, fmt.Sprintf("/ws/bench?clientId=c%d", i)),
			&websocket.DialOptions{Subprotocols: proto})
		cancel()
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		clients = append(clients, ws)
		if len(proto) > 0 {
			if _, _, err := ws.Read(context.Background()); err != nil { // pode.open
				b.Fatal(err)
			}
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, r, err := ws.Reader(context.Background())
				if err != nil {
					return
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					return
				}
				got.Done()
			}
		}()
	}
	natstest.Eventually(b, 10*time.Second, func() bool { return e.Connections() == n })
	pub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	subject := broker.MustSubjects("").EventName("/bench")
	data := []byte(`{"symbol":"HRLD","price":123.45,"volume":6789,"ts":"2026-01-02T03:04:05.678Z"}`)

	// Warm up: every client receives one message.
	got.Add(n)
	if err := pub.Publish(subject, data); err != nil {
		b.Fatal(err)
	}
	got.Wait()

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		got.Add(n)
		if err := pub.Publish(subject, data); err != nil {
			b.Fatal(err)
		}
		got.Wait()
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)*float64(n)/elapsed.Seconds(), "deliveries/s")
}
