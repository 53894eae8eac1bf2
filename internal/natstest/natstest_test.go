package natstest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
)

func TestStartServer(t *testing.T) {
	e := natstest.StartServer(t)
	if !e.Server().JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	nc, err := nats.Connect(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Request("nope", nil, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request without responders: %v, want ErrNoResponders", err)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	natstest.Eventually(t, time.Second, func() bool { n++; return n == 3 }, "n = %d", n)
	if n != 3 {
		t.Fatalf("n = %d, want 3", n)
	}

	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine, as it does in a real test
		defer close(done)
		natstest.Eventually(ft, 30*time.Millisecond, func() bool { return false }, "waiting for %s", "godot")
	}()
	<-done
	if want := "natstest: not true within 30ms: waiting for godot"; ft.msg != want {
		t.Fatalf("message %q, want %q", ft.msg, want)
	}
}

// fakeTB records Fatalf instead of failing the real test.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	for i, e := range c.Nodes {
		if got := e.Server().NumRemotes(); got != 2 {
			t.Fatalf("node %d: %d remotes, want 2", i, got)
		}
		if e.ClusterURL() == "" {
			t.Fatalf("node %d: no cluster URL", i)
		}
	}

	// Routes carry messages: subscribe on node 2, publish on node 0.
	sub, err := nats.Connect(c.Nodes[2].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	s, err := sub.SubscribeSync("x.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(c.Nodes[0].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// Interest propagates over routes asynchronously: publish until it arrives.
	natstest.Eventually(t, 5*time.Second, func() bool {
		if err := pub.Publish("x.y", []byte("hi")); err != nil {
			return false
		}
		m, err := s.NextMsg(20 * time.Millisecond)
		return err == nil && string(m.Data) == "hi"
	}, "message across routes")

	// JetStream works with three replicas.
	nc := c.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3}); err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	if _, err := js.Publish(ctx, "r3.a", []byte("1")); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func TestClusterStopRestart(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	nc := c.Connect(t, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "F", Subjects: []string{"f.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "f.1", []byte("before")); err != nil {
		t.Fatal(err)
	}

	c.Stop(1)
	if c.Running(1) {
		t.Fatal("node 1 still running after Stop")
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return c.Nodes[0].Server().NumRemotes() == 1 && c.Nodes[2].Server().NumRemotes() == 1
	}, "survivors see the stopped node gone")
	// Two of three replicas keep quorum: publishing still works.
	var pubErr error
	// If node 1 led the stream, a new leader must be elected first (raft
	// election timeouts are several seconds).
	natstest.Eventually(t, 30*time.Second, func() bool {
		pctx, pcancel := context.WithTimeout(t.Context(), time.Second)
		defer pcancel()
		_, pubErr = js.Publish(pctx, "f.2", []byte("during"))
		return pubErr == nil
	}, func() string { return fmt.Sprintf("publish with one node down: %v", pubErr) })

	c.Restart(t, 1)
	if !c.Running(1) {
		t.Fatal("node 1 not running after Restart")
	}
	for i, e := range c.Nodes {
		if got := e.Server().NumRemotes(); got != 2 {
			t.Fatalf("node %d: %d remotes after restart, want 2", i, got)
		}
	}
	// The restarted node catches up on the stream it missed.
	natstest.Eventually(t, 30*time.Second, func() bool {
		ictx, icancel := context.WithTimeout(t.Context(), time.Second)
		defer icancel()
		info, err := st.Info(ictx)
		if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return info.State.Msgs >= 2
	}, "stream F has three current replicas again")
}
