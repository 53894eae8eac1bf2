package load

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Usage is a process's resource use at one moment.
type Usage struct {
	RSS     int64         `json:"rss_bytes"` // resident set (VmRSS)
	CPU     time.Duration `json:"cpu_ns"`    // user + system time since start
	Threads int           `json:"threads"`
	FDs     int           `json:"fds"`
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Herald runs on.
const clockTick = 100

// ReadUsage reads pid's RSS from /proc/<pid>/status and CPU time from
// /proc/<pid>/stat (pid 0 means this process).
func ReadUsage(pid int) (Usage, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var u Usage
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return u, err
	}
	for _, line := range bytes.Split(status, []byte{'\n'}) {
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			u.RSS = kib(line) << 10
		case bytes.HasPrefix(line, []byte("Threads:")):
			u.Threads = int(kib(line))
		}
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return u, err
	}
	// The command name (field 2) may contain spaces: fields are counted
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("load: malformed " + dir + "/stat")
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return u, errors.New("load: short " + dir + "/stat")
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("load: %s/stat: %w", dir, err)
	}
	u.CPU = time.Duration(utime+stime) * time.Second / clockTick
	if ents, err := os.ReadDir(dir + "/fd"); err == nil {
		u.FDs = len(ents)
	}
	return u, nil
}

// kib parses the number of a /proc status line ("VmRSS:   1234 kB").
func kib(line []byte) int64 {
	f := bytes.Fields(line)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(string(f[1]), 10, 64)
	return n
}

// RaiseFileLimit raises this process's soft RLIMIT_NOFILE to the hard
// limit and returns the new soft limit.
func RaiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}

// CPUStat is the machine-wide CPU time from the first line of /proc/stat,
// in clock ticks.
type CPUStat struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// ReadCPUStat reads /proc/stat.
func ReadCPUStat() (CPUStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUStat{}, err
	}
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return CPUStat{}, errors.New("load: malformed /proc/stat")
	}
	var v [8]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(string(f[i+1]), 10, 64)
	}
	return CPUStat{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
}

// MachineLoad is how busy the whole machine was between two CPUStats, as
// fractions of all CPUs' time.
type MachineLoad struct {
	Busy    float64 `json:"busy"`    // everything but idle and iowait
	SoftIRQ float64 `json:"softirq"` // network processing not charged to any process
	Steal   float64 `json:"steal"`   // taken by the hypervisor for other guests
}

// Since returns the machine load from a to s.
func (s CPUStat) Since(a CPUStat) MachineLoad {
	d := func(x, y uint64) float64 { return float64(x - y) }
	total := d(s.User, a.User) + d(s.Nice, a.Nice) + d(s.System, a.System) + d(s.Idle, a.Idle) +
		d(s.IOWait, a.IOWait) + d(s.IRQ, a.IRQ) + d(s.SoftIRQ, a.SoftIRQ) + d(s.Steal, a.Steal)
	if total <= 0 {
		return MachineLoad{}
	}
	idle := d(s.Idle, a.Idle) + d(s.IOWait, a.IOWait)
	return MachineLoad{Busy: 1 - idle/total, SoftIRQ: d(s.SoftIRQ, a.SoftIRQ) / total, Steal: d(s.Steal, a.Steal) / total}
}
