package charttest

// A small kubelet and kube-proxy for tier 3: the rendered pods run as
// local processes, each in its own network, mount and UTS namespaces,
// chrooted into its image's root filesystem (read-only when the container
// says so), with the rendered volumes bind-mounted where the container
// mounts them, the rendered environment (Secret and field references
// resolved), the rendered user and group, no_new_privs, and /etc/hosts
// answering the cluster's DNS names. Services are listeners at their
// ClusterIPs in a "node" network namespace that forward to ready
// endpoints, as kube-proxy does. Needs root (namespaces, mounts, chroot)
// and util-linux, coreutils and iproute2.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// cluster is the node: a network namespace with a bridge the pods hang on,
// the Services' ClusterIPs, and the pods.
type cluster struct {
	t       *testing.T
	dir     string // logs, volumes
	holder  *exec.Cmd
	ns      string // Kubernetes namespace of the pods (for DNS names)
	domain  string
	nextIP  int
	nextSvc int

	mu       sync.Mutex
	pods     []*pod
	services []*service
	hosts    []string          // /etc/hosts lines every pod gets
	routes   map[string]string // client local address → pod it was forwarded to
}

const (
	podCIDRPrefix = "10.244.0."
	gatewayIP     = podCIDRPrefix + "1"
	svcPrefix     = "10.96.0."
)

// tier3Tools are the programs the kubelet drives.
var tier3Tools = []string{"unshare", "nsenter", "setpriv", "chroot", "ip", "mount", "sh", "env", "hostname", "sleep"}

// needKubelet checks the privileges and tools tier 3 needs. Without them it
// skips on a developer's machine and fails in CI.
func needKubelet(t *testing.T) map[string]string {
	t.Helper()
	missing := func(why string) {
		if os.Getenv("CI") != "" {
			t.Fatalf("tier 3 cannot run: %s", why)
		}
		t.Skipf("tier 3 needs %s (CI runs it)", why)
	}
	if os.Geteuid() != 0 {
		missing("root (network and mount namespaces, chroot)")
	}
	paths := map[string]string{}
	for _, tool := range tier3Tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			missing(tool + " on PATH")
		}
		paths[tool] = p
	}
	return paths
}

func newCluster(t *testing.T, ns, domain string) *cluster {
	t.Helper()
	dir, err := worldTempDir("herald-kubelet-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, ns: ns, domain: domain, nextIP: 10, nextSvc: 10, routes: map[string]string{}}
	c.holder = holdNamespace(t, "--net")
	c.nsExec("ip", "link", "set", "lo", "up")
	c.nsExec("ip", "link", "add", "br0", "type", "bridge")
	c.nsExec("ip", "addr", "add", gatewayIP+"/24", "dev", "br0")
	c.nsExec("ip", "link", "set", "br0", "up")
	t.Cleanup(c.shutdown)
	return c
}

// holdNamespace starts a process that owns new namespaces until the test
// ends (and dies with the test process).
func holdNamespace(t *testing.T, flags ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("unshare", append(flags, "--", "sleep", "infinity")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startCmd(cmd); err != nil {
		t.Fatal(err)
	}
	// unshare execs sleep once the namespaces exist.
	self, _ := os.Readlink("/proc/self/ns/net")
	if err := poll(5*time.Second, func() error {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
		if err != nil || ns == self {
			return fmt.Errorf("namespace not created yet")
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		if strings.TrimSpace(string(comm)) != "sleep" {
			return fmt.Errorf("still %s", comm)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// nsExec runs a command in the node's network namespace.
func (c *cluster) nsExec(args ...string) {
	c.t.Helper()
	runIn(c.t, c.holder.Process.Pid, args...)
}

func runIn(t *testing.T, pid int, args ...string) {
	t.Helper()
	full := append([]string{fmt.Sprintf("--net=/proc/%d/ns/net", pid), "--"}, args...)
	if out, err := exec.Command("nsenter", full...).CombinedOutput(); err != nil {
		t.Fatalf("nsenter %v: %v\n%s", args, err, out)
	}
}

func (c *cluster) shutdown() {
	c.mu.Lock()
	pods := slices.Clone(c.pods)
	svcs := slices.Clone(c.services)
	c.mu.Unlock()
	for _, p := range pods {
		p.kill()
	}
	for _, s := range svcs {
		for _, l := range s.listeners {
			l.Close()
		}
	}
	_ = c.holder.Process.Kill()
	_ = c.holder.Wait()
}

// inNetns runs fn on an OS thread that has entered the network namespace
// of pid; sockets fn creates belong to that namespace. The thread is
// discarded afterwards.
func inNetns(pid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dial connects from the node's network namespace.
func (c *cluster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(c.holder.Process.Pid, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// httpClient is an HTTP client on the node; onConn, if set, sees every
// new connection.
func (c *cluster) httpClient(timeout time.Duration, onConn func(net.Conn)) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := c.dial(ctx, network, addr)
			if err == nil && onConn != nil {
				onConn(conn)
			}
			return conn, err
		},
	}}
}

// ---------------------------------------------------------------------------
// Services (kube-proxy).

type service struct {
	svc       *corev1.Service
	ip        string
	listeners []net.Listener
	next      atomic.Uint64
}

// addService gives a ClusterIP Service its address and forwards its ports
// to ready, not terminating pods it selects; a headless one only gets DNS
// names for its pods (added with the pods).
func (c *cluster) addService(svc *corev1.Service) *service {
	c.t.Helper()
	s := &service{svc: svc}
	c.mu.Lock()
	c.services = append(c.services, s)
	c.mu.Unlock()
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return s
	}
	c.nextSvc++
	s.ip = fmt.Sprintf("%s%d", svcPrefix, c.nextSvc)
	c.nsExec("ip", "addr", "add", s.ip+"/32", "dev", "br0")
	c.addHosts(s.ip, c.serviceNames(svc.Name)...)
	for _, sp := range svc.Spec.Ports {
		var l net.Listener
		err := inNetns(c.holder.Process.Pid, func() error {
			var err error
			l, err = net.Listen("tcp", net.JoinHostPort(s.ip, strconv.Itoa(int(sp.Port))))
			return err
		})
		if err != nil {
			c.t.Fatal(err)
		}
		s.listeners = append(s.listeners, l)
		go c.forward(s, sp, l)
	}
	return s
}

// serviceNames are the DNS names a Service answers to from a pod.
func (c *cluster) serviceNames(name string) []string {
	return []string{name, name + "." + c.ns, name + "." + c.ns + ".svc", name + "." + c.ns + ".svc." + c.domain}
}

func (c *cluster) forward(s *service, sp corev1.ServicePort, l net.Listener) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			eps := c.endpoints(s.svc)
			if len(eps) == 0 {
				return // as kube-proxy: no endpoint, the connection is refused
			}
			p := eps[int(s.next.Add(1))%len(eps)]
			port, ok := p.containerPort(sp.TargetPort.String())
			if !ok {
				c.t.Errorf("Service %s port %s: pod %s has no port %s", s.svc.Name, sp.Name, p.name, sp.TargetPort.String())
				return
			}
			out, err := c.dial(context.Background(), "tcp", net.JoinHostPort(p.ip, strconv.Itoa(port)))
			if err != nil {
				return
			}
			defer out.Close()
			c.mu.Lock()
			c.routes[in.RemoteAddr().String()] = p.name
			c.mu.Unlock()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(out, in); closeWrite(out); done <- struct{}{} }()
			go func() { _, _ = io.Copy(in, out); closeWrite(in); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// routedTo is the pod a client connection (by its local address) was
// forwarded to.
func (c *cluster) routedTo(local string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routes[local]
}

// endpoints are the Service's ready, not terminating pods.
func (c *cluster) endpoints(svc *corev1.Service) []*pod {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*pod
	for _, p := range c.pods {
		if sel.Matches(labels.Set(p.labels)) && p.ready.Load() && !p.terminating.Load() {
			out = append(out, p)
		}
	}
	return out
}

func (c *cluster) addHosts(ip string, names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hosts = append(c.hosts, ip+"\t"+strings.Join(names, " "))
}

// ---------------------------------------------------------------------------
// Pods (kubelet).

// image is what a container runtime would unpack: a root filesystem and
// the image's configuration.
type ctrImage struct {
	rootfs     string
	entrypoint []string
	env        []string
}

type pod struct {
	c         *cluster
	name      string
	ip        string
	labels    map[string]string
	spec      corev1.PodSpec
	container corev1.Container
	img       ctrImage
	env       []string
	holder    *exec.Cmd
	logPath   string
	ps        podSpec

	proc        *exec.Cmd
	exited      chan struct{}
	exitErr     error
	ready       atomic.Bool
	terminating atomic.Bool
	probeFails  atomic.Int64
	stopProbes  context.CancelFunc
}

// podSpec is what the kubelet is given: a pod's metadata, its spec
// (rendered), its image and the files of the ConfigMaps and Secrets it
// mounts.
type podSpec struct {
	name       string
	hostname   string // DNS name under a headless Service, or empty
	subdomain  string
	template   *corev1.PodTemplateSpec
	img        ctrImage
	configMaps map[string]map[string]string // name → key → content
	secrets    map[string]map[string][]byte
}

// newPod creates the pod's network namespace, address and DNS names;
// start runs its container. Create every pod first, so that each one's
// /etc/hosts knows the others.
func (c *cluster) newPod(ps podSpec) *pod {
	c.t.Helper()
	if len(ps.template.Spec.Containers) != 1 || len(ps.template.Spec.InitContainers) != 0 {
		c.t.Fatalf("pod %s: one container and no init containers supported", ps.name)
	}
	c.mu.Lock()
	c.nextIP++
	ip := fmt.Sprintf("%s%d", podCIDRPrefix, c.nextIP)
	c.mu.Unlock()
	p := &pod{c: c, ps: ps, name: ps.name, ip: ip, labels: ps.template.Labels, spec: ps.template.Spec,
		container: ps.template.Spec.Containers[0], img: ps.img, logPath: filepath.Join(c.dir, ps.name+".log"),
		exited: make(chan struct{})}
	p.holder = holdNamespace(c.t, "--net")
	veth := fmt.Sprintf("veth%d", c.nextIP)
	c.nsExec("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(p.holder.Process.Pid))
	c.nsExec("ip", "link", "set", veth, "master", "br0", "up")
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", ip + "/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "via", gatewayIP},
	} {
		runIn(c.t, p.holder.Process.Pid, args...)
	}
	if ps.hostname != "" {
		fqdn := ps.hostname + "." + ps.subdomain + "." + c.ns + ".svc." + c.domain
		c.addHosts(ip, fqdn, ps.hostname+"."+ps.subdomain+"."+c.ns+".svc", ps.hostname)
	}
	c.mu.Lock()
	c.pods = append(c.pods, p)
	c.mu.Unlock()
	return p
}

// containerPort resolves a port name (or number) of the container.
func (p *pod) containerPort(nameOrNumber string) (int, bool) {
	for _, cp := range p.container.Ports {
		if cp.Name == nameOrNumber {
			return int(cp.ContainerPort), true
		}
	}
	n, err := strconv.Atoi(nameOrNumber)
	return n, err == nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// start lays out the volumes, resolves the environment and runs the
// container's process.
func (p *pod) start(ps podSpec) {
	t := p.c.t
	t.Helper()
	spec, ctr := p.spec, p.container
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || psc.RunAsGroup == nil {
		t.Fatalf("pod %s: runAsUser and runAsGroup must be set (the kubelet would take the image's user)", p.name)
	}
	uid, gid := *psc.RunAsUser, *psc.RunAsGroup
	if sc := ctr.SecurityContext; sc != nil && sc.RunAsUser != nil {
		uid = *sc.RunAsUser
	}
	groups := []string{strconv.FormatInt(gid, 10)}
	if psc.FSGroup != nil {
		groups = append(groups, strconv.FormatInt(*psc.FSGroup, 10))
	}

	// Volumes, as the kubelet lays them out on the node.
	volDir := filepath.Join(p.c.dir, "volumes", p.name)
	vols := map[string]string{}
	for _, v := range spec.Volumes {
		dir := filepath.Join(volDir, v.Name)
		switch {
		case v.ConfigMap != nil:
			files := map[string][]byte{}
			data, ok := ps.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("pod %s: volume %s: no ConfigMap %s", p.name, v.Name, v.ConfigMap.Name)
			}
			for k, s := range data {
				files[k] = []byte(s)
			}
			atomicWriterLayout(t, dir, project(t, files, v.ConfigMap.Items), psc.FSGroup)
		case v.Secret != nil:
			data, ok := ps.secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("pod %s: volume %s: no Secret %s", p.name, v.Name, v.Secret.SecretName)
			}
			atomicWriterLayout(t, dir, project(t, data, v.Secret.Items), psc.FSGroup)
		case v.EmptyDir != nil:
			mkdirOwned(t, dir, 0o777, 0, 0)
		default:
			t.Fatalf("pod %s: volume %s: unsupported source", p.name, v.Name)
		}
		vols[v.Name] = dir
	}
	// Persistent volumes from the StatefulSet's claim templates: an empty
	// directory that fsGroup makes the pod's.
	for _, m := range ctr.VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			dir := filepath.Join(volDir, "pvc-"+m.Name)
			fsg := int64(0)
			if psc.FSGroup != nil {
				fsg = *psc.FSGroup
			}
			mkdirOwned(t, dir, 0o2775, 0, int(fsg))
			vols[m.Name] = dir
		}
	}

	// Files the kubelet manages.
	etc := filepath.Join(volDir, "etc")
	mkdirOwned(t, etc, 0o755, 0, 0)
	p.c.mu.Lock()
	hosts := "127.0.0.1\tlocalhost\n" + p.ip + "\t" + p.name + "\n" + strings.Join(p.c.hosts, "\n") + "\n"
	p.c.mu.Unlock()
	writeFile(t, filepath.Join(etc, "hosts"), hosts)
	writeFile(t, filepath.Join(etc, "resolv.conf"), fmt.Sprintf("search %s.svc.%s svc.%s %s\nnameserver %s10\noptions ndots:5\n", p.c.ns, p.c.domain, p.c.domain, p.c.domain, svcPrefix))
	writeFile(t, filepath.Join(etc, "hostname"), p.name+"\n")

	// Environment: the image's, then the container's, resolved.
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	for _, kv := range p.img.env {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	set("HOSTNAME", p.name)
	set("KUBERNETES_SERVICE_HOST", svcPrefix+"1")
	set("KUBERNETES_SERVICE_PORT", "443")
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			set(e.Name, e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := ps.secrets[ref.Name][ref.Key]
			if !ok {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				t.Fatalf("pod %s: env %s: Secret %s has no key %s (the kubelet would refuse to start the container)", p.name, e.Name, ref.Name, ref.Key)
			}
			set(e.Name, string(v))
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				set(e.Name, p.name)
			case "metadata.namespace":
				set(e.Name, p.c.ns)
			case "status.podIP":
				set(e.Name, p.ip)
			default:
				t.Fatalf("pod %s: env %s: field %s", p.name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.ResourceFieldRef != nil:
			rf := e.ValueFrom.ResourceFieldRef
			q, ok := ctr.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(rf.Resource, "limits."))]
			if !ok {
				t.Fatalf("pod %s: env %s: no limit %s", p.name, e.Name, rf.Resource)
			}
			set(e.Name, strconv.FormatInt(q.Value(), 10))
		default:
			t.Fatalf("pod %s: env %s: unsupported source", p.name, e.Name)
		}
	}
	for _, k := range order {
		p.env = append(p.env, k+"="+env[k])
	}

	// Command: the container's command replaces the image's entrypoint;
	// its args follow.
	argv := slices.Clone(ctr.Command)
	if len(argv) == 0 {
		argv = slices.Clone(p.img.entrypoint)
	}
	argv = append(argv, ctr.Args...)

	// The script runs in the pod's network namespace and a new mount and
	// UTS namespace, builds the container's view and execs the process.
	root := p.img.rootfs
	var sh strings.Builder
	fmt.Fprintf(&sh, "set -e\nhostname %s\nmount --make-rprivate /\nmount --bind %s %s\n", shellQuote(p.name), shellQuote(root), shellQuote(root))
	bind := func(src, dst string, ro, file bool) {
		target := filepath.Join(root, dst)
		if file {
			fmt.Fprintf(&sh, "[ -e %s ] || : > %s\n", shellQuote(target), shellQuote(target))
		} else {
			fmt.Fprintf(&sh, "mkdir -p %s\n", shellQuote(target))
		}
		fmt.Fprintf(&sh, "mount --bind %s %s\n", shellQuote(src), shellQuote(target))
		if ro {
			fmt.Fprintf(&sh, "mount -o remount,bind,ro %s\n", shellQuote(target))
		}
	}
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		bind(filepath.Join(etc, f), "/etc/"+f, false, true)
	}
	for _, m := range ctr.VolumeMounts {
		if m.SubPath != "" {
			t.Fatalf("pod %s: subPath mounts unsupported", p.name)
		}
		bind(vols[m.Name], m.MountPath, m.ReadOnly, false)
	}
	if sc := ctr.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		fmt.Fprintf(&sh, "mount -o remount,bind,ro %s\n", shellQuote(root))
	}
	noNewPrivs := ""
	if sc := ctr.SecurityContext; sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		noNewPrivs = "--no-new-privs"
	}
	fmt.Fprintf(&sh, "exec setpriv %s -- env -i", noNewPrivs)
	for _, kv := range p.env {
		fmt.Fprintf(&sh, " %s", shellQuote(kv))
	}
	// chroot changes to / (the image's working directory) and takes the
	// command from the image's PATH.
	fmt.Fprintf(&sh, " %s --userspec=%d:%d --groups=%s %s", shellQuote(mustLook("chroot")), uid, gid, strings.Join(groups, ","), shellQuote(root))
	for _, a := range argv {
		fmt.Fprintf(&sh, " %s", shellQuote(a))
	}
	sh.WriteString("\n")
	script := filepath.Join(volDir, "start.sh")
	writeFile(t, script, sh.String())

	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", p.holder.Process.Pid), "--",
		"unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", script)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startCmd(cmd); err != nil {
		t.Fatal(err)
	}
	p.proc = cmd
	go func() { p.exitErr = cmd.Wait(); close(p.exited) }()
	ctx, cancel := context.WithCancel(context.Background())
	p.stopProbes = cancel
	go p.probe(ctx)
}

func mustLook(tool string) string {
	p, err := exec.LookPath(tool)
	if err != nil {
		panic(err)
	}
	return p
}

// project picks a volume's items (all keys when none are listed).
func project[V string | []byte](t *testing.T, data map[string]V, items []corev1.KeyToPath) map[string][]byte {
	out := map[string][]byte{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = []byte(v)
		}
		return out
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("volume item %s: no such key", it.Key)
		}
		out[it.Path] = []byte(v)
	}
	return out
}

// atomicWriterLayout writes files as the kubelet's atomic writer does for
// ConfigMap and Secret volumes: a timestamped directory holding the
// files, a ..data symlink to it, and one symlink per file through ..data;
// files 0644, group fsGroup.
func atomicWriterLayout(t *testing.T, dir string, files map[string][]byte, fsGroup *int64) {
	t.Helper()
	gid := 0
	if fsGroup != nil {
		gid = int(*fsGroup)
	}
	mkdirOwned(t, dir, 0o1777, 0, gid)
	ts := "..2026_11_29_12_00_00.000000001"
	mkdirOwned(t, filepath.Join(dir, ts), 0o755, 0, gid)
	for name, b := range files {
		path := filepath.Join(dir, ts, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 0, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func mkdirOwned(t *testing.T, dir string, mode os.FileMode, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	m := mode.Perm()
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if err := os.Chmod(dir, m); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// probe runs the startup probe, then readiness and liveness, with the
// rendered periods and thresholds, from the node.
func (p *pod) probe(ctx context.Context) {
	ctr := p.container
	client := func(pr *corev1.Probe) *http.Client {
		return p.c.httpClient(time.Duration(max(pr.TimeoutSeconds, 1))*time.Second, nil)
	}
	check := func(pr *corev1.Probe) error {
		port, ok := p.containerPort(pr.HTTPGet.Port.String())
		if !ok {
			return fmt.Errorf("no port %s", pr.HTTPGet.Port.String())
		}
		scheme := strings.ToLower(string(pr.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		c := client(pr)
		defer c.CloseIdleConnections()
		resp, err := c.Get(fmt.Sprintf("%s://%s:%d%s", scheme, p.ip, port, pr.HTTPGet.Path))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	}
	period := func(pr *corev1.Probe) time.Duration { return time.Duration(max(pr.PeriodSeconds, 1)) * time.Second }
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-p.exited:
			return false
		case <-time.After(d):
			return true
		}
	}
	if sp := ctr.StartupProbe; sp != nil {
		fails := int32(0)
		for {
			if !wait(period(sp)) {
				return
			}
			if check(sp) == nil {
				break
			}
			if fails++; fails >= max(sp.FailureThreshold, 1) {
				p.c.t.Errorf("pod %s: startup probe failed %d times: the kubelet would restart it", p.name, fails)
				p.probeFails.Add(1)
				return
			}
		}
	}
	rp, lp := ctr.ReadinessProbe, ctr.LivenessProbe
	nextR, nextL := time.Now(), time.Now().Add(period(lp))
	var rFails, lFails int32
	for {
		now := time.Now()
		if !now.Before(nextR) {
			if err := check(rp); err == nil {
				rFails = 0
				p.ready.Store(true)
			} else if rFails++; rFails >= max(rp.FailureThreshold, 1) {
				p.ready.Store(false)
			}
			nextR = now.Add(period(rp))
		}
		if !now.Before(nextL) {
			if err := check(lp); err == nil {
				lFails = 0
			} else if lFails++; lFails >= max(lp.FailureThreshold, 1) && !p.terminating.Load() {
				p.c.t.Errorf("pod %s: liveness probe failed %d times (%v): the kubelet would restart it", p.name, lFails, err)
				p.probeFails.Add(1)
			}
			nextL = now.Add(period(lp))
		}
		if !wait(min(time.Until(nextR), time.Until(nextL), 200*time.Millisecond)) {
			return
		}
	}
}

// waitReady waits until the pod's readiness probe passed.
func (p *pod) waitReady(limit time.Duration) error {
	return poll(limit, func() error {
		select {
		case <-p.exited:
			return fmt.Errorf("pod %s exited: %v\n%s", p.name, p.exitErr, p.tail(20))
		default:
		}
		if !p.ready.Load() {
			return fmt.Errorf("pod %s not ready\n%s", p.name, p.tail(20))
		}
		return nil
	})
}

// terminate deletes the pod as the kubelet does: it leaves the endpoints,
// the preStop hook runs, then SIGTERM, then SIGKILL at the end of the
// grace period. It returns when the process has exited, with the time
// from the deletion to the exit and whether the kill was needed.
func (p *pod) terminate(hooked func(stage string)) (took time.Duration, killed bool) {
	t := p.c.t
	start := time.Now()
	p.terminating.Store(true)
	grace := time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
	if ps := p.container.Lifecycle; ps != nil && ps.PreStop != nil {
		switch {
		case ps.PreStop.Sleep != nil:
			time.Sleep(time.Duration(ps.PreStop.Sleep.Seconds) * time.Second)
		case ps.PreStop.Exec != nil:
			// In the container: its namespaces, root and user.
			psc := p.spec.SecurityContext
			args := []string{"-t", strconv.Itoa(p.proc.Process.Pid), "-n", "-m", "-u", "-r", "-w",
				fmt.Sprintf("-S%d", *psc.RunAsUser), fmt.Sprintf("-G%d", *psc.RunAsGroup), "--"}
			args = append(args, ps.PreStop.Exec.Command...)
			cmd := exec.Command(mustLook("nsenter"), args...)
			cmd.Env = p.env // the container's environment, PATH included
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("pod %s: preStop %v: %v\n%s", p.name, ps.PreStop.Exec.Command, err, out)
			}
		default:
			t.Fatalf("pod %s: unsupported preStop", p.name)
		}
	}
	if hooked != nil {
		hooked("sigterm")
	}
	_ = p.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(time.Until(start.Add(grace))):
		killed = true
		_ = p.proc.Process.Kill()
		<-p.exited
	}
	p.stopProbes()
	return time.Since(start), killed
}

func (p *pod) kill() {
	if p.proc != nil {
		_ = p.proc.Process.Kill()
		<-p.exited
		p.stopProbes()
	}
	if p.holder != nil {
		_ = p.holder.Process.Kill()
		_ = p.holder.Wait()
	}
}

// tail is the end of the pod's log.
func (p *pod) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- " + p.name + " ---\n" + strings.Join(lines, "\n")
}

// logs is the pod's whole log.
func (p *pod) logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}
