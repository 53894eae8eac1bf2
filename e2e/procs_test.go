package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// started records every process id the suite started, so that TestMain can
// check that none is left alive.
var started struct {
	mu   sync.Mutex
	pids []int
}

// proc is one child process. Its output goes to a log file.
type proc struct {
	name string
	log  string // path of the log file

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and was reaped
	err  error         // Wait's result; read after done
}

// killGrace bounds how long a process may take to exit after SIGKILL or,
// for a graceful stop, after SIGTERM (then it is killed).
const killGrace = 10 * time.Second

// startProc starts bin with args in its own process group, logging to
// logDir/<name>.log (appended: a restarted process continues its log), and
// kills it (and its group) when the test ends.
func startProc(t testing.TB, logDir, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== %s start %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // kill the whole group
		Pdeathsig: syscall.SIGKILL, // and die with the test process if it is killed itself
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	f.Close() // the child holds its own descriptor
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	started.mu.Lock()
	started.pids = append(started.pids, cmd.Process.Pid)
	started.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.kill(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// childEnv is this process's environment without HERALD_* variables:
// the suite configures its processes with flags only, and a variable set
// for the tests (or in a developer's shell) must not change them.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group and waits until the process is
// reaped. Killing an exited process does nothing.
func (p *proc) kill() error {
	if p.exited() {
		return nil
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(killGrace):
		return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", p.name, p.pid(), killGrace)
	}
}

// stop sends SIGTERM and waits up to grace for the exit, then kills.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return errors.Join(fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, grace), p.kill())
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// logHas reports the first log line containing any of the markers.
func (p *proc) logHas(markers ...string) (string, bool) {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, m := range markers {
			if strings.Contains(line, m) {
				return line, true
			}
		}
	}
	return "", false
}

// leftAlive returns the started process ids that are still alive. Every
// process is reaped by its waiter, so a live id is a process that escaped.
func leftAlive() []int {
	started.mu.Lock()
	defer started.mu.Unlock()
	var alive []int
	for _, pid := range started.pids {
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			alive = append(alive, pid)
		}
	}
	return alive
}
