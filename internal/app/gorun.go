package app

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// A binary started with `go run` is a child of the go command. Ctrl-C in a
// terminal signals both (the go command ignores SIGINT and waits for its
// child), but a signal sent to the go command's pid alone — kill, timeout,
// a script stopping its background job, an editor's stop button — ends the
// go command and leaves the program running, re-parented, holding its
// ports. So when its parent is `go run`, a Herald binary also stops, in
// order as on SIGTERM, once that parent is gone. A binary started any
// other way (a shell, nohup, systemd, a container runtime) never watches
// its parent.

// parentPoll is how often the watch checks the parent: the longest a
// binary outlives its go run parent before it starts shutting down.
const parentPoll = 250 * time.Millisecond

// errGoRunExited is the shutdown cause when the go run parent is gone.
var errGoRunExited = errors.New("the go run command that started this process exited")

// watchGoRun calls stop with errGoRunExited once the process's parent, ppid
// (os.Getppid at start), has gone, if that parent is `go run`; otherwise it
// does nothing. The returned function ends the watch.
func watchGoRun(ppid int, stop context.CancelCauseFunc) (end func()) {
	if runtime.GOOS == "windows" || !isGoRun(ppid) {
		return func() {} // Windows never re-parents a process: nothing to notice
	}
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(parentPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				// A process whose parent exits is re-parented (to init or
				// a subreaper): its parent pid changes.
				if os.Getppid() != ppid {
					stop(errGoRunExited)
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

// isGoRun reports whether the process ppid is the go command running
// `go run`. Where /proc is readable it reads the parent's command line;
// elsewhere (macOS, BSDs) it looks at this program's path instead, which
// go run builds into a go-build directory (a temporary one, or the build
// cache).
func isGoRun(ppid int) bool {
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/cmdline"); err == nil {
		return goRunCmdline(b)
	}
	exe, err := os.Executable()
	return err == nil && inGoBuildDir(exe)
}

// goRunCmdline reports whether a NUL-separated command line (as in
// /proc/<pid>/cmdline) is `go run ...`, also after go's -C dir flag.
func goRunCmdline(b []byte) bool {
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) < 2 || filepath.Base(args[0]) != "go" {
		return false
	}
	i := 1
	switch {
	case args[i] == "-C" || args[i] == "--C":
		i += 2
	case strings.HasPrefix(args[i], "-C=") || strings.HasPrefix(args[i], "--C="):
		i++
	}
	return i < len(args) && args[i] == "run"
}

// inGoBuildDir reports whether path lies where the go command puts the
// programs it builds for go run: under a temporary go-build<digits>
// directory, or the build cache's go-build directory.
func inGoBuildDir(path string) bool {
	for _, elem := range strings.Split(filepath.ToSlash(filepath.Dir(path)), "/") {
		if rest, ok := strings.CutPrefix(elem, "go-build"); ok && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}
