package broker_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// BenchmarkLifecycleEvents measures what an edge adds to one connection's
// life for its lifecycle events: building and publishing one connect and
// one disconnect event (nats.go copies them into its buffer; the NATS
// server's share is measured by herald-bench -scenario presence).
func BenchmarkLifecycleEvents(b *testing.B) {
	srv := natstest.StartServer(b)
	nc := natstest.Connect(b, srv.ClientURL())
	p, err := broker.StartPresence(nc, broker.PresenceOptions{Edge: "bench", Source: &fakeEdge{conns: map[string]broker.ConnInfo{}}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop()
	c := broker.ConnInfo{Edge: "bench", Name: "Pode.Web.Actions", Group: "page_home",
		ClientID: "s:5d12f974-7b1a-4524-ab93-6afbf42c4ffa.8qHWZA7dMwgbAO0uW3pncXp8U6YpaOJBiaXpPFqdVlg=", Transport: "sse_h1", Since: time.Now()}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		c.Conn = "bench-" + strconv.Itoa(i)
		if err := p.Connected(&c); err != nil {
			b.Fatal(err)
		}
		if err := p.Disconnected(&c, "gone", c.Since); err != nil {
			b.Fatal(err)
		}
	}
}
