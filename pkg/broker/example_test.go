package broker_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/natsserver"
	"github.com/herald-push/herald/pkg/policy"
)

// Publish an event to one group of a name. Every edge holding a connection
// of name "orders" in group "admins" delivers it to that connection.
func ExamplePublisher_Publish() {
	srv, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()

	// Watch the wire the way an edge would.
	sub, _ := nc.SubscribeSync("herald.ev.>")

	pub, err := broker.NewPublisher(nc, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := pub.Publish(ctx,
		broker.Target{Name: "orders", Groups: []string{"Admins"}},
		broker.Event{ID: "42", Type: "order.created", Data: []byte(`{"id":42}`)})
	fmt.Println(n, err)

	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	ev, _ := broker.DecodeEvent(m)
	fmt.Println(m.Subject)
	fmt.Println(ev.Type, ev.ID, string(ev.Data))
	// Output:
	// 1 <nil>
	// herald.ev.orders.admins._
	// order.created 42 {"id":42}
}

// A send wider than the name's broadcast level is refused before anything
// is published, with an error callers can branch on.
func ExamplePublisher_Publish_broadcastLevel() {
	srv, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()

	levels, _ := policy.ParseLevels("orders=group")
	pub, _ := broker.NewPublisher(nc, &broker.PublisherOptions{Levels: levels})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err = pub.Publish(ctx, broker.Target{Name: "orders"}, broker.Event{Data: []byte("to everyone")})
	fmt.Println(errors.Is(err, broker.ErrBroadcastLevel))
	fmt.Println(err)
	// Output:
	// true
	// broker: broadcast level: policy: broadcast level for "orders" is group: a group or clientId is required
}
