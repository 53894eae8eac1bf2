package scale

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// BuildNATS compiles nats-server at the version the Herald module requires
// into dir and returns its path.
func BuildNATS(ctx context.Context, dir string) (string, error) {
	root, err := load.FindModuleRoot(".")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "nats-server")
	if err := load.Build(ctx, root, "github.com/nats-io/nats-server/v2", out); err != nil {
		return "", err
	}
	return out, nil
}

// routePool is every node's route pool size, stated so that readiness
// knows how many route connections a complete mesh has (the pool plus one
// pinned to the system account, per peer).
const routePool = 3

// ClusterConfig starts a cluster.
type ClusterConfig struct {
	// Binary is a built nats-server.
	Binary string
	// Nodes is the number of nodes. Default 3.
	Nodes int
	// CountRoutes puts a counting proxy in front of every node's route
	// port, so that route traffic is measured on the wire.
	CountRoutes bool
	// Dir holds configurations, logs and JetStream stores.
	Dir string
	// Env is added to every node's environment (KEY=VALUE).
	Env []string
}

// Cluster is a running full-mesh nats-server cluster on loopback.
type Cluster struct {
	Nodes   []*Node
	proxies []*routeProxy // one per node when counting routes
	dir     string
}

// Node is one nats-server process.
type Node struct {
	Name     string
	Port     int // client port
	Mon      int // monitoring port
	Prof     int // profiling port (Go's net/http/pprof)
	route    int // cluster port
	cmd      *exec.Cmd
	exited   chan struct{}
	log      string
	bin      string
	conf     string
	env      []string
	monitorC *monitorClient
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// PID is the node's process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// StartCluster starts the nodes, with routes through counting proxies when
// asked, and waits until every node is healthy with a complete route mesh.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{dir: cfg.Dir}
	ports, err := freePorts(4 * cfg.Nodes)
	if err != nil {
		return nil, err
	}
	for i := range cfg.Nodes {
		c.Nodes = append(c.Nodes, &Node{
			Name: fmt.Sprintf("n%d", i), Port: ports[4*i], Mon: ports[4*i+1], Prof: ports[4*i+2], route: ports[4*i+3],
		})
	}
	// The address other nodes dial to reach node i: its route port, or a
	// proxy in front of it that counts what crosses.
	dialAddr := make([]int, cfg.Nodes)
	for i, n := range c.Nodes {
		dialAddr[i] = n.route
		if cfg.CountRoutes {
			p, err := startRouteProxy(fmt.Sprintf("127.0.0.1:%d", n.route))
			if err != nil {
				c.Stop()
				return nil, err
			}
			c.proxies = append(c.proxies, p)
			dialAddr[i] = p.port()
		}
	}
	for i, n := range c.Nodes {
		conf := filepath.Join(cfg.Dir, n.Name+".conf")
		if err := os.WriteFile(conf, []byte(c.config(i, dialAddr)), 0o644); err != nil {
			c.Stop()
			return nil, err
		}
		n.log, n.bin, n.conf, n.env = filepath.Join(cfg.Dir, n.Name+".log"), cfg.Binary, conf, cfg.Env
		if err := n.start(); err != nil {
			c.Stop()
			return nil, err
		}
		n.monitorC = newMonitorClient(n.Mon, n.Prof)
	}
	if err := poll(ctx, 30*time.Second, 50*time.Millisecond, c.ready); err != nil {
		c.Stop()
		return nil, fmt.Errorf("scale: cluster not ready: %w", err)
	}
	return c, nil
}

// config is node i's configuration; peers are reached at dialAddr.
func (c *Cluster) config(i int, dialAddr []int) string {
	n := c.Nodes[i]
	var routes []string
	for j := range c.Nodes {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", dialAddr[j]))
		}
	}
	return fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
prof_port: %d
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 8GB
}
cluster {
  name: herald-scale
  listen: 127.0.0.1:%d
  # Peers learn this address by gossip: through the proxy when counting.
  advertise: "127.0.0.1:%d"
  routes: [%s]
  pool_size: %d
  # The default ("accept") never starts compression between two servers
  # of this version; stated so that the proxy always reads plain protocol.
  compression: off
}
`, n.Name, n.Port, n.Mon, n.Prof, filepath.Join(c.dir, n.Name+"-store"), n.route, dialAddr[i], strings.Join(routes, ", "), routePool)
}

func (n *Node) start() error {
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close() // the child holds its own descriptor
	cmd := exec.Command(n.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), n.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("scale: start %s: %w", n.Name, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(n.exited)
	}()
	return nil
}

// Kill kills the node (SIGKILL) and waits for its exit.
func (n *Node) Kill() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// Restart starts a killed node again with its configuration and store.
func (n *Node) Restart() error { return n.start() }

func (n *Node) hasExited() bool {
	select {
	case <-n.exited:
		return true
	default:
		return false
	}
}

// tail returns the end of the node's log.
func (n *Node) tail() string {
	b, _ := os.ReadFile(n.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// ready reports whether every node is healthy and has its whole route mesh.
func (c *Cluster) ready() error {
	for _, n := range c.Nodes {
		if n.hasExited() {
			return fmt.Errorf("%s exited: %s", n.Name, n.tail())
		}
		if err := n.monitorC.healthy(); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		rz, err := n.Routez()
		if err != nil {
			return err
		}
		count := map[string]int{}
		for _, r := range rz.Routes {
			count[r.RemoteName]++
		}
		for _, p := range c.Nodes {
			if p != n && count[p.Name] != routePool+1 {
				return fmt.Errorf("%s has %d route connections to %s, want %d", n.Name, count[p.Name], p.Name, routePool+1)
			}
		}
	}
	return nil
}

// URLs lists every node's client URL.
func (c *Cluster) URLs() []string {
	var u []string
	for _, n := range c.Nodes {
		u = append(u, n.URL())
	}
	return u
}

// RouteTraffic returns what crossed every route proxy so far (zero when
// the cluster was started without them).
func (c *Cluster) RouteTraffic() RouteTraffic {
	var t RouteTraffic
	for _, p := range c.proxies {
		t = t.add(p.traffic())
	}
	return t
}

// Stop kills every node and proxy and waits for them. The directory is
// left for the caller.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
		}
	}
	for _, n := range c.Nodes {
		if n.monitorC != nil {
			n.monitorC.close()
		}
	}
	for _, p := range c.proxies {
		p.close()
	}
}

// freePorts returns n ports that were free a moment ago on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// poll calls f every interval until it returns nil, ctx ends or timeout
// passes (then f's last error).
func poll(ctx context.Context, timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}
