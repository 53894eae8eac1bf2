package tasks_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/herald-push/herald/pkg/broker/tasks"
)

// Pode's progress arithmetic (Set-PodeAsyncRouteProgress), on a Progress
// that reports nowhere: the docs' example -Start 0 -End 100 -Steps 5 then
// 21 ticks gives 5, 10, …, 95, 99, 99; decimals cap at 99.99; a value with
// a fraction makes the progress decimal.
func TestProgressArithmetic(t *testing.T) {
	ctx := context.Background()
	var p tasks.Progress
	if err := p.Range(ctx, 0, 100, 5); err != nil {
		t.Fatal(err)
	}
	var got []float64
	for range 21 {
		_ = p.Tick(ctx)
		got = append(got, p.Value())
	}
	if got[0] != 5 || got[18] != 95 || got[19] != 99 || got[20] != 99 {
		t.Errorf("ticks %v", got)
	}

	var d tasks.Progress
	d.Decimal()
	_ = d.Range(ctx, 0, 3, 1)
	_ = d.Tick(ctx)
	if v := d.Value(); v < 33.33 || v > 33.34 {
		t.Errorf("decimal tick %v, want 33.33…", v)
	}
	for range 3 {
		_ = d.Tick(ctx)
	}
	if v := d.Value(); v != 99.99 {
		t.Errorf("decimal cap %v, want 99.99", v)
	}

	var s tasks.Progress
	_ = s.Set(ctx, 150)
	if v := s.Value(); v != 99 {
		t.Errorf("Set(150) = %v, want 99 until completion", v)
	}
	_ = s.Set(ctx, 12.5)
	if v := s.Value(); v != 12.5 {
		t.Errorf("Set(12.5) = %v", v)
	}
	_ = s.Set(ctx, 100)
	if v := s.Value(); v != 99.99 {
		t.Errorf("after a fractional value the cap is 99.99, got %v", v)
	}
}

// Timed progress advances one step per interval and stops at the cap.
func TestProgressTimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p tasks.Progress
		stop := p.Timed(context.Background(), 10*time.Second, 2*time.Second) // 5 steps of 20
		time.Sleep(4*time.Second + time.Millisecond)
		if v := p.Value(); v != 40 {
			t.Errorf("after 2 intervals: %v, want 40", v)
		}
		time.Sleep(20 * time.Second)
		if v := p.Value(); v != 99 {
			t.Errorf("after the duration: %v, want the cap 99", v)
		}
		stop()
	})
}
