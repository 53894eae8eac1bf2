package ratelog

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &Limiter{Every: 10 * time.Second}
		if !l.Allow("a") || l.Allow("a") {
			t.Fatal("want the first event of a kind through and the second held")
		}
		if !l.Allow("b") {
			t.Fatal("another kind has its own interval")
		}
		time.Sleep(10 * time.Second)
		if !l.Allow("a") {
			t.Fatal("want an event through once the interval has passed")
		}
	})
	var zero Limiter
	for i := range 3 {
		if !zero.Allow("x") {
			t.Fatalf("the zero Limiter held event %d", i)
		}
	}
}
