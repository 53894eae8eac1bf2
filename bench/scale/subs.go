package scale

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// interest is a worker's reference-counted subscriptions, taken into one
// channel as an edge's feed takes them (broker.Feed), but by subject: the
// scale model compares subject designs (literal per-client subjects or
// shards) that the feed's address-based interest does not express.
type interest struct {
	nc *nats.Conn
	ch chan *nats.Msg

	mu   sync.Mutex
	subs map[string]*heldSub // guarded by mu
}

type heldSub struct {
	sub  *nats.Subscription
	refs int
}

func newInterest(nc *nats.Conn, ch chan *nats.Msg) *interest {
	return &interest{nc: nc, ch: ch, subs: map[string]*heldSub{}}
}

// Acquire adds a reference to subject, subscribing on the first.
func (in *interest) Acquire(subject string) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.subs[subject]; ok {
		s.refs++
		return nil
	}
	sub, err := in.nc.ChanSubscribe(subject, in.ch)
	if err != nil {
		return fmt.Errorf("scale: subscribe %q: %w", subject, err)
	}
	_ = sub.SetPendingLimits(-1, -1) // the channel bounds what waits, as in the feed
	in.subs[subject] = &heldSub{sub: sub, refs: 1}
	return nil
}

// Release drops a reference, unsubscribing on the last.
func (in *interest) Release(subject string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	s, ok := in.subs[subject]
	if !ok {
		return
	}
	if s.refs--; s.refs > 0 {
		return
	}
	delete(in.subs, subject)
	_ = s.sub.Unsubscribe()
}

// Refs returns the references to subject.
func (in *interest) Refs(subject string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.subs[subject]; ok {
		return s.refs
	}
	return 0
}

// Len returns the number of subjects subscribed.
func (in *interest) Len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.subs)
}

// Close unsubscribes everything.
func (in *interest) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, s := range in.subs {
		_ = s.sub.Unsubscribe()
		delete(in.subs, k)
	}
}
