package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the suite, then fails it if a started process is still
// alive or the test process leaked goroutines, and removes the binaries.
func TestMain(m *testing.M) {
	start := time.Now()
	code := m.Run()
	if sum := summary.text(); sum != "" {
		fmt.Fprintf(os.Stderr, "e2e: checker summary\n%s", sum)
		if out := os.Getenv("HERALD_E2E_OUT"); out != "" {
			_ = os.WriteFile(filepath.Join(out, "summary.txt"), []byte(sum), 0o644)
		}
	}
	if alive := leftAlive(); len(alive) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: processes left alive: %v\n", alive)
		code = 1
	}
	probeClient.CloseIdleConnections()
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: goleak:", err)
		code = 1
	}
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	fmt.Fprintf(os.Stderr, "e2e: wall time %v\n", time.Since(start).Round(time.Millisecond))
	os.Exit(code)
}

// phases are the durations of a scenario's phases, per mode.
type phases struct {
	warm   int           // events each subscriber receives before the fault
	fault  time.Duration // how long a fault lasts
	after  int           // events each subscriber receives after healing
	drain  time.Duration // bound on the final catch-up
	rate   time.Duration // interval between one publisher's publishes
	longer bool          // HERALD_E2E_LONG=1
}

func modePhases() phases {
	switch {
	case os.Getenv("HERALD_E2E_LONG") == "1":
		return phases{warm: 1000, fault: 30 * time.Second, after: 1000, drain: 90 * time.Second, rate: 10 * time.Millisecond, longer: true}
	case testing.Short():
		return phases{warm: 100, fault: 3 * time.Second, after: 100, drain: 30 * time.Second, rate: 10 * time.Millisecond}
	default:
		return phases{warm: 200, fault: 5 * time.Second, after: 200, drain: 45 * time.Second, rate: 10 * time.Millisecond}
	}
}

// skipUnlessEnabled skips the scenario when HERALD_E2E_SKIP=1.
func skipUnlessEnabled(t *testing.T) {
	t.Helper()
	if os.Getenv("HERALD_E2E_SKIP") == "1" {
		t.Skip("HERALD_E2E_SKIP=1")
	}
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// logDir is where a test's process logs, configs, stores and reports go:
// HERALD_E2E_OUT/<test> when set (kept), else the test's temporary
// directory.
func logDir(t testing.TB) string {
	t.Helper()
	out := os.Getenv("HERALD_E2E_OUT")
	if out == "" {
		return t.TempDir()
	}
	dir := filepath.Join(out, unsafeName.ReplaceAllString(t.Name(), "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// hold lets a fault last for d: the schedule of the fault, not a wait for
// something to happen.
func hold(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}
