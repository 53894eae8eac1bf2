package charttest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/sseclient"
)

// oldestNATS is the oldest NATS Server release the chart and README
// support: 2.9 brought direct gets, message gets by subject and the
// republished previous position the edges' history needs (newer servers
// get batched direct gets). olderNATS is a release before it: the edge
// stays not ready there, naming the version it needs.
const (
	oldestNATS = "v2.9.0"
	olderNATS  = "v2.8.4"
)

// installNATS builds a nats-server release into a directory of its own.
func installNATS(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/nats-io/nats-server/v2@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install nats-server %s: %v\n%s", version, err, out)
	}
	return filepath.Join(dir, "nats-server")
}

// TestNATSVersionsSupported runs the image's edge on the oldest supported
// NATS release and on an older one: a client that reconnects with
// Last-Event-ID gets exactly what it missed on the first; on the second
// the edge stays not ready and says which version it needs, so the stated
// minimum is the real one.
func TestNATSVersionsSupported(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds two nats-server releases")
	}
	b := needImage(t)
	for _, tc := range []struct {
		version   string
		supported bool
	}{{oldestNATS, true}, {olderNATS, false}} {
		t.Run(tc.version, func(t *testing.T) {
			bin := installNATS(t, tc.version)
			port, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			nats := exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", t.TempDir())
			nats.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := startCmd(nats); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = nats.Process.Kill(); _ = nats.Wait() })

			base, logs := startImageEdge(t, b, fmt.Sprintf("nats://127.0.0.1:%d", port))
			if !tc.supported {
				// Refused plainly: not ready, and the reason names the version needed.
				err := poll(30*time.Second, func() error {
					if err := get200(base + "/readyz"); err != nil && strings.Contains(err.Error(), strings.TrimPrefix(oldestNATS, "v")) {
						return nil
					}
					return fmt.Errorf("readyz does not name %s", oldestNATS)
				})
				if err != nil {
					t.Fatalf("edge on nats-server %s: %v\n%s", tc.version, err, logs())
				}
				return
			}
			if err := poll(30*time.Second, func() error { return get200(base + "/readyz") }); err != nil {
				t.Fatalf("edge on nats-server %s not ready: %v\n%s", tc.version, err, logs())
			}
			publish := func(n int) {
				t.Helper()
				req, _ := http.NewRequest("POST", base+"/publish", strings.NewReader(fmt.Sprintf(`{"name":"v","event":"tick","data":"ev-%d"}`, n)))
				req.Header.Set("Authorization", "Bearer image-test-token")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("publish: %s", resp.Status)
				}
			}
			read := func(lastID string, n int) ([]string, string) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				h := http.Header{}
				if lastID != "" {
					h.Set("Last-Event-ID", lastID)
				}
				s, err := sseclient.Dial(ctx, http.DefaultClient, base+"/sse/v", h)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				var got []string
				id := ""
				for len(got) < n {
					ev, err := s.Next()
					if err != nil {
						break
					}
					id = ev.ID
					if ev.Type == "tick" || ev.Type == "herald.gap" {
						got = append(got, ev.Type+":"+ev.Data)
					}
					if ev.Type == "pode.open" && lastID == "" {
						publish(1)
					}
				}
				return got, id
			}
			got, last := read("", 1)
			if !slices.Equal(got, []string{"tick:ev-1"}) {
				t.Fatalf("live: %v", got)
			}
			publish(2)
			publish(3)
			resumed, _ := read(last, 2)
			want := []string{"tick:ev-2", "tick:ev-3"}
			if !slices.Equal(resumed, want) {
				t.Errorf("nats-server %s: resumed with %v, want %v\n%s", tc.version, resumed, want, logs())
			}
			t.Logf("nats-server %s: resume gave %v", tc.version, resumed)
		})
	}
}

// startImageEdge runs the image's entrypoint as the image's user against
// natsURL and returns its base URL and a function returning its log.
func startImageEdge(t *testing.T, b *builtImage, natsURL string) (string, func() string) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := imageEdgeCmd(b, natsURL, port)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := startCmd(cmd); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
	})
	var log []string
	return fmt.Sprintf("http://127.0.0.1:%d", port), func() string {
		for {
			select {
			case l := <-lines:
				log = append(log, l)
			default:
				return strings.Join(log, "\n")
			}
		}
	}
}

// imageEdgeCmd is the image's entrypoint run from the unpacked image as
// the image's user (when the test may switch users), with the image's
// environment and a publish token, against natsURL, listening on port.
func imageEdgeCmd(b *builtImage, natsURL string, port int) *exec.Cmd {
	cmd := exec.Command(filepath.Join(b.rootfs, b.config.Config.Entrypoint[0]), "-nats", natsURL, "-listen", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Env = append(slices.Clone(b.config.Config.Env), "HERALD_PUBLISH_TOKEN=image-test-token")
	cmd.Dir = b.rootfs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65532, Gid: 65532}
	}
	return cmd
}
