package charttest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herald-push/herald/helm/test/internal/kubebin"
)

// apiServer is a kube-apiserver with its etcd, both on loopback, started
// once for the package and stopped by TestMain.
type apiServer struct {
	url        string
	token      string
	caFile     string
	kubeconfig string
	procs      []*bgProc
	logDir     string
}

var (
	sharedAPIOnce sync.Once
	sharedAPI     *apiServer
	sharedAPIErr  error
)

// stopSharedAPIServer ends the processes started for the package.
func stopSharedAPIServer() {
	if sharedAPI != nil {
		sharedAPI.stop()
	}
}

// needAPIServer returns the package's API server, starting it (and
// building its binaries when they are not cached) on first use. Building
// is slow but never skipped: an API server test that does not run is a
// test that passes without checking anything.
func needAPIServer(t *testing.T) *apiServer {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("-short: the API server tests need kube-apiserver and etcd")
	}
	sharedAPIOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		bins, ok, err := kubebin.Find()
		if err == nil && !ok {
			fmt.Fprintln(os.Stderr, "charttest: kube-apiserver and etcd are not built yet; building them (about 12 minutes cold)")
			bins, err = kubebin.Ensure(ctx, os.Stderr)
		}
		if err != nil {
			sharedAPIErr = err
			return
		}
		sharedAPI, sharedAPIErr = startAPIServer(bins)
	})
	if sharedAPIErr != nil {
		t.Fatalf("API server: %v", sharedAPIErr)
	}
	return sharedAPI
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startAPIServer(bins kubebin.Binaries) (_ *apiServer, err error) {
	dir, err := os.MkdirTemp("", "herald-apiserver-")
	if err != nil {
		return nil, err
	}
	s := &apiServer{logDir: dir}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := s.start(bins.Etcd, "etcd",
		"--name", "herald-test",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "herald-test="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn",
	); err != nil {
		return nil, err
	}

	// Service account signing key, static token.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return nil, err
	}
	s.token = rand.Text()
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(s.token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	certDir := filepath.Join(dir, "certs")
	s.url = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	if err := s.start(bins.APIServer, "kube-apiserver",
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(ports[2]), "--cert-dir", certDir,
		// A loopback advertise address is refused by the default reconciler.
		"--endpoint-reconciler-type", "none",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--v", "1",
	); err != nil {
		return nil, err
	}
	s.caFile = filepath.Join(certDir, "apiserver.crt")

	// Wait for /readyz (the self-signed serving certificate is written
	// at start).
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := s.ready(); err == nil {
			break
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("kube-apiserver not ready after 90 s: %v\n%s", err, s.tail("kube-apiserver", 30))
		}
		for _, p := range s.procs {
			if p.exited() {
				return nil, fmt.Errorf("%s exited: %s", p.name, s.tail(p.name, 30))
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, s.url, s.caFile, s.token)
	if err := os.WriteFile(s.kubeconfig, []byte(kc), 0o600); err != nil {
		return nil, err
	}
	return s, nil
}

// start runs a binary with its output in logDir/<name>.log; it dies with
// the test process.
func (s *apiServer) start(bin, name string, args ...string) error {
	f, err := os.Create(filepath.Join(s.logDir, name+".log"))
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startCmd(cmd); err != nil {
		return err
	}
	p := &bgProc{name: name, cmd: cmd, done: make(chan struct{})}
	s.procs = append(s.procs, p)
	go func() { _ = cmd.Wait(); close(p.done) }()
	return nil
}

// bgProc is a started process; done closes when it has exited.
type bgProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// exited reports whether the process has ended.
func (p *bgProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (s *apiServer) ready() error {
	pem, err := os.ReadFile(filepath.Join(s.logDir, "certs", "apiserver.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", s.url+"/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("/readyz: %s", resp.Status)
	}
	return nil
}

// tail is the end of a process's log.
func (s *apiServer) tail(name string, n int) string {
	b, _ := os.ReadFile(filepath.Join(s.logDir, name+".log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends the API server, then etcd, and removes their files.
func (s *apiServer) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	os.RemoveAll(s.logDir)
}

// restConfig is a client configuration with a warning collector.
func (s *apiServer) restConfig(w *warnings) *rest.Config {
	c := &rest.Config{Host: s.url, BearerToken: s.token, TLSClientConfig: rest.TLSClientConfig{CAFile: s.caFile}}
	if w != nil {
		c.WarningHandler = w
	}
	return c
}

func (s *apiServer) clients(t *testing.T) (*kubernetes.Clientset, *dynamic.DynamicClient) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.restConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(s.restConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	return cs, dc
}

// warnings collects the API server's warnings (Warning headers: Pod
// Security violations, deprecated APIs, unknown fields).
type warnings struct {
	mu   sync.Mutex
	list []string
}

// HandleWarningHeader records one warning.
func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// take returns the warnings so far and forgets them.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}
