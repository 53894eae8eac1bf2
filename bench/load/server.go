package load

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Module is the import path of the Herald module, used to find its source.
const Module = "github.com/herald-push/herald"

// FindModuleRoot walks up from dir to the directory whose go.mod declares
// the Herald module.
func FindModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module "+Module+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("load: no go.mod of %s above the working directory; pass the binary explicitly", Module)
		}
		dir = parent
	}
}

// goTool returns the go command: from PATH, else /usr/local/go/bin/go.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// Build compiles the main package pkg (e.g. "./cmd/embedded") of the module
// in root into out.
func Build(ctx context.Context, root, pkg, out string) error {
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("load: go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// ServerConfig starts one Herald process.
type ServerConfig struct {
	// Binary is a built cmd/embedded or cmd/edge.
	Binary string
	// Edge says Binary is cmd/edge, joining the NATS server at NATS.
	// Otherwise it is cmd/embedded with its own NATS server.
	Edge bool
	NATS string
	// Args are more flags, e.g. -queue-messages 4096 or cluster flags.
	Args []string
	// Env is added to the environment (KEY=VALUE).
	Env []string
	// Token is the publish token. Default: random.
	Token string
	// CPUs, when set, runs the process under taskset -c CPUs.
	CPUs string
	// Log receives the server's log lines (may be nil).
	Log io.Writer
	// StartTimeout bounds the start. Default 30 s.
	StartTimeout time.Duration
}

// Server is a running Herald process on random loopback ports.
type Server struct {
	PID        int
	URL        string // http://127.0.0.1:port
	NATS       string // NATS client URL
	ClusterURL string // NATS route URL, when clustered
	Token      string
	// PprofURL is the base URL of net/http/pprof when the process serves
	// it (it logs {"msg":"pprof","url":...}); empty otherwise.
	PprofURL string

	cmd    *exec.Cmd
	tmp    string
	exited chan struct{}
	werr   error // set before exited is closed

	mu   sync.Mutex
	tail []string // guarded by mu; last log lines
}

// StartServer starts a Herald process: HTTP and (embedded) NATS on random
// 127.0.0.1 ports, JetStream in a temporary directory, JSON logs read for
// the bound addresses. It returns once /readyz answers 200.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.Token == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		cfg.Token = hex.EncodeToString(b[:])
	}
	tmp, err := os.MkdirTemp("", "herald-bench-server-")
	if err != nil {
		return nil, err
	}
	args := []string{"-listen", "127.0.0.1:0", "-log-format", "json", "-log-level", "info", "-publish-token", cfg.Token}
	if cfg.Edge {
		args = append(args, "-nats", cfg.NATS)
	} else {
		args = append(args, "-nats-listen", "127.0.0.1:0", "-data", filepath.Join(tmp, "data"))
	}
	args = append(args, cfg.Args...)
	name := cfg.Binary
	if cfg.CPUs != "" {
		args = append([]string{"-c", cfg.CPUs, cfg.Binary}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	// A load run measures capacity, not admission: no connect-rate limit
	// unless the run sets one (an -connect-rate argument wins over the
	// environment; binaries without the option ignore the variable).
	cmd.Env = append(append(os.Environ(), "HERALD_CONNECT_RATE=-1"), cfg.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the load tool
	stderr, err := cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("load: start %s: %w", cfg.Binary, err)
	}
	s := &Server{PID: cmd.Process.Pid, Token: cfg.Token, cmd: cmd, tmp: tmp, exited: make(chan struct{})}
	if cfg.Edge {
		s.NATS = cfg.NATS
	}
	addrs := make(chan struct{})
	go s.readLog(stderr, cfg, addrs)
	go func() {
		s.werr = cmd.Wait()
		close(s.exited)
	}()

	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	select {
	case <-addrs:
	case <-s.exited:
		s.cleanup()
		return nil, fmt.Errorf("load: %s exited at start (%v):\n%s", filepath.Base(cfg.Binary), s.werr, s.Tail())
	case <-ctx.Done():
		_ = s.Stop(context.Background())
		return nil, fmt.Errorf("load: %s did not start in %v:\n%s", filepath.Base(cfg.Binary), cfg.StartTimeout, s.Tail())
	}
	for {
		if resp, err := http.Get(s.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			_ = s.Stop(context.Background())
			return nil, fmt.Errorf("load: %s not ready in %v:\n%s", filepath.Base(cfg.Binary), cfg.StartTimeout, s.Tail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readLog follows the JSON log: the first "serving" line gives the HTTP
// address, "embedded NATS server started" the NATS one.
func (s *Server) readLog(r io.Reader, cfg ServerConfig, addrs chan struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		if cfg.Log != nil {
			fmt.Fprintln(cfg.Log, line)
		}
		s.mu.Lock()
		s.tail = append(s.tail, line)
		if len(s.tail) > 50 {
			s.tail = s.tail[len(s.tail)-50:]
		}
		s.mu.Unlock()
		if signalled {
			continue
		}
		var rec struct {
			Msg        string `json:"msg"`
			URL        string `json:"url"`
			ClientURL  string `json:"client_url"`
			ClusterURL string `json:"cluster_url"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		s.mu.Lock()
		switch rec.Msg {
		case "embedded NATS server started":
			s.NATS, s.ClusterURL = rec.ClientURL, rec.ClusterURL
		case "serving":
			s.URL = rec.URL
		case "pprof":
			s.PprofURL = rec.URL
		}
		ready := s.URL != "" && s.NATS != ""
		s.mu.Unlock()
		if ready {
			signalled = true
			close(addrs)
		}
	}
}

// Tail returns the last lines the server logged.
func (s *Server) Tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

// Usage returns the server's current RSS and CPU time.
func (s *Server) Usage() (Usage, error) { return ReadUsage(s.PID) }

// Exited reports whether the process has ended (crashed, when unasked).
func (s *Server) Exited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits for the orderly shutdown; when ctx ends
// first (or after 30 s) the process is killed. Temporary data is removed.
func (s *Server) Stop(ctx context.Context) error {
	defer s.cleanup()
	if s.Exited() {
		return s.exitErr()
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
		return s.exitErr()
	case <-ctx.Done():
	case <-t.C:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	return errors.New("load: server killed after its shutdown deadline")
}

func (s *Server) exitErr() error {
	var ee *exec.ExitError
	if errors.As(s.werr, &ee) {
		return fmt.Errorf("load: server exited: %v\n%s", s.werr, s.Tail())
	}
	return s.werr
}

func (s *Server) cleanup() { _ = os.RemoveAll(s.tmp) }
