package scale

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain serves as an edge worker when re-executed as one (the
// coordinator starts this test binary again), and otherwise runs the tests
// with a goroutine-leak check.
func TestMain(m *testing.M) {
	if IsWorker() {
		if err := ServeWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "scale worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
