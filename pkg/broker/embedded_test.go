package broker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

func TestEmbeddedStartStop(t *testing.T) {
	e, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: broker.RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if !strings.HasPrefix(e.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(e.ClientURL(), ":-1") {
		t.Fatalf("ClientURL %q, want nats://127.0.0.1:<port>", e.ClientURL())
	}
	if e.ClusterURL() != "" {
		t.Fatalf("ClusterURL %q without clustering, want empty", e.ClusterURL())
	}
	if !strings.HasPrefix(e.Name(), "herald-") || e.Server().Name() != e.Name() {
		t.Fatalf("Name %q (server %q), want a random herald-<hex> name", e.Name(), e.Server().Name())
	}
	if e.Server().JetStreamEnabled() {
		t.Fatal("JetStream on by default")
	}

	nc, err := nats.Connect(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "hello" {
		t.Fatalf("round trip: %v %v", m, err)
	}

	e.Shutdown()
	if e.Server().Running() {
		t.Fatal("server running after Shutdown")
	}
	e.Shutdown() // idempotent
	if _, err := nats.Connect(e.ClientURL(), nats.Timeout(time.Second)); err == nil {
		t.Fatal("connected to a shut-down server")
	}
}

func TestEmbeddedJetStream(t *testing.T) {
	e := natstest.StartServer(t)
	nc, err := nats.Connect(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "HIST", Subjects: []string{"herald.ev.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	ack, err := js.Publish(ctx, "herald.ev.chat._._", []byte("x"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if ack.Stream != "HIST" || ack.Sequence != 1 {
		t.Fatalf("ack %+v, want HIST seq 1", ack)
	}
}

func TestEmbeddedJetStreamSyncAlwaysPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := broker.EmbeddedConfig{Port: broker.RandomPort, ServerName: "persist", JetStream: true, DataDir: dir, JetStreamSyncAlways: true}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	e, err := broker.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.ClientURL())
	if err != nil {
		e.Shutdown()
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	e.Shutdown()

	e, err = broker.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err = nats.Connect(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	s, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil || string(m.Data) != "kept" {
		t.Fatalf("message after restart: %v %v", m, err)
	}
}

func TestEmbeddedConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   broker.EmbeddedConfig
		field string
	}{
		{"port too low", broker.EmbeddedConfig{Port: -2}, "EmbeddedConfig.Port"},
		{"port too high", broker.EmbeddedConfig{Port: 65536}, "EmbeddedConfig.Port"},
		{"host with space", broker.EmbeddedConfig{Host: "local host"}, "EmbeddedConfig.Host"},
		{"server name with space", broker.EmbeddedConfig{ServerName: "a b"}, "EmbeddedConfig.ServerName"},
		{"jetstream without dir", broker.EmbeddedConfig{JetStream: true}, "EmbeddedConfig.DataDir"},
		{"sync always without jetstream", broker.EmbeddedConfig{JetStreamSyncAlways: true}, "EmbeddedConfig.JetStreamSyncAlways"},
		{"cluster name with newline", broker.EmbeddedConfig{ClusterName: "a\nb"}, "EmbeddedConfig.ClusterName"},
		{"cluster host without name", broker.EmbeddedConfig{ClusterHost: "127.0.0.1"}, "EmbeddedConfig.ClusterHost"},
		{"cluster port without name", broker.EmbeddedConfig{ClusterPort: 6222}, "EmbeddedConfig.ClusterPort"},
		{"routes without name", broker.EmbeddedConfig{Routes: []string{"nats-route://127.0.0.1:6222"}}, "EmbeddedConfig.Routes"},
		{"cluster port out of range", broker.EmbeddedConfig{ClusterName: "c", ClusterPort: 70000}, "EmbeddedConfig.ClusterPort"},
		{"route bad scheme", broker.EmbeddedConfig{ClusterName: "c", Routes: []string{"nats-route://a:1", "http://a:1"}}, "EmbeddedConfig.Routes[1]"},
		{"route without port", broker.EmbeddedConfig{ClusterName: "c", Routes: []string{"nats-route://a"}}, "EmbeddedConfig.Routes[0]"},
		{"route without host", broker.EmbeddedConfig{ClusterName: "c", Routes: []string{"nats-route://:6222"}}, "EmbeddedConfig.Routes[0]"},
		{"route port zero", broker.EmbeddedConfig{ClusterName: "c", Routes: []string{"nats-route://a:0"}}, "EmbeddedConfig.Routes[0]"},
		{"negative lame duck", broker.EmbeddedConfig{LameDuckDuration: -time.Second}, "EmbeddedConfig.LameDuckDuration"},
		{"grace not below duration", broker.EmbeddedConfig{LameDuckDuration: time.Second, LameDuckGracePeriod: time.Second}, "EmbeddedConfig.LameDuckGracePeriod"},
		{"grace not below default duration", broker.EmbeddedConfig{LameDuckGracePeriod: 3 * time.Minute}, "EmbeddedConfig.LameDuckGracePeriod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var be *broker.Error
			if !errors.As(err, &be) || be.Code != broker.CodeInvalid || be.Field != tt.field {
				t.Fatalf("Validate() = %v, want CodeInvalid on %s", err, tt.field)
			}
			if !errors.Is(err, broker.ErrInvalid) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not match ErrInvalid or name %s", err, tt.field)
			}
			if _, err := broker.StartEmbedded(tt.cfg); !errors.Is(err, broker.ErrInvalid) {
				t.Fatalf("StartEmbedded accepted an invalid config: %v", err)
			}
		})
	}

	valid := []broker.EmbeddedConfig{
		{},
		{Port: broker.RandomPort, JetStream: true, DataDir: "/tmp/x", JetStreamSyncAlways: true},
		{ClusterName: "c", ClusterPort: broker.RandomPort, Routes: []string{"nats-route://10.0.0.1:6222", "nats://[::1]:6222", "tls://h:1"}},
		{LameDuckDuration: time.Second, LameDuckGracePeriod: 500 * time.Millisecond},
	}
	for i, cfg := range valid {
		if err := cfg.Validate(); err != nil {
			t.Errorf("valid config %d: %v", i, err)
		}
	}
}

func TestEmbeddedPortInUseFailsFast(t *testing.T) {
	e := natstest.StartServer(t)
	p := e.Server().Addr().(*net.TCPAddr).Port
	portStr := strconv.Itoa(p)
	start := time.Now()
	_, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: p})
	if err == nil {
		t.Fatal("second server on the same port started")
	}
	if !strings.Contains(err.Error(), "failed to start") || !strings.Contains(err.Error(), portStr) {
		t.Fatalf("error %q does not say the start failed on port %s", err, portStr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v to report a port in use", d)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEmbeddedLogger(t *testing.T) {
	var buf syncBuffer
	e, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Port:       broker.RandomPort,
		ServerName: "logged",
		Logger:     slog.New(slog.NewTextHandler(&buf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Shutdown()
	out := buf.String()
	for _, want := range []string{"level=INFO", "Listening for client connections", "component=nats-server", "server=logged", "Server Exiting"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "level=DEBUG") {
		t.Errorf("debug output with an Info logger:\n%s", out)
	}
}

func TestEmbeddedLameDuckShutdown(t *testing.T) {
	e, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Port:             broker.RandomPort,
		LameDuckDuration: 200 * time.Millisecond, // grace defaults to 100ms
	})
	if err != nil {
		t.Fatal(err)
	}
	ldm := make(chan struct{})
	nc, err := nats.Connect(e.ClientURL(), nats.NoReconnect(), nats.LameDuckModeHandler(func(*nats.Conn) { close(ldm) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	done := make(chan struct{})
	go func() {
		defer close(done)
		e.LameDuckShutdown()
	}()
	select {
	case <-ldm:
	case <-time.After(10 * time.Second):
		t.Fatal("client was not told about lame duck mode")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("LameDuckShutdown did not return")
	}
	if e.Server().Running() {
		t.Fatal("server running after LameDuckShutdown")
	}
	natstest.Eventually(t, 5*time.Second, nc.IsClosed, "client closed by lame duck shutdown")
	e.LameDuckShutdown() // on a stopped server: returns at once
}

func TestEmbeddedCluster(t *testing.T) {
	a, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Port: broker.RandomPort, ServerName: "a", ClusterName: "c", ClusterPort: broker.RandomPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	if !strings.HasPrefix(a.ClusterURL(), "nats-route://127.0.0.1:") {
		t.Fatalf("ClusterURL %q", a.ClusterURL())
	}
	b, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Port: broker.RandomPort, ServerName: "b", ClusterName: "c", ClusterPort: broker.RandomPort,
		Routes: []string{a.ClusterURL()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	natstest.Eventually(t, 10*time.Second, func() bool {
		return a.Server().NumRemotes() == 1 && b.Server().NumRemotes() == 1
	}, "a and b route to each other")
}
