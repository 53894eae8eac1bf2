package broker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

func strp(s string) *string { return &s }

// authPair is an edge-side AuthClient and a backend connection on one
// server, with the edge's and the backend's permissions, which must be
// enough (rolePair).
func authPair(t *testing.T, o broker.AuthOptions) (*broker.AuthClient, *nats.Conn) {
	t.Helper()
	edge, backend := rolePair(t)
	a, err := broker.NewAuthClient(edge, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a, backend
}

func serveAuth(t *testing.T, nc *nats.Conn, name string, decide func(broker.AuthRequest) broker.AuthAnswer) {
	t.Helper()
	sub, err := broker.ServeAuth(nc, "", name, decide)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

func TestAuthAsk(t *testing.T) {
	a, backend := authPair(t, broker.AuthOptions{Timeout: 300 * time.Millisecond})
	serveAuth(t, backend, "*", func(r broker.AuthRequest) broker.AuthAnswer {
		switch {
		case r.Name == "Deny":
			return broker.AuthAnswer{Status: 401, Reason: "sign in first"}
		case r.Cookies["session"] == "alice":
			return broker.AuthAnswer{Allow: true, Group: strp("admins"), ClientID: strp("alice-1"), Subject: "alice"}
		case r.Name == "Bad":
			return broker.AuthAnswer{Allow: true, ClientID: strp("s:forged.sig")}
		case r.Name == "Stall":
			time.Sleep(time.Second)
		}
		return broker.AuthAnswer{Allow: true}
	})
	ctx := context.Background()

	ans, src, err := a.Ask(ctx, &broker.AuthRequest{Name: "Orders", Cookies: map[string]string{"session": "alice"}})
	if err != nil || src != broker.FromBackend || !ans.Allow || *ans.Group != "admins" || *ans.ClientID != "alice-1" || ans.Subject != "alice" {
		t.Fatalf("assign: %+v %v %v", ans, src, err)
	}
	ans, _, err = a.Ask(ctx, &broker.AuthRequest{Name: "Deny"})
	if err != nil || ans.Allow || ans.Status != 401 || ans.Reason != "sign in first" {
		t.Fatalf("deny: %+v %v", ans, err)
	}
	if _, _, err := a.Ask(ctx, &broker.AuthRequest{Name: "Bad"}); !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("a signed clientId assigned: %v", err)
	}
	start := time.Now()
	if _, _, err := a.Ask(ctx, &broker.AuthRequest{Name: "Stall"}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("stalled backend: %v", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Fatalf("the timeout was not applied: %v", d)
	}
}

func TestAuthNoResponders(t *testing.T) {
	a, _ := authPair(t, broker.AuthOptions{Timeout: 5 * time.Second})
	start := time.Now()
	_, _, err := a.Ask(context.Background(), &broker.AuthRequest{Name: "Orders"})
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("%v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("no responders waited for the timeout: %v", d)
	}
}

func TestAuthMalformedAnswer(t *testing.T) {
	a, backend := authPair(t, broker.AuthOptions{})
	sub, _ := backend.Subscribe("herald.auth.*", func(m *nats.Msg) {
		switch m.Subject {
		case "herald.auth.Text":
			_ = m.Respond([]byte("yes"))
		case "herald.auth.Status":
			_ = m.Respond([]byte(`{"allow":false,"status":200}`))
		case "herald.auth.Vary":
			_ = m.Respond([]byte(`{"allow":true,"cache":{"ttl":5,"vary":["body"]}}`))
		}
	})
	defer sub.Unsubscribe()
	_ = backend.Flush()
	for _, name := range []string{"Text", "Status", "Vary"} {
		if ans, _, err := a.Ask(context.Background(), &broker.AuthRequest{Name: name}); !errors.Is(err, broker.ErrInvalid) || ans.Allow {
			t.Errorf("%s: %+v %v", name, ans, err)
		}
	}
}

func TestAuthCache(t *testing.T) {
	a, backend := authPair(t, broker.AuthOptions{})
	var asked atomic.Int32
	serveAuth(t, backend, "*", func(r broker.AuthRequest) broker.AuthAnswer {
		asked.Add(1)
		user := r.Cookies["session"]
		if user == "" {
			return broker.AuthAnswer{Status: 401, Cache: &broker.AuthCache{TTL: 60, Vary: []string{"cookie:session"}}}
		}
		return broker.AuthAnswer{Allow: true, Subject: user,
			Cache: &broker.AuthCache{TTL: 60, Vary: []string{"cookie:session"}, Tags: []string{"user:" + user}}}
	})
	ask := func(name, session string) (broker.AuthAnswer, broker.AuthSource) {
		t.Helper()
		req := &broker.AuthRequest{Name: name, Transport: "sse", Scope: "global", Cookies: map[string]string{}}
		if session != "" {
			req.Cookies["session"] = session
		}
		ans, src, err := a.Ask(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return ans, src
	}
	if ans, src := ask("Orders", "alice"); src != broker.FromBackend || ans.Subject != "alice" {
		t.Fatal(ans, src)
	}
	if ans, src := ask("Orders", "alice"); src != broker.FromCache || ans.Subject != "alice" {
		t.Fatal("second ask not cached", ans, src)
	}
	// The answer varies on the cookie: another user is asked about, and so
	// is a denial (cached too).
	if ans, src := ask("Orders", "bob"); src != broker.FromBackend || ans.Subject != "bob" {
		t.Fatal(ans, src)
	}
	if ans, src := ask("Orders", ""); src != broker.FromBackend || ans.Allow {
		t.Fatal(ans, src)
	}
	if _, src := ask("Orders", ""); src != broker.FromCache {
		t.Fatal("denial not cached")
	}
	if asked.Load() != 3 || a.CachedAnswers() != 3 {
		t.Fatalf("asked %d, cached %d", asked.Load(), a.CachedAnswers())
	}

	purge := func(p *broker.AuthPurge) {
		t.Helper()
		before := a.CachedAnswers()
		if err := broker.PurgeAuthCache(backend, "", p); err != nil {
			t.Fatal(err)
		}
		natstest.Eventually(t, 5*time.Second, func() bool { return a.CachedAnswers() < before }, "purge %+v not applied", p)
	}
	purge(&broker.AuthPurge{Tags: []string{"user:alice"}})
	if _, src := ask("Orders", "alice"); src != broker.FromBackend {
		t.Fatal("alice still cached after her purge")
	}
	if _, src := ask("Orders", "bob"); src != broker.FromCache {
		t.Fatal("bob's answer was purged with alice's")
	}
	purge(&broker.AuthPurge{Names: []string{"Orders"}})
	if _, src := ask("Orders", "bob"); src != broker.FromBackend {
		t.Fatal("bob still cached after the name's purge")
	}
	purge(nil)
	if n := a.CachedAnswers(); n != 0 {
		t.Fatalf("%d answers after a purge of everything", n)
	}
}

func TestAuthCacheExpires(t *testing.T) {
	a, backend := authPair(t, broker.AuthOptions{})
	var asked atomic.Int32
	serveAuth(t, backend, "Orders", func(r broker.AuthRequest) broker.AuthAnswer {
		asked.Add(1)
		return broker.AuthAnswer{Allow: true, Cache: &broker.AuthCache{TTL: 0.2}}
	})
	req := &broker.AuthRequest{Name: "Orders"}
	for range 2 {
		if _, _, err := a.Ask(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if asked.Load() != 1 {
		t.Fatalf("asked %d times within the TTL", asked.Load())
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		_, src, err := a.Ask(context.Background(), req)
		return err == nil && src == broker.FromBackend
	}, "the answer never expired")
}

func TestAuthCacheOff(t *testing.T) {
	a, backend := authPair(t, broker.AuthOptions{CacheSize: -1})
	serveAuth(t, backend, "*", func(r broker.AuthRequest) broker.AuthAnswer {
		return broker.AuthAnswer{Allow: true, Cache: &broker.AuthCache{TTL: 60}}
	})
	for range 2 {
		if _, src, err := a.Ask(context.Background(), &broker.AuthRequest{Name: "X"}); err != nil || src != broker.FromBackend {
			t.Fatal(src, err)
		}
	}
}

// A cache of n entries holds the answers for n clients, each asking with
// its own clientId: their Vary lists do not evict their answers.
func TestAuthCachePerClient(t *testing.T) {
	const n = 100
	a, backend := authPair(t, broker.AuthOptions{CacheSize: n})
	var asked atomic.Int32
	serveAuth(t, backend, "*", func(r broker.AuthRequest) broker.AuthAnswer {
		asked.Add(1)
		return broker.AuthAnswer{Allow: true, Cache: &broker.AuthCache{TTL: 60}}
	})
	for round := range 2 {
		for i := range n {
			if _, _, err := a.Ask(context.Background(), &broker.AuthRequest{Name: "X", ClientID: fmt.Sprint("c", i)}); err != nil {
				t.Fatal(round, i, err)
			}
		}
	}
	if got := asked.Load(); got != n {
		t.Fatalf("asked %d times for %d clients twice", got, n)
	}
}
