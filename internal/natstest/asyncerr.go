package natstest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// AsyncErrors collects a NATS connection's asynchronous errors: pass
// Handler as nats.ErrorHandler. The server reports a permissions
// violation this way.
type AsyncErrors struct {
	mu   sync.Mutex
	errs []error
}

// Handler records err.
func (a *AsyncErrors) Handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err)
}

// List returns the errors recorded so far.
func (a *AsyncErrors) List() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// WaitViolation waits up to 5 s for the permissions violation that names
// subject, and fails t without it.
func (a *AsyncErrors) WaitViolation(t testing.TB, subject string) {
	t.Helper()
	Eventually(t, 5*time.Second, func() bool {
		for _, err := range a.List() {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return true
			}
		}
		return false
	}, "no permissions violation for %q", subject)
}
