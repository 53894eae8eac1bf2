// Package lifecycle_test runs the example lifecycle consumers (go/ and
// node/) against a real edge and NATS server.
package lifecycle_test

import (
	"bufio"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/edge"
)

// herald starts an edge keeping lifecycle events in a stream, on an
// embedded NATS server, and returns its NATS URL and base URL.
func herald(t *testing.T) (natsURL, base string) {
	t.Helper()
	srv := natstest.StartServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	e, err := edge.New(nc, edge.Config{EdgeID: "edge-1", NoHijack: true,
		LifecycleStream: &broker.LifecycleStreamConfig{MaxAge: time.Hour}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(e.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return srv.ClientURL(), hs.URL
}

// visit connects a client with clientId id to name Chat and leaves.
func visit(t *testing.T, base, id string) {
	t.Helper()
	s, err := sseclient.Dial(context.Background(), nil, base+"/sse/Chat?group=room&clientId="+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := s.Next(); err != nil || ev.Type != "pode.open" {
		t.Fatalf("pode.open: %+v %v", ev, err)
	}
	_ = s.Close()
}

// consumer runs an example consumer until it exits and returns its output;
// ready, when set, is called once a line starting with it was printed.
type consumer struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    []string
	ready  chan struct{}
	exited chan error
}

func start(t *testing.T, readyPrefix string, name string, args ...string) *consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	c := &consumer{cmd: exec.CommandContext(ctx, name, args...), ready: make(chan struct{}), exited: make(chan error, 1)}
	c.cmd.Stderr = os.Stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.out = append(c.out, line)
			c.mu.Unlock()
			if strings.HasPrefix(line, readyPrefix) {
				once.Do(func() { close(c.ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		c.exited <- c.cmd.Wait()
	}()
	return c
}

// wait waits for the consumer to exit and returns its output.
func (c *consumer) wait(t *testing.T) string {
	t.Helper()
	if err := <-c.exited; err != nil {
		t.Fatalf("%s: %v\n%s", c.cmd.Path, err, c.output())
	}
	return c.output()
}

func (c *consumer) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.out, "\n")
}

func (c *consumer) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-c.ready:
	case err := <-c.exited:
		t.Fatalf("%s exited before it was ready: %v\n%s", c.cmd.Path, err, c.output())
	}
}

// check finds, for each of alice and bob in order, the lines the consumer
// must print for their visits (the two may interleave).
func check(t *testing.T, what, out string) {
	t.Helper()
	for i, id := range []string{"alice", "bob"} {
		conn := "edge-1-" + string(rune('1'+i))
		who := "edge=edge-1 conn=" + conn + " name=Chat group=room clientId=" + id + " transport=sse_h1"
		want := []string{"connect " + who, "online Chat " + id, "disconnect " + who + " reason=gone durationMs=", "offline Chat " + id + " (gone)"}
		var mine []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, " "+id) || strings.Contains(line, "="+id+" ") {
				mine = append(mine, line)
			}
		}
		if len(mine) != len(want) {
			t.Fatalf("%s printed %d lines for %s, want %d; output:\n%s", what, len(mine), id, len(want), out)
		}
		for j, w := range want {
			if !strings.HasPrefix(mine[j], w) {
				t.Fatalf("%s: line %d for %s is %q, want %q…; output:\n%s", what, j, id, mine[j], w, out)
			}
		}
	}
}

// nodeConsumer returns the node command and the example's directory, or
// skips (fails on CI) when Node.js or the example's packages are missing.
func nodeConsumer(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs("node")
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	missing := ""
	switch {
	case err != nil:
		missing = "node is not installed (apt-get install nodejs npm)"
	default:
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@nats-io", "transport-node")); err != nil {
			missing = "the example's packages are not installed (cd examples/lifecycle/node && npm ci)"
		}
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatal(missing + "; .ci/run installs them")
		}
		t.Skip(missing)
	}
	return node, dir
}

// The Node.js consumer, live: it subscribes, then two clients come and go.
// Then, durable: started after the events, it reads them from the stream.
func TestNodeConsumer(t *testing.T) {
	node, dir := nodeConsumer(t)
	natsURL, base := herald(t)
	live := start(t, "listening on", node, filepath.Join(dir, "consumer.js"), "--nats", natsURL, "--count", "4")
	live.waitReady(t)
	visit(t, base, "alice")
	visit(t, base, "bob")
	check(t, "node consumer (live)", live.wait(t))

	durable := start(t, "reading", node, filepath.Join(dir, "consumer.js"), "--nats", natsURL, "--durable", "node-example", "--count", "4")
	check(t, "node consumer (durable, started late)", durable.wait(t))
}

// The Go consumer, started after the events: it reads them from the stream.
func TestGoConsumer(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "lifecycle")
	if out, err := exec.Command(goBin, "build", "-o", bin, "./go").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	natsURL, base := herald(t)
	visit(t, base, "alice")
	visit(t, base, "bob")
	durable := start(t, "reading", bin, "-nats", natsURL, "-durable", "go-example", "-count", "4")
	check(t, "go consumer (durable, started late)", durable.wait(t))
}
