package natstest

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
)

// LifecycleLog records the lifecycle events (connect, disconnect) a NATS
// subscriber to every lifecycle subject receives, in arrival order.
type LifecycleLog struct {
	mu     sync.Mutex
	events []broker.LifecycleEvent
	msgs   []*nats.Msg
	at     []time.Time
}

// RecordLifecycle subscribes nc to every lifecycle event of the default
// prefix and records them until the test ends. An event that does not
// decode fails the test.
func RecordLifecycle(t testing.TB, nc *nats.Conn) *LifecycleLog {
	t.Helper()
	l := &LifecycleLog{}
	sub, err := nc.Subscribe(broker.MustSubjects("").LifecycleAll(), func(m *nats.Msg) {
		ev, err := broker.DecodeLifecycle(m)
		if err != nil {
			t.Errorf("natstest: undecodable lifecycle event on %s: %v", m.Subject, err)
			return
		}
		l.mu.Lock()
		l.events, l.msgs, l.at = append(l.events, ev), append(l.msgs, m), append(l.at, time.Now())
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("natstest: subscribe to lifecycle events: %v", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		t.Fatalf("natstest: subscribe to lifecycle events: %v", err)
	}
	return l
}

// Matching returns the events f selects, in arrival order, with the
// messages that carried them and when each arrived.
func (l *LifecycleLog) Matching(f func(broker.LifecycleEvent) bool) ([]broker.LifecycleEvent, []*nats.Msg, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var evs []broker.LifecycleEvent
	var msgs []*nats.Msg
	var at []time.Time
	for i, e := range l.events {
		if f(e) {
			evs, msgs, at = append(evs, e), append(msgs, l.msgs[i]), append(at, l.at[i])
		}
	}
	return evs, msgs, at
}

// Events returns the events f selects, in arrival order.
func (l *LifecycleLog) Events(f func(broker.LifecycleEvent) bool) []broker.LifecycleEvent {
	evs, _, _ := l.Matching(f)
	return evs
}
