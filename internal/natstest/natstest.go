package natstest

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/pkg/natsserver"
)

// Tick is how often Eventually and the cluster waits poll.
const Tick = 10 * time.Millisecond

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

// Eventually polls cond every Tick until it returns true, and fails the test
// if it has not within timeout. msgAndArgs describe the condition: a format
// string and its arguments, or a single func() string evaluated on failure
// (for messages that include what the last poll saw). Call it from the test
// goroutine only.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	if waitFor(timeout, cond) {
		return
	}
	msg := describe(msgAndArgs)
	t.Fatalf("natstest: not true within %v: %s", timeout, msg)
}

// describe renders Eventually's msgAndArgs.
func describe(msgAndArgs []any) string {
	if len(msgAndArgs) == 0 {
		return "condition not met"
	}
	switch f := msgAndArgs[0].(type) {
	case func() string:
		return f()
	case string:
		return fmt.Sprintf(f, msgAndArgs[1:]...)
	}
	return fmt.Sprint(msgAndArgs)
}

// waitFor polls cond every Tick until it is true (true) or timeout passes (false).
func waitFor(timeout time.Duration, cond func() bool) bool {
	if cond() {
		return true
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(Tick)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return true
			}
		case <-deadline.C:
			return cond()
		}
	}
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

// logSink keeps server log lines in memory.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// newLogger returns a logger for servers started by t. Its output reaches
// the test log only if the test fails; the dump is registered first so it
// runs last, after the servers have shut down.
func newLogger(t testing.TB) *slog.Logger {
	sink := &logSink{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server log:\n%s", sink.String())
		}
	})
	return slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
