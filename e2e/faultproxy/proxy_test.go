package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads it back within timeout.
func roundTrip(c net.Conn, msg []byte, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

// readsNothing reports whether c receives no byte within d (a timeout).
func readsNothing(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	_ = c.SetReadDeadline(time.Time{})
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// closedWithin reports whether reading c ends in an error other than a
// timeout (EOF or reset) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1024)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		return !errors.Is(err, os.ErrDeadlineExceeded)
	}
}

func TestPass(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, many chunks
	if err := roundTrip(c, big, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if m, _ := p.Mode(); m != Pass {
		t.Fatalf("mode %v, want pass", m)
	}
	if s := p.Stats(); s.Accepted != 1 || s.Active != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDelayKeepsOrderAndThroughput(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	if err := roundTrip(c, []byte("warm"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	const d = 150 * time.Millisecond
	p.Delay(d)
	start := time.Now()
	if err := roundTrip(c, []byte("one"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip %v under delay %v each way", rtt, d)
	}
	// Many small writes in flight at once: a delay line, so the whole batch
	// takes about one round trip, not one per write, and order is kept.
	start = time.Now()
	var want bytes.Buffer
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 50 {
		msg := []byte{byte('a' + i%26)}
		want.Write(msg)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("reordered: %q, want %q", got, want.Bytes())
	}
	if el := time.Since(start); el > 10*d {
		t.Fatalf("50 writes took %v under delay %v: chunks were delayed one after another", el, d)
	}
	p.Pass()
	start = time.Now()
	if err := roundTrip(c, []byte("fast"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt >= 2*d {
		t.Fatalf("round trip %v after the delay was lifted", rtt)
	}
}

func TestCut(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	if err := roundTrip(c, []byte("before"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("existing connection not closed by Cut")
	}
	// New connections are refused (accepted and reset at once): the reset
	// may even beat the end of the client's connect.
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c2.Close()
		if !closedWithin(c2, 5*time.Second) {
			t.Fatal("new connection not refused while cut")
		}
	}
	if s := p.Stats(); s.Refused < 1 || s.Active != 0 {
		t.Fatalf("stats %+v, want a refusal and nothing active", s)
	}
	p.Pass()
	c3 := dial(t, p)
	if err := roundTrip(c3, []byte("after"), 5*time.Second); err != nil {
		t.Fatalf("after healing: %v", err)
	}
}

func TestBlackholeHoldsThenForwards(t *testing.T) {
	p := newProxy(t, echoServer(t))
	old := dial(t, p)
	if err := roundTrip(old, []byte("before"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	if _, err := old.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	if !readsNothing(old, 300*time.Millisecond) {
		t.Fatal("data crossed a black hole")
	}
	fresh := dial(t, p) // accepted, held, not connected to the target
	if _, err := fresh.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	if !readsNothing(fresh, 300*time.Millisecond) {
		t.Fatal("a new connection crossed a black hole")
	}
	p.Pass()
	for _, tc := range []struct {
		c    net.Conn
		want string
	}{{old, "held"}, {fresh, "new"}} {
		_ = tc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(tc.want))
		if _, err := io.ReadFull(tc.c, got); err != nil || string(got) != tc.want {
			t.Fatalf("after healing got %q, %v; want %q", got, err, tc.want)
		}
	}
}

// A target that closes during a partition is seen closed only once the
// partition heals.
func TestBlackholeDelaysClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	p := newProxy(t, ln.Addr().String())
	c := dial(t, p)
	srv, ok := <-accepted
	if !ok {
		t.Fatal("target accepted nothing")
	}
	p.Blackhole()
	_ = srv.Close()
	if !readsNothing(c, 300*time.Millisecond) {
		t.Fatal("close crossed a black hole")
	}
	p.Pass()
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("close not forwarded after healing")
	}
}

func TestCloseEndsEverything(t *testing.T) {
	p, err := New("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	held := dial(t, p)
	_, _ = held.Write([]byte("y"))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(c, 5*time.Second) || !closedWithin(held, 5*time.Second) {
		t.Fatal("Close left a connection open")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	p.Pass() // no effect after Close
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("listener still accepting after Close")
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Pass: "pass", Delay: "delay", Cut: "cut", Blackhole: "blackhole", Mode(9): "Mode(9)"} {
		if m.String() != want {
			t.Errorf("%d: %q, want %q", int(m), m.String(), want)
		}
	}
}
