package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/e2e/faultproxy"
	"github.com/herald-push/herald/internal/natstest"
)

// Binaries, built once per test run.
var bins struct {
	once sync.Once
	dir  string
	edge string
	// plainEdge is cmd/edge without the race detector, which slows an edge
	// so much that a connect flood would measure the detector; the same
	// file as edge when the tests run without it.
	plainEdge string
	nats      string
	flood     string // the connect flood's client (e2e/flood), never under the race detector
	err       error
}

// buildTimeout bounds the build of the binaries (a cold build cache
// compiles nats-server from source).
const buildTimeout = 4 * time.Minute

// binaries builds cmd/edge, nats-server and the flood client into a
// temporary directory the first time it is called; TestMain removes it.
func binaries(t testing.TB) (edge, natsServer string) {
	t.Helper()
	bins.once.Do(func() {
		start := time.Now()
		bins.dir, bins.err = os.MkdirTemp("", "herald-e2e-bin-")
		if bins.err != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			bins.err = fmt.Errorf("the go command is needed to build the binaries: %w", err)
			return
		}
		root, err := filepath.Abs("..")
		if err != nil {
			bins.err = err
			return
		}
		bins.edge = filepath.Join(bins.dir, "edge")
		bins.nats = filepath.Join(bins.dir, "nats-server")
		bins.flood = filepath.Join(bins.dir, "flood")
		bins.plainEdge = bins.edge
		edgeArgs := []string{"build", "-o", bins.edge}
		if raceEnabled {
			edgeArgs = append(edgeArgs, "-race")
		}
		edgeArgs = append(edgeArgs, "./cmd/edge")
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		var wg sync.WaitGroup
		builds := [][]string{edgeArgs, {"build", "-o", bins.nats, "github.com/nats-io/nats-server/v2"}, {"build", "-o", bins.flood, "./e2e/flood"}}
		if raceEnabled {
			bins.plainEdge = filepath.Join(bins.dir, "edge-plain")
			builds = append(builds, []string{"build", "-o", bins.plainEdge, "./cmd/edge"})
		}
		errs := make([]error, len(builds))
		for i, args := range builds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.CommandContext(ctx, goBin, args...)
				cmd.Dir = root
				if out, err := cmd.CombinedOutput(); err != nil {
					errs[i] = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}()
		}
		wg.Wait()
		bins.err = errors.Join(errs...)
		if bins.err == nil {
			fmt.Fprintf(os.Stderr, "e2e: built edge (race=%v), nats-server and flood in %v\n", raceEnabled, time.Since(start).Round(time.Millisecond))
		}
	})
	if bins.err != nil {
		t.Fatalf("build binaries: %v", bins.err)
	}
	return bins.edge, bins.nats
}

// freePorts returns n ports that were free a moment ago on 127.0.0.1.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// natsNode is one nats-server process of the cluster.
type natsNode struct {
	name        string
	port        int // client port
	clusterPort int
	monPort     int
	conf        string
	proc        *proc
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// routePool is the route pool size of every node. A complete mesh has, on
// each node, routePool+1 route connections per peer: the pool and one
// pinned to the system account.
const routePool = 3

// routesComplete reports whether the node has every route connection to
// every peer. /healthz turns ok once JetStream has a meta leader, which can
// be before the route pool is complete; until it is, interest (an edge's
// subscription) may not reach the stream leader and live events are not
// forwarded.
func (n *natsNode) routesComplete(peers []string) error {
	resp, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/routez", n.monPort))
	if err != nil {
		return err
	}
	var rz struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(resp.body), &rz); err != nil {
		return fmt.Errorf("%s /routez: %v", n.name, err)
	}
	count := map[string]int{}
	for _, r := range rz.Routes {
		count[r.RemoteName]++
	}
	for _, p := range peers {
		if p != n.name && count[p] != routePool+1 {
			return fmt.Errorf("%s has %d route connections to %s, want %d", n.name, count[p], p, routePool+1)
		}
	}
	return nil
}

// ready reports whether every running node is healthy with a complete
// route mesh.
func (c *cluster) ready() error {
	var names []string
	for _, n := range c.nodes {
		names = append(names, n.name)
	}
	for _, n := range c.nodes {
		if n.proc.exited() {
			return fmt.Errorf("%s exited: %s", n.name, n.proc.tail(20))
		}
		if err := n.healthy(); err != nil {
			return err
		}
		if err := n.routesComplete(names); err != nil {
			return err
		}
	}
	return nil
}

// healthy reports whether the node's /healthz says it is serving,
// JetStream included.
func (n *natsNode) healthy() error {
	resp, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.monPort))
	if err != nil {
		return err
	}
	if resp.code != http.StatusOK {
		return fmt.Errorf("%s /healthz: %d %s", n.name, resp.code, strings.TrimSpace(resp.body))
	}
	return nil
}

// clusterOptions configures a test cluster.
type clusterOptions struct {
	// SyncAlways sets JetStream's sync_interval to always (fsync before
	// every acknowledgement). Default: the server's default (2 minutes).
	SyncAlways bool
}

// cluster is a running NATS cluster plus the edges started on it.
type cluster struct {
	t     *testing.T
	dir   string // logs, configs and stores
	token string // the edges' publish token
	nodes []*natsNode
	edges []*edgeProc
	opts  clusterOptions
}

const clusterName = "herald-e2e"

// startCluster starts 3 nats-server nodes with JetStream and full-mesh
// routes on free loopback ports and waits until every node is healthy.
func startCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	_, natsBin := binaries(t)
	c := &cluster{t: t, dir: logDir(t), token: "e2e-publish-token", opts: opts}
	ports := freePorts(t, 9)
	for i := range 3 {
		c.nodes = append(c.nodes, &natsNode{
			name:        fmt.Sprintf("n%d", i),
			port:        ports[3*i],
			clusterPort: ports[3*i+1],
			monPort:     ports[3*i+2],
		})
	}
	for _, n := range c.nodes {
		n.conf = filepath.Join(c.dir, n.name+".conf")
		if err := os.WriteFile(n.conf, []byte(c.config(n)), 0o644); err != nil {
			t.Fatal(err)
		}
		n.proc = startProc(t, c.dir, n.name, natsBin, "-c", n.conf)
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, c.ready)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	return c
}

// config is a node's nats-server configuration.
func (c *cluster) config(n *natsNode) string {
	var routes []string
	for _, o := range c.nodes {
		if o != n {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.clusterPort))
		}
	}
	sync := ""
	if c.opts.SyncAlways {
		sync = "\n  sync_interval: always"
	}
	return fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 1GB%s
}
cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [%s]
  # Stated, not defaulted, so that the suite knows how many route
  # connections a complete mesh has (see routesComplete).
  pool_size: %d
  # Clients know only the URLs they were given: edges reach NATS through
  # their fault proxies and must not bypass them.
  no_advertise: true
}
`, n.name, n.port, n.monPort, filepath.Join(c.dir, n.name+"-store"), sync, clusterName, n.clusterPort, strings.Join(routes, ", "), routePool)
}

// natsURLs lists every node's client URL (publishers connect directly).
func (c *cluster) natsURLs() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, n.url())
	}
	return strings.Join(u, ",")
}

// killNode kills node i with SIGKILL.
func (c *cluster) killNode(i int) {
	c.t.Helper()
	if err := c.nodes[i].proc.kill(); err != nil {
		c.t.Fatal(err)
	}
}

// restartNodes starts nodes again with their configs and stores (all of
// them first: a node alone cannot recover without a quorum) and waits
// until every one is healthy (JetStream recovered and current).
func (c *cluster) restartNodes(idx ...int) {
	c.t.Helper()
	_, natsBin := binaries(c.t)
	for _, i := range idx {
		n := c.nodes[i]
		n.proc = startProc(c.t, c.dir, n.name, natsBin, "-c", n.conf)
	}
	natstest.CheckFor(c.t, 60*time.Second, 50*time.Millisecond, c.ready)
}

// dial opens a NATS connection to every node directly, reconnecting
// quickly and forever, with extra options after the suite's.
func (c *cluster) dial(name string, extra ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(c.natsURLs(), append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond), nats.RetryOnFailedConnect(true),
		// Disconnections are the point of the suite; the publishers record
		// their effect, so the library need not print them.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, extra...)...)
}

// connect is dial, closed when the test ends.
func (c *cluster) connect(name string) *nats.Conn {
	c.t.Helper()
	nc, err := c.dial(name)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// streamLeader returns the index of the node leading the history stream.
func (c *cluster) streamLeader(js jetstream.JetStream, stream string) int {
	c.t.Helper()
	var leader string
	natstest.CheckFor(c.t, 10*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info := s.CachedInfo()
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("no stream leader")
		}
		leader = info.Cluster.Leader
		return nil
	})
	for i, n := range c.nodes {
		if n.name == leader {
			return i
		}
	}
	c.t.Fatalf("stream leader %q is not a node of the cluster", leader)
	return -1
}

// dumpLogs logs the tail of every process's log.
func (c *cluster) dumpLogs() {
	for _, n := range c.nodes {
		c.t.Logf("---- %s (%s) ----\n%s", n.name, n.proc.log, n.proc.tail(10))
	}
	for _, e := range c.edges {
		c.t.Logf("---- %s (%s) ----\n%s", e.name, e.proc.log, e.proc.tail(40))
	}
}

// edgeProc is one cmd/edge process and its fault proxies, one per NATS
// node.
type edgeProc struct {
	name    string
	url     string // http://127.0.0.1:port; the same across restarts
	bin     string
	args    []string
	proc    *proc
	proxies []*faultproxy.Proxy
}

// startEdge starts an edge connected to every NATS node through fresh
// fault proxies, with -history-replicas 3 and the given extra flags, and
// waits until it is ready (NATS connected, history stream open).
func (c *cluster) startEdge(extra ...string) *edgeProc {
	c.t.Helper()
	edgeBin, _ := binaries(c.t)
	return c.startEdgeBinary(edgeBin, extra...)
}

// startEdgeBinary is startEdge with the given cmd/edge binary.
func (c *cluster) startEdgeBinary(bin string, extra ...string) *edgeProc {
	c.t.Helper()
	e := &edgeProc{name: fmt.Sprintf("edge%d", len(c.edges)), bin: bin}
	var urls []string
	for _, n := range c.nodes {
		p, err := faultproxy.New("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", n.port))
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { _ = p.Close() })
		e.proxies = append(e.proxies, p)
		urls = append(urls, "nats://"+p.Addr())
	}
	e.args = append([]string{
		"-nats", strings.Join(urls, ","),
		"-nats-name", e.name,
		"-listen", "127.0.0.1:0",
		"-history-replicas", "3",
		"-publish-token", c.token,
		"-log-format", "json",
		"-shutdown-grace", "3s",
		"-drain-window", "1s",
	}, extra...)
	c.edges = append(c.edges, e)
	c.launch(e)
	return e
}

// restartEdge starts a stopped edge again with the same flags, on the
// same address (as behind a stable service address), and waits until it
// is ready.
func (c *cluster) restartEdge(e *edgeProc) {
	c.t.Helper()
	if !e.proc.exited() {
		c.t.Fatalf("%s is still running", e.name)
	}
	for i, a := range e.args {
		if a == "-listen" && i+1 < len(e.args) {
			e.args[i+1] = strings.TrimPrefix(e.url, "http://")
		}
	}
	c.launch(e)
}

// launch starts e's process and waits until it serves and is ready.
func (c *cluster) launch(e *edgeProc) {
	c.t.Helper()
	e.proc = startProc(c.t, c.dir, e.name, e.bin, e.args...)
	natstest.CheckFor(c.t, 30*time.Second, 50*time.Millisecond, func() error {
		if e.proc.exited() {
			return fmt.Errorf("%s exited: %s", e.name, e.proc.tail(20))
		}
		if e.url == "" {
			u, err := servingURL(e.proc.log)
			if err != nil {
				return err
			}
			e.url = u
		}
		resp, err := httpGet(e.url + "/readyz")
		if err != nil {
			return err
		}
		if resp.code != http.StatusOK {
			return fmt.Errorf("%s /readyz: %d %s", e.name, resp.code, strings.TrimSpace(resp.body))
		}
		return nil
	})
}

// servingURL reads the edge's "serving" log line (JSON) for its URL.
func servingURL(logPath string) (string, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg string `json:"msg"`
			URL string `json:"url"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "serving" && l.URL != "" {
			return l.URL, nil
		}
	}
	return "", errors.New("edge not serving yet")
}

// kill kills the edge with SIGKILL.
func (e *edgeProc) kill(t testing.TB) {
	t.Helper()
	if err := e.proc.kill(); err != nil {
		t.Fatal(err)
	}
}

// setLink applies f to every proxy between this edge and NATS.
func (e *edgeProc) setLink(f func(*faultproxy.Proxy)) {
	for _, p := range e.proxies {
		f(p)
	}
}

// metric sums the samples of a Prometheus counter or gauge whose labels
// include every label=value pair given (as `label="value"`).
func (e *edgeProc) metric(name string, labels ...string) (float64, error) {
	resp, err := httpGet(e.url + "/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(resp.body, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer metric name
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum, nil
}

// dataRaces returns a line of the edge's log reporting a data race or a
// panic, if any.
func (e *edgeProc) dataRaces() (string, bool) {
	return e.proc.logHas("WARNING: DATA RACE", "panic:", "fatal error:")
}

type httpResp struct {
	code int
	body string
}

// probeClient is for short requests to the processes (health, metrics).
var probeClient = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func httpGet(url string) (httpResp, error) {
	resp, err := probeClient.Get(url)
	if err != nil {
		return httpResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return httpResp{code: resp.StatusCode, body: string(b)}, err
}
