package natstest

import (
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/natsserver"
)

// StartServer starts a single-node NATS server on 127.0.0.1 with a random
// client port and JetStream on (store in t.TempDir()). It is shut down by
// t.Cleanup; a start failure fails the test.
func StartServer(t testing.TB) *natsserver.Server {
	t.Helper()
	logger := newLogger(t)
	e, err := natsserver.Start(natsserver.Config{
		Port:       natsserver.RandomPort,
		ServerName: "natstest",
		JetStream:  true,
		DataDir:    t.TempDir(),
		Logger:     logger,
	})
	if err != nil {
		t.Fatalf("natstest: start server: %v", err)
	}
	t.Cleanup(e.Shutdown) // runs before the TempDir removal registered above
	return e
}

// Connect connects a nats.go client to url (one URL or several,
// comma-separated) with opts and closes it on t.Cleanup. A failure fails
// the test.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// freePorts returns k distinct ports that were free a moment ago: it
// listens on 127.0.0.1:0 k times at once, notes the ports and closes the
// listeners. Another process may still take one before it is used, which
// is why StartCluster retries once.
func freePorts(k int) ([]int, error) {
	ports := make([]int, 0, k)
	ls := make([]net.Listener, 0, k)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("natstest: find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// newLogger returns a logger for servers started by t. Its output reaches
// the test log only if the test fails; the dump is registered first so it
// runs last, after the servers have shut down.
func newLogger(t testing.TB) *slog.Logger {
	sink := &SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server log:\n%s", sink.String())
		}
	})
	return slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
