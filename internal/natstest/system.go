package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DebianServerVersion is the nats-server of Debian 12's package
// (apt-get install nats-server), the oldest server Herald is tested with.
const DebianServerVersion = "2.9.10"

// systemServerPaths are where distributions install nats-server.
var systemServerPaths = []string{"/usr/sbin/nats-server", "/usr/bin/nats-server"}

// SystemServer is a nats-server process of the machine's own package (not
// the module's), with JetStream on and its store in a t.TempDir().
type SystemServer struct {
	// URL is the client URL, nats://127.0.0.1:<port>.
	URL string
	// Version is what the binary reports, e.g. "2.9.10".
	Version string

	bin  string
	args []string
	env  []string
	cmd  *exec.Cmd
	log  *SyncBuffer
	done chan struct{}
}

// StartSystemServer starts the machine's nats-server of version want
// (e.g. DebianServerVersion) on a random loopback port, JetStream on.
// Without a nats-server the test is skipped, or fails when the CI
// environment variable is set (.ci/run installs Debian's package); with
// another version it is skipped. The process is stopped by t.Cleanup; its
// log reaches the test log if the test fails.
func StartSystemServer(t testing.TB, want string) *SystemServer {
	t.Helper()
	return StartSystemServerWith(t, want, SystemServerOptions{})
}

// SystemServerOptions add to the server StartSystemServerWith starts.
type SystemServerOptions struct {
	// Config is the text of a configuration file (nats-server -c), e.g.
	// an authorization block. Listen address, JetStream and its store
	// stay the ones StartSystemServer sets.
	Config string
	// Env is added to the process's environment (KEY=VALUE), for the
	// $VARIABLES of Config.
	Env []string
}

// StartSystemServerWith is StartSystemServer with a configuration file
// and environment.
func StartSystemServerWith(t testing.TB, want string, o SystemServerOptions) *SystemServer {
	t.Helper()
	bin, version := findSystemServer()
	if bin == "" {
		msg := "natstest: no nats-server installed (apt-get install nats-server; Debian 12's is " + DebianServerVersion + ")"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if version != want {
		t.Skipf("natstest: %s is nats-server %s, this test needs %s", bin, version, want)
	}
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	s := &SystemServer{
		URL:     "nats://127.0.0.1:" + strconv.Itoa(ports[0]),
		Version: version,
		bin:     bin,
		args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(ports[0]), "-n", "natstest-system",
			"-js", "-sd", t.TempDir()},
		log: &SyncBuffer{},
		env: o.Env,
	}
	if o.Config != "" {
		conf := filepath.Join(t.TempDir(), "nats-server.conf")
		if err := os.WriteFile(conf, []byte(o.Config), 0o600); err != nil {
			t.Fatal(err)
		}
		s.args = append(s.args, "-c", conf)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server %s log:\n%s", version, s.log.String())
		}
	})
	s.start(t)
	t.Cleanup(s.Stop)
	return s
}

// findSystemServer returns the first nats-server binary of the system
// paths and PATH, with the version it reports; "" when there is none.
func findSystemServer() (bin, version string) {
	candidates := append([]string(nil), systemServerPaths...)
	if p, err := exec.LookPath("nats-server"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		out, err := exec.Command(p, "--version").Output()
		if err != nil {
			continue
		}
		// "nats-server: v2.9.10"
		v := strings.TrimSpace(string(out))
		if i := strings.LastIndex(v, " "); i >= 0 {
			v = v[i+1:]
		}
		return p, strings.TrimPrefix(v, "v")
	}
	return "", ""
}

func (s *SystemServer) start(t testing.TB) {
	t.Helper()
	from := len(s.log.String()) // a restart's log follows the last run's
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.Env = append(os.Environ(), s.env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("natstest: start %s: %v", s.bin, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(s.done)
	addr := strings.TrimPrefix(s.URL, "nats://")
	err := Poll(10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-s.done:
			return fmt.Errorf("exited: %s", s.log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		c.Close()
		// JetStream is ready once the server says so.
		if !strings.Contains(s.log.String()[from:], "Server is ready") {
			return fmt.Errorf("not ready yet")
		}
		return nil
	})
	if err != nil {
		s.Stop()
		t.Fatalf("natstest: nats-server %s on %s: %v", s.Version, s.URL, err)
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for
// it to exit. It is idempotent.
func (s *SystemServer) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Restart stops the server and starts it again on the same port with the
// same store.
func (s *SystemServer) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}
