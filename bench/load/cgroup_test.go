package load

import (
	"os/exec"
	"testing"
	"time"
)

// A busy process given a fifth of a CPU is throttled by the kernel.
func TestLimitCPU(t *testing.T) {
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	b, err := LimitCPU(cmd.Process.Pid, 0.2, "test")
	if err != nil {
		t.Skipf("no cgroup CPU control here: %v", err)
	}
	defer b.Release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := b.Throttled()
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a busy loop with a 0.2 CPU budget was never throttled")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
