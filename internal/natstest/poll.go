package natstest

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Tick is how often Eventually and the cluster waits poll.
const Tick = 10 * time.Millisecond

// Eventually polls cond every Tick until it returns true, and fails the test
// if it has not within timeout. msgAndArgs describe the condition: a format
// string and its arguments, or a single func() string evaluated on failure
// (for messages that include what the last poll saw). Call it from the test
// goroutine only.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	if waitFor(timeout, cond) {
		return
	}
	msg := describe(msgAndArgs)
	t.Fatalf("natstest: not true within %v: %s", timeout, msg)
}

// CheckFor polls f every interval until it returns nil, and fails the test
// with f's last error if it has not within timeout. Call it from the test
// goroutine only.
func CheckFor(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	if err := Poll(timeout, interval, f); err != nil {
		t.Fatalf("natstest: not within %v: %v", timeout, err)
	}
}

// Poll calls f every interval until it returns nil (then Poll returns nil)
// or timeout has passed (then Poll returns f's last error). f runs at least
// once, and once more at the deadline.
func Poll(timeout, interval time.Duration, f func() error) error {
	err := f()
	if err == nil {
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-deadline.C:
			return f()
		}
		if err = f(); err == nil {
			return nil
		}
	}
}

// errNotYet is the error of a condition that does not hold yet.
var errNotYet = errors.New("condition not met")

// waitFor polls cond every Tick until it is true (true) or timeout passes (false).
func waitFor(timeout time.Duration, cond func() bool) bool {
	return Poll(timeout, Tick, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}) == nil
}

// describe renders Eventually's msgAndArgs.
func describe(msgAndArgs []any) string {
	if len(msgAndArgs) == 0 {
		return "condition not met"
	}
	switch f := msgAndArgs[0].(type) {
	case func() string:
		return f()
	case string:
		return fmt.Sprintf(f, msgAndArgs[1:]...)
	}
	return fmt.Sprint(msgAndArgs)
}
