package charttest

import (
	"os/exec"
	"runtime"
)

// Child processes get Pdeathsig (SIGKILL when the test process dies).
// Linux sends it when the *thread* that forked the child exits, and the
// tier-3 namespace helpers end the threads they lock. So every child is
// forked from one thread that lives as long as the process.
var spawnRequests = make(chan func())

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked: this thread forks every child
		for f := range spawnRequests {
			f()
		}
	}()
}

// startCmd starts cmd from the forking thread.
func startCmd(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	spawnRequests <- func() { errc <- cmd.Start() }
	return <-errc
}
