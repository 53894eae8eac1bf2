package broker

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// Interest is the edge-side subscription manager. It holds one NATS
// subscription per subject for as long as at least one local connection
// needs it: the first Acquire subscribes, the last Release unsubscribes.
//
// Every subscription delivers into one channel, so a single reader sees
// messages in the order the server sent them, across all subjects. That
// keeps an event to a name and a later close of one client in order.
// nats.go re-establishes subscriptions after a reconnect by itself.
type Interest struct {
	nc *nats.Conn
	ch chan *nats.Msg

	mu   sync.Mutex
	subs map[string]*interestSub // guarded by mu
}

type interestSub struct {
	sub  *nats.Subscription
	refs int
}

// NewInterest returns an Interest that delivers every message to ch.
func NewInterest(nc *nats.Conn, ch chan *nats.Msg) *Interest {
	return &Interest{nc: nc, ch: ch, subs: make(map[string]*interestSub)}
}

// Acquire adds a reference to subject, subscribing on the first one.
func (in *Interest) Acquire(subject string) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.subs[subject]; ok {
		s.refs++
		return nil
	}
	sub, err := in.nc.ChanSubscribe(subject, in.ch)
	if err != nil {
		return fmt.Errorf("broker: subscribe %q: %w", subject, err)
	}
	// The channel bounds pending messages; disable the per-subscription
	// limits so that overflow shows up in one place.
	_ = sub.SetPendingLimits(-1, -1)
	in.subs[subject] = &interestSub{sub: sub, refs: 1}
	return nil
}

// Release drops a reference to subject, unsubscribing on the last one.
// Releasing a subject that is not held does nothing.
func (in *Interest) Release(subject string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	s, ok := in.subs[subject]
	if !ok {
		return
	}
	s.refs--
	if s.refs > 0 {
		return
	}
	delete(in.subs, subject)
	_ = s.sub.Unsubscribe() // fails only when the connection is closed, which drops it anyway
}

// Refs returns the reference count of subject (0 when not subscribed).
func (in *Interest) Refs(subject string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.subs[subject]; ok {
		return s.refs
	}
	return 0
}

// Len returns the number of subjects currently subscribed.
func (in *Interest) Len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.subs)
}

// Owns reports whether sub is one of this Interest's subscriptions.
func (in *Interest) Owns(sub *nats.Subscription) bool {
	if sub == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	s, ok := in.subs[sub.Subject]
	return ok && s.sub == sub
}

// Close unsubscribes everything.
func (in *Interest) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, s := range in.subs {
		_ = s.sub.Unsubscribe()
		delete(in.subs, k)
	}
}
