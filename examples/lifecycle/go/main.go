// Command lifecycle is an example consumer of Herald's lifecycle events:
// who comes and goes, from any Go backend.
//
// Every Herald edge publishes a connect event when a client connects and a
// disconnect event when it leaves, on
//
//	herald.sys.lifecycle.<event>.<edge>.<name>.<group>.<clientId>
//
// with a JSON body (broker.LifecycleEvent). When an edge dies, another
// edge publishes the disconnects of its connections with reason
// "edge_lost". A client that reconnects can have a second connection (a
// new conn token) before the first one's disconnect arrives, so the
// consumer tracks connections by token and reports a user online when its
// first connection opens and offline when its last one closes.
//
//	go run ./examples/lifecycle/go [-nats nats://127.0.0.1:4222] [-prefix herald]
//	                               [-durable NAME [-stream HERALD_LIFECYCLE]] [-count N]
//
// -durable reads the events kept in the lifecycle stream (cmd/edge
// -lifecycle-max-age) through a durable consumer: a consumer that was
// stopped reads what happened meanwhile when it starts again. Without it,
// it subscribes and sees what happens from now on. -count stops after N
// events.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "lifecycle:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lifecycle", flag.ContinueOnError)
	url := fs.String("nats", nats.DefaultURL, "NATS `URL`")
	prefix := fs.String("prefix", broker.DefaultPrefix, "Herald's subject `prefix`")
	durable := fs.String("durable", "", "read the lifecycle stream with this durable `consumer`")
	stream := fs.String("stream", "", "lifecycle `stream` (default: prefix in upper case plus _LIFECYCLE)")
	count := fs.Int("count", 0, "stop after `n` events (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	subjects, err := broker.NewSubjects(*prefix)
	if err != nil {
		return err
	}
	if *stream == "" {
		*stream = strings.ToUpper(strings.ReplaceAll(*prefix, ".", "_")) + "_LIFECYCLE"
	}
	nc, err := nats.Connect(*url, nats.Name("herald-lifecycle-consumer"))
	if err != nil {
		return err
	}
	defer nc.Close()

	p := presence{}
	seen := 0
	done := make(chan struct{})
	handle := func(m *nats.Msg) bool {
		ev, err := broker.DecodeLifecycle(m)
		if err != nil {
			fmt.Fprintln(os.Stderr, "skipped:", err)
			return false
		}
		fmt.Println(describe(ev))
		if change := p.apply(ev); change != "" {
			fmt.Println(change)
		}
		seen++
		return *count > 0 && seen >= *count
	}

	if *durable != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, *stream, jetstream.ConsumerConfig{
			Durable:       *durable,
			AckPolicy:     jetstream.AckExplicitPolicy,
			FilterSubject: subjects.LifecycleAll(),
		})
		if err != nil {
			return err
		}
		// One goroutine delivers, so the presence map needs no lock.
		cc, err := cons.Consume(func(m jetstream.Msg) {
			finished := handle(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			_ = m.Ack()
			if finished {
				close(done)
			}
		})
		if err != nil {
			return err
		}
		defer cc.Stop()
		fmt.Printf("reading %s as %s\n", *stream, *durable)
	} else {
		ch := make(chan *nats.Msg, 4096)
		sub, err := nc.ChanSubscribe(subjects.LifecycleAll(), ch)
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := nc.Flush(); err != nil {
			return err
		}
		fmt.Println("listening on", subjects.LifecycleAll())
		go func() {
			for m := range ch {
				if handle(m) {
					close(done)
					return
				}
			}
		}()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// presence tracks the open connections (conn tokens) of each name and clientId.
type presence map[[2]string]map[string]bool

// apply records one event and returns "online …" or "offline …" when the
// user's first connection opened or its last one closed.
func (p presence) apply(ev broker.LifecycleEvent) string {
	key := [2]string{ev.Name, policy.RawID(ev.ClientID)}
	conns := p[key]
	before := len(conns)
	if ev.Event == broker.EventConnect {
		if conns == nil {
			conns = map[string]bool{}
			p[key] = conns
		}
		conns[ev.Conn] = true
	} else {
		delete(conns, ev.Conn)
		if len(conns) == 0 {
			delete(p, key)
		}
	}
	switch after := len(p[key]); {
	case before == 0 && after > 0:
		return fmt.Sprintf("online %s %s", key[0], key[1])
	case before > 0 && after == 0:
		return fmt.Sprintf("offline %s %s (%s)", key[0], key[1], ev.Reason)
	}
	return ""
}

func describe(ev broker.LifecycleEvent) string {
	who := fmt.Sprintf("edge=%s conn=%s name=%s group=%s clientId=%s transport=%s",
		ev.Edge, ev.Conn, ev.Name, ev.Group, ev.ClientID, ev.Transport)
	if ev.Event == broker.EventConnect {
		if ev.Restored {
			return "connect " + who + " restored"
		}
		return "connect " + who
	}
	by := ""
	if ev.ReportedBy != "" {
		by = " reportedBy=" + ev.ReportedBy
	}
	return fmt.Sprintf("disconnect %s reason=%s durationMs=%d%s", who, ev.Reason, ev.DurationMS, by)
}
