package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// Debian 12's nats-server 2.9.10 has neither batched direct gets (2.11)
// nor consumers with several filter subjects (2.10). The history reads it
// one message per request, chosen from the server's version; a read that
// assumes a newer server (a batch, a consumer with several filters) falls
// back by itself; and every way gives what a current server gives.
func TestHistoryOnDebianServer(t *testing.T) {
	srv := natstest.StartSystemServer(t, natstest.DebianServerVersion)
	nc := natstest.Connect(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := broker.MustSubjects("")
	h, err := broker.OpenHistory(ctx, nc, s, broker.HistoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.ReadMode(); got != "direct gets" {
		t.Fatalf("on nats-server %s the history reads with %s, want direct gets", srv.Version, got)
	}

	const n = 600
	want, filters := publishInterleaved(t, ctx, nc, h, n)

	for _, tc := range []struct {
		name       string
		set, after uint32
	}{
		{"direct gets", broker.ReadDirect, broker.ReadDirect},
		{"message gets", broker.ReadMsgGet, broker.ReadMsgGet},
		{"a batch answered unbatched", broker.ReadBatch, broker.ReadDirect},
		{"a consumer refused several filters", broker.ReadConsumer, broker.ReadMsgGet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker.SetReadMode(h, tc.set)
			for _, from := range []uint64{1, 300, n} {
				var got []string
				err := h.Replay(ctx, from, n, filters, func(m broker.Stored) error {
					got = append(got, fmt.Sprintf("%d %s %s", m.Seq, m.Subject, m.Msg.Data))
					return nil
				})
				var w []string
				for _, line := range want {
					var seq uint64
					fmt.Sscan(line, &seq)
					if seq >= from {
						w = append(w, line)
					}
				}
				if err != nil || !slices.Equal(got, w) {
					t.Fatalf("from %d: read %d messages (%v), want %d; first %q, want %q", from, len(got), err, len(w), first(got), first(w))
				}
			}
			if got := broker.ReadModeOf(h); got != tc.after {
				t.Errorf("mode after the replay %d, want %d", got, tc.after)
			}
		})
	}

	// 2.9.10 keeps a Status header a producer stored: it is still data.
	checkForgedHeaders(t, natstest.Connect(t, srv.URL), []uint32{broker.ReadDirect, broker.ReadMsgGet})
}

// versionProxy forwards NATS clients to the server at addr, with the
// version in the server's INFO replaced by version: a server older than
// any binary at hand, for the one thing that depends on its version alone.
func versionProxy(t *testing.T, addr, version string) string {
	t.Helper()
	return versionProxyOn(t, "127.0.0.1:0", addr, version)
}

// versionProxyOn is versionProxy listening on listen.
func versionProxyOn(t *testing.T, listen, addr, version string) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer c.Close()
				// Every INFO, not only the first: the server may send
				// another one after CONNECT, and the client takes its
				// version from the latest.
				versionField := regexp.MustCompile(`"version":"[^"]*"`)
				r := bufio.NewReader(s)
				for {
					line, err := r.ReadString('\n')
					if strings.HasPrefix(line, "INFO ") {
						line = versionField.ReplaceAllString(line, `"version":"`+version+`"`)
					}
					if _, werr := io.WriteString(c, line); werr != nil || err != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				defer s.Close()
				_, _ = io.Copy(s, c)
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// On a server older than MinServerVersion the history is never opened
// (nor created): the edge stays not ready, saying which version it needs.
func TestHistoryRefusesOldServer(t *testing.T) {
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, versionProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"), "2.8.4"))
	if v := nc.ConnectedServerVersion(); v != "2.8.4" {
		t.Fatalf("the proxy shows version %q", v)
	}
	w, err := broker.WatchHistory(nc, broker.MustSubjects(""), broker.HistoryConfig{}, broker.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	err = w.Ready()
	if err == nil || !strings.Contains(err.Error(), "nats-server 2.8.4 is too old") || !strings.Contains(err.Error(), broker.MinServerVersion) {
		t.Fatalf("Ready() = %v, want the version needed", err)
	}
	js, _ := jetstream.New(natstest.Connect(t, srv.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, "HERALD_EVENTS"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the stream on a server too old: %v, want none created", err)
	}
}

// An edge that starts before NATS is reachable learns the server's
// version only once connected: reached late, a server too old is refused
// all the same, and the stream is not created on it.
func TestHistoryRefusesOldServerReachedLate(t *testing.T) {
	srv := natstest.StartServer(t)
	spare, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := spare.Addr().String()
	spare.Close() // nothing listens there yet
	nc, err := nats.Connect("nats://"+listen, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w, err := broker.WatchHistory(nc, broker.MustSubjects(""), broker.HistoryConfig{}, broker.WatchOptions{Refresh: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	versionProxyOn(t, listen, strings.TrimPrefix(srv.ClientURL(), "nats://"), "2.8.4")
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if err := w.Ready(); err == nil || !strings.Contains(err.Error(), "nats-server 2.8.4 is too old") {
			return fmt.Errorf("Ready() = %v, want the version needed", err)
		}
		return nil
	})
	js, _ := jetstream.New(natstest.Connect(t, srv.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, "HERALD_EVENTS"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the stream on a server too old: %v, want none created", err)
	}
}
