package app_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/natstest"
)

// goRunStart bounds how long go run may take to build and start
// cmd/embedded (a cold build cache compiles the NATS server).
const goRunStart = 5 * time.Minute

var (
	servingURL = regexp.MustCompile(`msg=serving url=http://(127\.0\.0\.1:\d+)`)
	natsURL    = regexp.MustCompile(`msg="embedded NATS server started" client_url=nats://(127\.0\.0\.1:\d+)`)
)

// TestGoRunStops starts cmd/embedded as README's "Run it" does, with go run
// (on free ports), and stops it the two ways README names: Ctrl-C, which a
// terminal sends to its foreground process group (the go command and the
// server), and a signal to the go run process alone, which the go command
// does not pass on. Either way the server shuts down in order, releases its
// ports and exits.
func TestGoRunStops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("finds the server process through /proc")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the go command is not on PATH")
		}
		t.Skip("the go command is not on PATH")
	}
	tests := []struct {
		name      string
		stop      func(goPID int) error
		wantCause string
	}{
		{"ctrl-c to the process group", func(pid int) error { return syscall.Kill(-pid, syscall.SIGINT) },
			"interrupt signal received"},
		{"kill of go run alone", func(pid int) error { return syscall.Kill(pid, syscall.SIGTERM) },
			"the go run command that started this process exited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"run"}
			if raceEnabled {
				args = append(args, "-race") // reuses the packages this test build compiled
			}
			args = append(args, "./cmd/embedded", "-listen", "127.0.0.1:0", "-nats-listen", "127.0.0.1:0",
				"-data", t.TempDir(), "-publish-token", "go-run-test-token", "-shutdown-grace", "5s")
			logFile, err := os.Create(filepath.Join(t.TempDir(), "embedded.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logFile.Close()
			cmd := exec.Command(goBin, args...)
			cmd.Dir = filepath.Join("..", "..")
			// A file, not a pipe: the server keeps writing it after go run
			// has gone, and Wait does not wait for the server.
			cmd.Stdout, cmd.Stderr = logFile, logFile
			// Its own process group, as a terminal gives a job; the server
			// stays in it after go run has gone, so cleanup reaches it.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			goExited := make(chan struct{}) // closed once go run has exited and been reaped
			go func() {
				_ = cmd.Wait()
				close(goExited)
			}()
			t.Cleanup(func() {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-goExited
			})
			readLog := func() string {
				b, _ := os.ReadFile(logFile.Name())
				return string(b)
			}
			defer func() {
				if t.Failed() {
					t.Log(readLog())
				}
			}()

			var httpAddr, natsAddr string
			natstest.Eventually(t, goRunStart, func() bool {
				select {
				case <-goExited:
					t.Fatal("go run exited before serving")
				default:
				}
				out := readLog()
				m, n := servingURL.FindStringSubmatch(out), natsURL.FindStringSubmatch(out)
				if m == nil || n == nil {
					return false
				}
				httpAddr, natsAddr = m[1], n[1]
				return true
			}, "go run serving")
			server := childOf(t, cmd.Process.Pid)

			if err := tt.stop(cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			select {
			case <-goExited:
			case <-time.After(30 * time.Second):
				t.Fatal("go run did not exit within 30s")
			}
			natstest.Eventually(t, 30*time.Second, func() bool { return exited(server) }, "the server process exited")
			for _, addr := range []string{httpAddr, natsAddr} {
				if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					c.Close()
					t.Errorf("%s still accepts connections", addr)
				}
			}
			out := readLog()
			if !strings.Contains(out, `msg="shutting down" cause="`+tt.wantCause+`"`) {
				t.Errorf("no shutdown with cause %q logged", tt.wantCause)
			}
			if !strings.Contains(out, `msg=stopped step="embedded nats server"`) {
				t.Error("the shutdown did not reach its last step")
			}
		})
	}
}

// childOf returns the pid of the one child of the process ppid.
func childOf(t *testing.T, ppid int) int {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var children []int
	for _, f := range stats {
		pid, p, ok := procStat(f)
		if ok && p.ppid == ppid {
			children = append(children, pid)
		}
	}
	if len(children) != 1 {
		t.Fatalf("go run (pid %d) has children %v, want the server alone", ppid, children)
	}
	return children[0]
}

// exited reports whether the process is gone, or a zombie nobody reaped
// yet (its parent may be an init that does not reap).
func exited(pid int) bool {
	_, p, ok := procStat("/proc/" + strconv.Itoa(pid) + "/stat")
	return !ok || p.state == "Z"
}

type procInfo struct {
	state string
	ppid  int
}

// procStat reads a /proc/<pid>/stat file: "pid (comm) state ppid ...",
// where comm may hold spaces and parentheses.
func procStat(path string) (int, procInfo, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, procInfo{}, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return 0, procInfo{}, false
	}
	pid, err1 := strconv.Atoi(strings.TrimSpace(s[:open]))
	fields := strings.Fields(s[end+1:])
	if err1 != nil || len(fields) < 2 {
		return 0, procInfo{}, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return 0, procInfo{}, false
	}
	return pid, procInfo{state: fields[0], ppid: ppid}, true
}
