package charttest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/herald-push/herald/internal/sseclient"
)

// natsRootfs builds nats-server (the module version this test module
// requires) into a root filesystem laid out like the nats:<version>-alpine
// image's (the binary on the image's PATH, and busybox with its applets in
// /bin, whose sh the chart's preStop hook runs), and returns the image and the version.
func natsRootfs(t *testing.T) (ctrImage, string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/nats-io/nats-server/v2").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(out))
	dir, err := worldTempDir("herald-nats-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"usr/local/bin", "bin", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "usr/local/bin/nats-server"), "github.com/nats-io/nats-server/v2")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, b)
	}
	// Alpine's /bin/sh is busybox; Debian's busybox-static is the same
	// program, statically linked, so it runs in a root without libraries.
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox (Debian's busybox-static, which .ci/run installs): %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	applets, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(applets)) { // sh, sleep, cat, kill, …: as alpine links them
		if a == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	return ctrImage{rootfs: dir, env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}, version
}

// TestKubeletRunsRenderedWorkload runs the rendered StatefulSet and
// Deployment, connects SSE and WebSocket clients through the rendered
// Service, publishes, and deletes one edge pod as Kubernetes does on a
// rolling update: its clients are told to reconnect, spread over the drain
// window, resume on the other edge without losing an event, and the edge
// exits within its grace period.
func TestKubeletRunsRenderedWorkload(t *testing.T) {
	needKubelet(t)
	natsImg, natsVersion := natsRootfs(t)
	edgeImg := needImage(t)

	const natsPassword = "tier3-nats-password-5e1f"
	vals := values(t, nil, "nats.auth.type=user", "secrets.natsUser=herald", "secrets.natsPassword="+natsPassword)
	r := mustRender(t, vals, renderOpts{})
	sts := one[*appsv1.StatefulSet](t, r, natsName)
	dep := one[*appsv1.Deployment](t, r, edgeName)

	// The bundled image is the NATS version this test runs.
	img := sts.Spec.Template.Spec.Containers[0].Image
	if want := "nats:" + strings.TrimPrefix(natsVersion, "v") + "-alpine"; img != want {
		t.Errorf("the chart runs %s, the tests run nats-server %s: state and test the same version", img, natsVersion)
	}
	if got := dep.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(got, ":"+strings.TrimPrefix(string(edgeImg.config.Config.Labels["org.opencontainers.image.version"]), "v")) {
		t.Errorf("edge image %s is not the built version", got)
	}

	configMaps := map[string]map[string]string{}
	for _, cm := range all[*corev1.ConfigMap](r) {
		configMaps[cm.Name] = cm.Data
	}
	secrets := map[string]map[string][]byte{}
	for _, s := range all[*corev1.Secret](r) {
		secrets[s.Name] = s.Data
	}
	token, _, _ := strings.Cut(string(secrets[edgeName]["publish-token"]), ",")

	c := newCluster(t, namespace, "cluster.local")
	var edgeSvc *service
	for _, svc := range all[*corev1.Service](r) {
		s := c.addService(svc)
		if svc.Name == edgeName {
			edgeSvc = s
		}
	}

	// Create every pod, then start them: a StatefulSet with Parallel pod
	// management starts its pods together.
	var natsPods, edgePods []*pod
	for i := range int(*sts.Spec.Replicas) {
		name := fmt.Sprintf("%s-%d", sts.Name, i)
		natsPods = append(natsPods, c.newPod(podSpec{name: name, hostname: name, subdomain: sts.Spec.ServiceName,
			template: &sts.Spec.Template, img: natsImg, configMaps: configMaps, secrets: secrets}))
	}
	edgeImage := ctrImage{rootfs: edgeImg.rootfs, entrypoint: edgeImg.config.Config.Entrypoint, env: edgeImg.config.Config.Env}
	for i := range int(*dep.Spec.Replicas) {
		name := fmt.Sprintf("%s-7f9c6d5b8-%c%c%c%c%c", dep.Name, 'a'+i, 'b'+i, 'c'+i, 'd'+i, 'e'+i)
		edgePods = append(edgePods, c.newPod(podSpec{name: name, template: &dep.Spec.Template, img: edgeImage,
			configMaps: configMaps, secrets: secrets}))
	}
	for _, p := range append(slices.Clone(natsPods), edgePods...) {
		p.start(p.ps)
	}
	dumpLogs := func() {
		for _, p := range append(slices.Clone(natsPods), edgePods...) {
			t.Log(p.tail(25))
		}
	}
	defer func() {
		if t.Failed() {
			dumpLogs()
		}
	}()
	for _, p := range append(slices.Clone(natsPods), edgePods...) {
		if err := p.waitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

	base := "http://" + net.JoinHostPort(edgeSvc.ip, fmt.Sprint(edgeSvc.svc.Spec.Ports[0].Port))
	publish := func(n int) {
		t.Helper()
		if err := tryPublish(c, base, token, n); err != nil {
			t.Fatal(err)
		}
	}

	// Clients through the Service: SSE (as EventSource) and WebSocket
	// (herald.v1, resuming with lastEventId), all reconnecting on close,
	// all of the name "/events" (ws://…/ws/events is that name).
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var clients []*client
	for i := range 12 {
		cl := &client{kind: "sse", c: c, base: base}
		if i%3 == 2 {
			cl.kind = "ws"
		}
		clients = append(clients, cl)
		wg.Add(1)
		go func() { defer wg.Done(); cl.run(ctx) }()
	}
	if err := poll(30*time.Second, func() error {
		for i, cl := range clients {
			if !cl.opened() {
				return fmt.Errorf("client %d (%s) not connected", i, cl.kind)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	publish(1)
	waitAll(t, clients, 1)

	// The victim: the edge with the most clients.
	perPod := map[string][]*client{}
	for _, cl := range clients {
		perPod[cl.edge()] = append(perPod[cl.edge()], cl)
	}
	victim := edgePods[0]
	for _, p := range edgePods {
		if len(perPod[p.name]) > len(perPod[victim.name]) {
			victim = p
		}
	}
	onVictim := perPod[victim.name]
	if len(onVictim) < 3 {
		t.Fatalf("only %d clients on the busiest edge: %v", len(onVictim), perPod)
	}

	// Delete it. During preStop it still serves (ev-2); after SIGTERM its
	// clients reconnect elsewhere while events keep coming (ev-3, ev-4).
	var sigterm time.Time
	published := make(chan error, 1)
	go func() {
		time.Sleep(time.Second)
		published <- tryPublish(c, base, token, 2)
	}()
	took, killed := victim.terminate(func(string) { sigterm = time.Now() })
	if err := <-published; err != nil {
		t.Fatalf("during preStop: %v", err)
	}
	grace := time.Duration(*dep.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if killed {
		t.Errorf("edge %s did not exit within its grace period %v (SIGKILL)", victim.name, grace)
	}
	t.Logf("edge %s: deleted → exited in %v (grace %v, SIGTERM after %v); exit %v", victim.name, took.Round(time.Millisecond), grace, sigterm.Sub(time.Now().Add(-took)).Round(time.Millisecond), victim.exitErr)
	if victim.exitErr != nil {
		t.Errorf("edge exit status after SIGTERM: %v", victim.exitErr)
	}
	publish(3)
	publish(4)
	waitAll(t, clients, 4)

	var closes []time.Time
	for _, cl := range clients {
		got := cl.events()
		want := []string{"ev-1", "ev-2", "ev-3", "ev-4"}
		if !slices.Equal(got, want) {
			t.Errorf("%s client on %s received %v, want %v (each once, in order)", cl.kind, cl.firstEdge(), got, want)
		}
		cls := cl.closeTimes()
		if slices.Contains(onVictim, cl) {
			if len(cls) != 1 {
				t.Errorf("%s client on the deleted edge was told to reconnect %d times", cl.kind, len(cls))
				continue
			}
			if cls[0].Before(sigterm) {
				t.Errorf("%s client closed %v before SIGTERM (during preStop it must still be served)", cl.kind, sigterm.Sub(cls[0]))
			}
			if e := cl.edge(); e == victim.name || e == "" {
				t.Errorf("%s client resumed on %q", cl.kind, e)
			}
			closes = append(closes, cls...)
		} else if len(cls) != 0 {
			t.Errorf("%s client on the remaining edge was closed", cl.kind)
		}
	}
	if len(closes) > 1 {
		first, last := slices.MinFunc(closes, time.Time.Compare), slices.MaxFunc(closes, time.Time.Compare)
		t.Logf("%d clients told to reconnect between %v and %v after SIGTERM", len(closes), first.Sub(sigterm).Round(time.Millisecond), last.Sub(sigterm).Round(time.Millisecond))
		if last.Sub(first) < 500*time.Millisecond {
			t.Errorf("all %d clients were told to reconnect within %v: the drain is not spread", len(closes), last.Sub(first))
		}
	}

	// Delete a NATS server as a StatefulSet rolling update does: preStop
	// puts it in lame duck mode, SIGTERM waits for that to end. The
	// history stream (R3) keeps its quorum, the remaining edge reconnects
	// through the Service and every client still gets what follows.
	natsVictim := natsPods[0]
	natsGrace := time.Duration(*sts.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	took, killed = natsVictim.terminate(nil)
	t.Logf("NATS %s: deleted → exited in %v (grace %v); exit %v", natsVictim.name, took.Round(time.Millisecond), natsGrace, natsVictim.exitErr)
	if killed {
		t.Errorf("NATS %s did not leave lame duck mode within its grace period %v", natsVictim.name, natsGrace)
	}
	if !strings.Contains(natsVictim.logs(), "Entering lame duck mode") {
		t.Errorf("NATS %s never entered lame duck mode: the preStop hook did not reach it", natsVictim.name)
	}
	survivor := edgePods[0]
	if survivor == victim {
		survivor = edgePods[1]
	}
	if err := survivor.waitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Retry while the answer says "not stored" (503, or no connection); a
	// 504 means "maybe stored" (README, Publishing), so a retry after one
	// may deliver ev-5 twice, and only then is a duplicate allowed.
	maybeTwice := false
	if err := poll(30*time.Second, func() error {
		err := tryPublish(c, base, token, 5)
		if err != nil && strings.Contains(err.Error(), "504") {
			maybeTwice = true
		}
		return err
	}); err != nil {
		t.Fatalf("publish with one NATS server gone: %v", err)
	}
	waitAll(t, clients, 5)
	time.Sleep(time.Second) // a duplicate would arrive by now
	for _, cl := range clients {
		got := cl.events()
		if maybeTwice && len(got) == 6 && got[5] == "ev-5" {
			got = got[:5]
		}
		if !slices.Equal(got, []string{"ev-1", "ev-2", "ev-3", "ev-4", "ev-5"}) {
			t.Errorf("%s client received %v after the NATS server left", cl.kind, got)
		}
	}

	// Nothing secret in any log.
	for _, p := range append(slices.Clone(natsPods), edgePods...) {
		for _, sec := range []string{token, natsPassword} {
			if strings.Contains(p.logs(), sec) {
				t.Errorf("pod %s logs a secret", p.name)
			}
		}
	}
}

// tryPublish sends ev-n to the name /events through the edge Service.
func tryPublish(c *cluster, base, token string, n int) error {
	body := fmt.Sprintf(`{"name":"/events","event":"tick","data":"ev-%d"}`, n)
	req, _ := http.NewRequest("POST", base+"/publish", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.httpClient(10*time.Second, nil).Do(req)
	if err != nil {
		return fmt.Errorf("publish ev-%d: %w", n, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("publish ev-%d: %s", n, resp.Status)
	}
	return nil
}

// waitAll waits until every client has received ev-1..ev-n.
func waitAll(t *testing.T, clients []*client, n int) {
	t.Helper()
	if err := poll(60*time.Second, func() error {
		for i, cl := range clients {
			if got := cl.events(); len(got) < n {
				return fmt.Errorf("client %d (%s) has %v", i, cl.kind, got)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// client is a browser-like client that reconnects with its last event id.
type client struct {
	kind string // "sse" or "ws"
	c    *cluster
	base string

	mu     sync.Mutex
	got    []string
	closes []time.Time // pode.close (SSE) or close 1012 (WebSocket)
	lastID string
	edges  []string // pods it was routed to, in order
	open   bool
}

func (cl *client) events() []string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return slices.Clone(cl.got)
}

func (cl *client) closeTimes() []time.Time {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return slices.Clone(cl.closes)
}

func (cl *client) opened() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.open
}

// edge is the pod the current (last) connection went to.
func (cl *client) edge() string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.edges) == 0 {
		return ""
	}
	return cl.edges[len(cl.edges)-1]
}

func (cl *client) firstEdge() string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.edges) == 0 {
		return ""
	}
	return cl.edges[0]
}

func (cl *client) run(ctx context.Context) {
	for ctx.Err() == nil {
		var conn net.Conn
		hc := cl.c.httpClient(0, func(cn net.Conn) { conn = cn })
		var err error
		if cl.kind == "sse" {
			err = cl.sse(ctx, hc, &conn)
		} else {
			err = cl.ws(ctx, hc, &conn)
		}
		if err != nil && os.Getenv("HERALD_T3_DEBUG") != "" {
			fmt.Fprintf(os.Stderr, "client %s: %v\n", cl.kind, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond): // EventSource waits its retry time
		}
	}
}

// connected records the pod the connection was routed to.
func (cl *client) connected(conn net.Conn) {
	edge := ""
	if conn != nil {
		edge = cl.c.routedTo(conn.LocalAddr().String())
	}
	cl.mu.Lock()
	cl.edges = append(cl.edges, edge)
	cl.open = true
	cl.mu.Unlock()
}

func (cl *client) sse(ctx context.Context, hc *http.Client, conn *net.Conn) error {
	h := http.Header{}
	cl.mu.Lock()
	if cl.lastID != "" {
		h.Set("Last-Event-ID", cl.lastID)
	}
	cl.mu.Unlock()
	s, err := sseclient.Dial(ctx, hc, cl.base+"/sse/%2Fevents", h)
	if err != nil {
		return err
	}
	defer s.Close()
	cl.connected(*conn)
	for {
		ev, err := s.Next()
		if err != nil {
			return err
		}
		cl.mu.Lock()
		if ev.ID != "" {
			cl.lastID = ev.ID
		}
		switch ev.Type {
		case "tick":
			cl.got = append(cl.got, ev.Data)
		case "pode.close":
			cl.closes = append(cl.closes, time.Now())
		}
		cl.mu.Unlock()
	}
}

func (cl *client) ws(ctx context.Context, hc *http.Client, conn *net.Conn) error {
	url := "ws" + strings.TrimPrefix(cl.base, "http") + "/ws/events"
	cl.mu.Lock()
	if cl.lastID != "" {
		url += "?lastEventId=" + cl.lastID
	}
	cl.mu.Unlock()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"herald.v1"}})
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	cl.connected(*conn)
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusServiceRestart {
				cl.mu.Lock()
				cl.closes = append(cl.closes, time.Now())
				cl.mu.Unlock()
			}
			return err
		}
		var m struct {
			ID    string          `json:"id"`
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		cl.mu.Lock()
		if m.ID != "" {
			cl.lastID = m.ID
		}
		if m.Event == "tick" {
			var s string
			_ = json.Unmarshal(m.Data, &s)
			cl.got = append(cl.got, s)
		}
		cl.mu.Unlock()
	}
}
