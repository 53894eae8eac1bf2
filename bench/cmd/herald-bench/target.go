package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// target is what the subscribers and the publisher talk to.
type target struct {
	label     string
	endpoint  load.Endpoint
	pubName   string // the name publishers address (WebSocket names are paths)
	newPub    func() (load.Publisher, error)
	servers   []*load.Server // started here; stopped at the end
	edges     []*load.Server // the servers whose usage counts as the edge's
	pids      []int          // attached processes whose usage counts as the edge's
	nats      *load.Server   // a separate NATS host (multi-edge)
	pprofURLs []string
}

// usage sums the edge processes' RSS and CPU; ok is false when there is
// no process to read (a remote server without -pid).
func (t *target) usage() (load.Usage, bool) {
	var total load.Usage
	n := 0
	read := func(u load.Usage, err error) {
		if err == nil {
			total.RSS += u.RSS
			total.CPU += u.CPU
			total.FDs += u.FDs
			total.Threads += u.Threads
			n++
		}
	}
	for _, s := range t.edges {
		read(s.Usage())
	}
	for _, p := range t.pids {
		read(load.ReadUsage(p))
	}
	return total, n > 0
}

// openConnections sums herald_edge_connections over the edge processes.
func (t *target) openConnections() (float64, error) {
	var sum float64
	for _, s := range t.edges {
		resp, err := http.Get(s.URL + "/metrics")
		if err != nil {
			return 0, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(body), "\n") {
			if rest, ok := strings.CutPrefix(line, "herald_edge_connections{"); ok {
				var v float64
				if _, err := fmt.Sscan(rest[strings.IndexByte(rest, '}')+1:], &v); err == nil {
					sum += v
				}
			}
		}
	}
	return sum, nil
}

// crashed reports an edge process that ended on its own.
func (t *target) crashed() error {
	for _, s := range t.servers {
		if s.Exited() {
			return fmt.Errorf("server process %d exited during the run:\n%s", s.PID, s.Tail())
		}
	}
	return nil
}

func (t *target) stop() error {
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range t.servers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := s.Stop(ctx); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

// binaries builds cmd/embedded and cmd/edge once per invocation unless
// given.
func (b *bench) binary(ctx context.Context, pkg string) (string, error) {
	b.buildMu.Lock()
	defer b.buildMu.Unlock()
	switch {
	case pkg == "./cmd/embedded" && b.cfg.Binary != "":
		return b.cfg.Binary, nil
	case pkg == "./cmd/edge" && b.cfg.EdgeBinary != "":
		return b.cfg.EdgeBinary, nil
	}
	if p, ok := b.built[pkg]; ok {
		return p, nil
	}
	root, err := load.FindModuleRoot(".")
	if err != nil {
		return "", err
	}
	out := filepath.Join(b.tmp, "herald-"+filepath.Base(pkg))
	b.logf("building %s", pkg)
	if err := load.Build(ctx, root, pkg, out); err != nil {
		return "", err
	}
	if b.built == nil {
		b.built = map[string]string{}
	}
	b.built[pkg] = out
	return out, nil
}

// serverLog returns where server logs go.
func (b *bench) serverLog() io.Writer {
	if b.logFile != nil {
		return b.logFile
	}
	return nil
}

// startHerald starts one Herald process: cmd/embedded, or cmd/edge on
// natsURL. With -pprof the process is this executable serving Herald with
// net/http/pprof.
func (b *bench) startHerald(ctx context.Context, edge bool, natsURL, cpus string, env []string, extra ...string) (*load.Server, error) {
	pkg := "./cmd/embedded"
	if edge {
		pkg = "./cmd/edge"
	}
	sc := load.ServerConfig{Edge: edge, NATS: natsURL, CPUs: cpus, Log: b.serverLog(), Env: env,
		Args: append(append([]string(nil), b.cfg.ServerArgs...), extra...)}
	if b.cfg.PprofDir != "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		mode := "embedded"
		if edge {
			mode = "edge"
		}
		sc.Binary = exe
		sc.Env = append(sc.Env, serveEnv+"="+mode, pprofEnv+"=127.0.0.1:0")
	} else {
		bin, err := b.binary(ctx, pkg)
		if err != nil {
			return nil, err
		}
		sc.Binary = bin
	}
	s, err := load.StartServer(ctx, sc)
	if err != nil {
		return nil, err
	}
	b.logf("started %s pid %d at %s (NATS %s)", strings.TrimPrefix(pkg, "./"), s.PID, s.URL, s.NATS)
	return s, nil
}

// heraldEndpoint is the subscribe endpoint of a Herald base URL.
func (b *bench) heraldEndpoint(base string) (load.Endpoint, string) {
	if b.cfg.Transport == "ws" {
		u := "ws" + strings.TrimPrefix(base, "http") + "/ws/" + url.PathEscape(b.cfg.Name) + "?clientId={client}"
		return load.Endpoint{URL: u, Transport: load.WebSocket, Resume: b.cfg.ResumeVia, Header: b.cfg.SubHeader}, "/" + b.cfg.Name
	}
	u := base + "/sse/" + url.PathEscape(b.cfg.Name) + "?clientId={client}"
	return load.Endpoint{URL: u, OpenEvent: "pode.open", Resume: b.cfg.ResumeVia, Header: b.cfg.SubHeader}, b.cfg.Name
}

// heraldPublisher publishes to a Herald cluster through NATS or POST /publish.
func (b *bench) heraldPublisher(natsURL, base, token string) func() (load.Publisher, error) {
	if b.cfg.Publish == "nats" && natsURL != "" {
		return func() (load.Publisher, error) { return load.NewNATSPublisher(natsURL, "") }
	}
	return func() (load.Publisher, error) {
		h := http.Header{}
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		return load.NewHTTPPublisher(base+"/publish", load.HeraldPublishTemplate, h), nil
	}
}

// newTarget starts Herald (cmd/embedded), or attaches to -url, or drives
// the generic -sub-url server.
func (b *bench) newTarget(ctx context.Context) (*target, error) {
	c := b.cfg
	switch {
	case c.generic:
		t := &target{label: "generic " + c.SubURL, pubName: c.Name}
		t.endpoint = load.Endpoint{URL: c.SubURL, OpenEvent: c.OpenEvent, Header: c.SubHeader, Resume: c.ResumeVia}
		if strings.HasPrefix(c.SubURL, "ws") {
			t.endpoint.Transport = load.WebSocket
		}
		if c.PubURL != "" {
			t.newPub = func() (load.Publisher, error) {
				return load.NewHTTPPublisher(c.PubURL, c.PubBody, c.PubHeader.Clone()), nil
			}
		}
		if c.PID > 0 {
			t.pids = []int{c.PID}
		}
		return t, nil
	case c.URL != "":
		t := &target{label: "herald at " + c.URL}
		t.endpoint, t.pubName = b.heraldEndpoint(strings.TrimSuffix(c.URL, "/"))
		t.newPub = b.heraldPublisher(c.NATS, strings.TrimSuffix(c.URL, "/"), c.Token)
		if c.PID > 0 {
			t.pids = []int{c.PID}
		}
		return t, nil
	}
	s, err := b.startHerald(ctx, false, "", "", nil)
	if err != nil {
		return nil, err
	}
	t := &target{label: "herald cmd/embedded (edge + NATS in one process)", servers: []*load.Server{s}, edges: []*load.Server{s}}
	t.endpoint, t.pubName = b.heraldEndpoint(s.URL)
	t.newPub = b.heraldPublisher(s.NATS, s.URL, s.Token)
	if s.PprofURL != "" {
		t.pprofURLs = []string{s.PprofURL}
	}
	return t, nil
}
