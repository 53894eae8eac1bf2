package natstest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/pkg/natsserver"
)

// ClusterTimeout bounds how long StartCluster and Restart wait for routes
// and JetStream.
const ClusterTimeout = 30 * time.Second

// ClusterName is the NATS cluster name of every test cluster.
const ClusterName = "natstest"

// Cluster is a running n-node NATS cluster with JetStream. Its methods
// must be called from the test goroutine.
type Cluster struct {
	// Nodes are the servers, in start order. A stopped node stays in
	// place (shut down) until Restart replaces it.
	Nodes []*natsserver.Server

	cfgs    []natsserver.Config // fixed ports, names and store dirs
	running []bool
}

// StartCluster starts n nodes on 127.0.0.1 with random free client and
// cluster ports, full-mesh routes and JetStream on (each node with its own
// t.TempDir() store), and waits until every node has a route to every other
// and JetStream has a meta leader that every node follows. If a node fails
// to start (a port taken in the meantime) the whole cluster is started once
// more on fresh ports. Everything is shut down by t.Cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: StartCluster: n = %d, want at least 1", n)
	}
	logger := newLogger(t)
	var errs []error
	for attempt := 1; attempt <= 2; attempt++ {
		c, err := startCluster(t, n, logger)
		if err != nil {
			errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
			continue
		}
		t.Cleanup(c.shutdown)
		c.waitReady(t)
		return c
	}
	t.Fatalf("natstest: start %d-node cluster: %v", n, errors.Join(errs...))
	return nil
}

func startCluster(t testing.TB, n int, logger *slog.Logger) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Nodes:   make([]*natsserver.Server, n),
		cfgs:    make([]natsserver.Config, n),
		running: make([]bool, n),
	}
	for i := range n {
		var routes []string
		for j := range n {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[2*j+1]))
			}
		}
		c.cfgs[i] = natsserver.Config{
			Host:        "127.0.0.1",
			Port:        ports[2*i],
			ServerName:  fmt.Sprintf("node-%d", i),
			JetStream:   true,
			DataDir:     t.TempDir(),
			ClusterName: ClusterName,
			ClusterHost: "127.0.0.1",
			ClusterPort: ports[2*i+1],
			Routes:      routes,
			Logger:      logger,
		}
	}
	for i := range n {
		e, err := natsserver.Start(c.cfgs[i])
		if err != nil {
			c.shutdown()
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		c.Nodes[i], c.running[i] = e, true
	}
	return c, nil
}

// URLs returns the client URLs of every node, comma-separated, the form
// nats.Connect takes.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, e := range c.Nodes {
		urls[i] = e.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Connect connects to the cluster (all URLs) with opts and closes the
// connection on t.Cleanup.
func (c *Cluster) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return Connect(t, c.URLs(), opts...)
}

// Stop shuts node i down (clients and routes are cut, JetStream is
// flushed). Stopping a stopped node does nothing.
func (c *Cluster) Stop(i int) {
	c.Nodes[i].Shutdown()
	c.running[i] = false
}

// Restart starts node i again with the same name, ports and store
// directory, and waits until it has rejoined: routes to every running node
// and JetStream current. A running node is stopped first.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Stop(i)
	e, err := natsserver.Start(c.cfgs[i])
	if err != nil {
		t.Fatalf("natstest: restart node %d: %v", i, err)
	}
	c.Nodes[i], c.running[i] = e, true
	c.waitReady(t)
}

// Running reports whether node i is running (not stopped).
func (c *Cluster) Running(i int) bool { return c.running[i] }

func (c *Cluster) shutdown() {
	for i, e := range c.Nodes {
		if e != nil {
			e.Shutdown()
			c.running[i] = false
		}
	}
}

func (c *Cluster) up() []*natsserver.Server {
	var up []*natsserver.Server
	for i, e := range c.Nodes {
		if c.running[i] {
			up = append(up, e)
		}
	}
	return up
}

// waitReady waits until every running node has a route to every other
// running node (NumRemotes counts remote servers; NumRoutes would count
// every pooled route connection), JetStream has a meta leader that sees
// every running node as a peer and that every running node follows, and a
// JetStream API request answers through each running node.
func (c *Cluster) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(ClusterTimeout)
	left := func() time.Duration { return max(time.Until(deadline), 0) }
	up := c.up()

	routed := func() bool {
		for _, e := range up {
			if e.Server().NumRemotes() != len(up)-1 {
				return false
			}
		}
		return true
	}
	if !waitFor(left(), routed) {
		t.Fatalf("natstest: cluster routes not formed within %v: %s", ClusterTimeout, c.describe())
	}

	// As nats-server's own cluster tests do: a meta leader that sees every
	// running node as an online JetStream peer, and every node current.
	metaReady := func() bool {
		var leader *natsserver.Server
		clustered := false
		for _, e := range up {
			s := e.Server()
			if !s.JetStreamEnabled() || !s.JetStreamIsCurrent() {
				return false
			}
			clustered = clustered || s.JetStreamIsClustered()
			if s.JetStreamIsLeader() {
				leader = e
			}
		}
		if !clustered {
			return true
		}
		return leader != nil && len(leader.Server().JetStreamClusterPeers()) >= len(up)
	}
	if !waitFor(left(), metaReady) {
		t.Fatalf("natstest: JetStream meta group not ready within %v: %s", ClusterTimeout, c.describe())
	}

	for _, e := range up {
		nc, err := nats.Connect(e.ClientURL())
		if err != nil {
			t.Fatalf("natstest: connect to %s (%s): %v", e.Name(), e.ClientURL(), err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			t.Fatalf("natstest: jetstream on %s: %v", e.Name(), err)
		}
		var lastErr error
		ok := waitFor(left(), func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			_, lastErr = js.AccountInfo(ctx)
			return lastErr == nil
		})
		nc.Close()
		if !ok {
			t.Fatalf("natstest: JetStream API not answering through %s within %v: %v; %s", e.Name(), ClusterTimeout, lastErr, c.describe())
		}
	}
}

// describe summarises the nodes for failure messages.
func (c *Cluster) describe() string {
	var b strings.Builder
	for i, e := range c.Nodes {
		if i > 0 {
			b.WriteString("; ")
		}
		if !c.running[i] {
			fmt.Fprintf(&b, "%s stopped", c.cfgs[i].ServerName)
			continue
		}
		s := e.Server()
		fmt.Fprintf(&b, "%s remotes=%d js=%t clustered=%t current=%t leader=%t",
			e.Name(), s.NumRemotes(), s.JetStreamEnabled(), s.JetStreamIsClustered(), s.JetStreamIsCurrent(), s.JetStreamIsLeader())
	}
	return b.String()
}
