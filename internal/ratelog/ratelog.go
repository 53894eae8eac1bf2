// Package ratelog bounds repeated log lines: one line of each kind per
// interval, so that a flood of bad input is visible in the logs without
// filling them. Counting every occurrence is the caller's job (a metric).
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets one event of each kind through per interval. The zero value
// lets every event through; it is safe for concurrent use.
type Limiter struct {
	// Every is the interval. Zero or negative lets every event through.
	Every time.Duration

	mu   sync.Mutex
	last map[string]time.Time // guarded by mu
}

// Allow reports whether an event of kind may be logged now.
func (l *Limiter) Allow(kind string) bool {
	if l.Every <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if t, ok := l.last[kind]; ok && now.Sub(t) < l.Every {
		return false
	}
	l.last[kind] = now
	return true
}
