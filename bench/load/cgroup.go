package load

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CPUBudget caps a process at a fraction of one CPU with a Linux cgroup
// (the CFS bandwidth controller: quota per period), so that several
// servers on one machine each get their own CPU budget, as on separate
// machines. It needs write access to the cgroup file system (root, or a
// delegated subtree); both cgroup v2 (cpu.max) and v1 (cpu.cfs_quota_us)
// are supported.
type CPUBudget struct {
	dir string
}

// budgetPeriod is the CFS period. A short one keeps a throttled server's
// pauses short (at most period × (1 - share)), so latency reflects the
// budget rather than 100 ms stalls.
const budgetPeriod = 10_000 // microseconds

// LimitCPU moves process pid into a new cgroup limited to cpus CPUs (e.g.
// 0.25). name labels the cgroup; Release removes it.
func LimitCPU(pid int, cpus float64, name string) (*CPUBudget, error) {
	if cpus <= 0 {
		return nil, errors.New("load: CPU budget must be positive")
	}
	quota := int(cpus * budgetPeriod)
	dir, v2, err := cgroupRoot()
	if err != nil {
		return nil, err
	}
	dir = filepath.Join(dir, fmt.Sprintf("herald-bench-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("load: CPU budget: %w", err)
	}
	b := &CPUBudget{dir: dir}
	var werr error
	if v2 {
		werr = os.WriteFile(filepath.Join(dir, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, budgetPeriod)), 0)
	} else {
		werr = errors.Join(
			os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte(strconv.Itoa(budgetPeriod)), 0),
			os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(strconv.Itoa(quota)), 0))
	}
	if werr == nil {
		werr = os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	}
	if werr != nil {
		b.Release()
		return nil, fmt.Errorf("load: CPU budget: %w", werr)
	}
	return b, nil
}

// Release removes the cgroup. The limited process should have exited;
// a live one is moved back to the root group first.
func (b *CPUBudget) Release() {
	if b == nil {
		return
	}
	if procs, err := os.ReadFile(filepath.Join(b.dir, "cgroup.procs")); err == nil {
		root := filepath.Dir(b.dir)
		for _, p := range strings.Fields(string(procs)) {
			_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(p), 0)
		}
	}
	_ = os.Remove(b.dir)
}

// cgroupRoot finds where a CPU-limited cgroup can be created: the cgroup
// v2 hierarchy at /sys/fs/cgroup when it offers the cpu controller to its
// children, else the v1 cpu hierarchy.
func cgroupRoot() (dir string, v2 bool, err error) {
	if ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control"); err == nil {
		if slices.Contains(strings.Fields(string(ctl)), "cpu") {
			return "/sys/fs/cgroup", true, nil
		}
	}
	for _, d := range []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"} {
		if _, err := os.Stat(filepath.Join(d, "cpu.cfs_quota_us")); err == nil {
			return d, false, nil
		}
	}
	return "", false, errors.New("load: no writable cgroup CPU controller (needs cgroup v2 with cpu delegated, or v1's cpu hierarchy)")
}

// Throttled returns how many periods the group's processes were stopped
// for having spent their budget (nr_throttled in cpu.stat).
func (b *CPUBudget) Throttled() (int64, error) {
	st, err := os.ReadFile(filepath.Join(b.dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "nr_throttled "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("load: no nr_throttled in cpu.stat")
}
