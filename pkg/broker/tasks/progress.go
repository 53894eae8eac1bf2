package tasks

import (
	"context"
	"math"
	"sync"
	"time"
)

// Progress is a task's progress, as Pode's Set-PodeAsyncRouteProgress
// computes it: Range then Tick, Set, or Timed. Values stay below 100 until
// the task completes; completion sends the final 100. Each change is
// reported to the edges, which record it and publish pode.progress.
// Values are whole numbers unless Decimal was called.
type Progress struct {
	t       *Task
	mu      sync.Mutex
	value   float64
	step    float64
	decimal bool
}

// maxProgress is the value a task reaches when it completes.
const maxProgress = 100

// Decimal makes the progress a decimal number (Pode's -UseDecimalProgress):
// steps are not rounded down and the cap is 99.99 rather than 99.
func (p *Progress) Decimal() {
	p.mu.Lock()
	p.decimal = true
	p.mu.Unlock()
}

// Range sets the size of one Tick so that (end-start)/steps ticks, rounded
// up, take the progress from its current value to 100, and reports the
// current value (Pode's -Start -End -Steps).
func (p *Progress) Range(ctx context.Context, start, end, steps float64) error {
	p.mu.Lock()
	if steps <= 0 {
		steps = 1
	}
	ticks := math.Ceil((end - start) / steps)
	if ticks < 1 {
		ticks = 1
	}
	p.step = (maxProgress - p.value) / ticks
	if !p.decimal {
		p.step = math.Floor(p.step)
	}
	v := p.value
	p.mu.Unlock()
	return p.send(ctx, v)
}

// Tick adds one step (Range) and reports the new value, capped below 100.
func (p *Progress) Tick(ctx context.Context) error {
	p.mu.Lock()
	p.value = p.capped(p.value + p.step)
	v := p.value
	p.mu.Unlock()
	return p.send(ctx, v)
}

// Set sets the progress to v (capped below 100) and reports it.
func (p *Progress) Set(ctx context.Context, v float64) error {
	p.mu.Lock()
	if !p.decimal && v != math.Trunc(v) {
		p.decimal = true // Pode: a value with a fraction makes the progress decimal
	}
	p.value = p.capped(max(v, 0))
	v = p.value
	p.mu.Unlock()
	return p.send(ctx, v)
}

// Value returns the current progress.
func (p *Progress) Value() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.value
}

// Timed advances the progress on its own, one step every interval, so
// that it reaches the cap after duration (Pode's -DurationSeconds
// -IntervalSeconds). It stops at the cap, when ctx ends, or when the
// returned function is called.
func (p *Progress) Timed(ctx context.Context, duration, interval time.Duration) (stop func()) {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	p.mu.Lock()
	ticks := math.Max(1, math.Ceil(float64(duration)/float64(interval)))
	p.step = (maxProgress - p.value) / ticks
	if !p.decimal {
		p.step = math.Floor(p.step)
	}
	p.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if p.Tick(ctx) != nil || p.Value() >= p.capped(maxProgress) {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// capped keeps v below 100: 99, or 99.99 for a decimal progress.
func (p *Progress) capped(v float64) float64 {
	if v < maxProgress {
		return v
	}
	if p.decimal {
		return maxProgress - 0.01
	}
	return maxProgress - 1
}

func (p *Progress) send(ctx context.Context, v float64) error {
	if p.t == nil {
		return nil
	}
	_, err := p.t.report(ctx, Report{Progress: &v})
	return err
}
