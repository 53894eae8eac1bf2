package charttest

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopSharedAPIServer()
	for _, d := range tmpRoots {
		os.RemoveAll(d)
	}
	if code == 0 {
		if err := goleak.Find(
			// The thread that forks every child process (spawn_test.go).
			goleak.IgnoreTopFunction("github.com/herald-push/herald/helm/test.init.0.func1"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
