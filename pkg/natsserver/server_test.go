package natsserver_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/natsserver"
)

func TestStartStop(t *testing.T) {
	e, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort})
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

func TestJetStream(t *testing.T) {
	nc := natstest.Connect(t, natstest.StartServer(t).ClientURL())
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

func TestJetStreamSyncAlwaysPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := natsserver.Config{Port: natsserver.RandomPort, ServerName: "persist", JetStream: true, DataDir: dir, JetStreamSyncAlways: true}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	e, err := natsserver.Start(cfg)
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

	e, err = natsserver.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc = natstest.Connect(t, e.ClientURL())
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

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   natsserver.Config
		field string
	}{
		{"port too low", natsserver.Config{Port: -2}, "Port"},
		{"port too high", natsserver.Config{Port: 65536}, "Port"},
		{"host with space", natsserver.Config{Host: "local host"}, "Host"},
		{"server name with space", natsserver.Config{ServerName: "a b"}, "ServerName"},
		{"jetstream without dir", natsserver.Config{JetStream: true}, "DataDir"},
		{"sync always without jetstream", natsserver.Config{JetStreamSyncAlways: true}, "JetStreamSyncAlways"},
		{"cluster name with newline", natsserver.Config{ClusterName: "a\nb"}, "ClusterName"},
		{"cluster host without name", natsserver.Config{ClusterHost: "127.0.0.1"}, "ClusterHost"},
		{"cluster port without name", natsserver.Config{ClusterPort: 6222}, "ClusterPort"},
		{"routes without name", natsserver.Config{Routes: []string{"nats-route://127.0.0.1:6222"}}, "Routes"},
		{"cluster port out of range", natsserver.Config{ClusterName: "c", ClusterPort: 70000}, "ClusterPort"},
		{"route bad scheme", natsserver.Config{ClusterName: "c", Routes: []string{"nats-route://a:1", "http://a:1"}}, "Routes[1]"},
		{"route without port", natsserver.Config{ClusterName: "c", Routes: []string{"nats-route://a"}}, "Routes[0]"},
		{"route without host", natsserver.Config{ClusterName: "c", Routes: []string{"nats-route://:6222"}}, "Routes[0]"},
		{"route port zero", natsserver.Config{ClusterName: "c", Routes: []string{"nats-route://a:0"}}, "Routes[0]"},
		{"negative lame duck", natsserver.Config{LameDuckDuration: -time.Second}, "LameDuckDuration"},
		{"grace not below duration", natsserver.Config{LameDuckDuration: time.Second, LameDuckGracePeriod: time.Second}, "LameDuckGracePeriod"},
		{"grace not below default duration", natsserver.Config{LameDuckGracePeriod: 3 * time.Minute}, "LameDuckGracePeriod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var ce *natsserver.ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Fatalf("Validate() = %v, want a *ConfigError on %s", err, tt.field)
			}
			if !strings.Contains(err.Error(), "Config."+tt.field) {
				t.Fatalf("error %q does not name Config.%s", err, tt.field)
			}
			if _, err := natsserver.Start(tt.cfg); !errors.As(err, &ce) {
				t.Fatalf("Start accepted an invalid config: %v", err)
			}
		})
	}

	valid := []natsserver.Config{
		{},
		{Port: natsserver.RandomPort, JetStream: true, DataDir: "/tmp/x", JetStreamSyncAlways: true},
		{ClusterName: "c", ClusterPort: natsserver.RandomPort, Routes: []string{"nats-route://10.0.0.1:6222", "nats://[::1]:6222", "tls://h:1"}},
		{LameDuckDuration: time.Second, LameDuckGracePeriod: 500 * time.Millisecond},
	}
	for i, cfg := range valid {
		if err := cfg.Validate(); err != nil {
			t.Errorf("valid config %d: %v", i, err)
		}
	}
}

func TestPortInUseFailsFast(t *testing.T) {
	e := natstest.StartServer(t)
	p := e.Server().Addr().(*net.TCPAddr).Port
	portStr := strconv.Itoa(p)
	start := time.Now()
	_, err := natsserver.Start(natsserver.Config{Port: p})
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

func TestLogger(t *testing.T) {
	var buf natstest.SyncBuffer
	e, err := natsserver.Start(natsserver.Config{
		Port:       natsserver.RandomPort,
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

func TestLameDuckShutdown(t *testing.T) {
	e, err := natsserver.Start(natsserver.Config{
		Port:             natsserver.RandomPort,
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

func TestCluster(t *testing.T) {
	a, err := natsserver.Start(natsserver.Config{
		Port: natsserver.RandomPort, ServerName: "a", ClusterName: "c", ClusterPort: natsserver.RandomPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	if !strings.HasPrefix(a.ClusterURL(), "nats-route://127.0.0.1:") {
		t.Fatalf("ClusterURL %q", a.ClusterURL())
	}
	b, err := natsserver.Start(natsserver.Config{
		Port: natsserver.RandomPort, ServerName: "b", ClusterName: "c", ClusterPort: natsserver.RandomPort,
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
