package broker_test

import (
	"testing"

	"github.com/herald-push/herald/internal/natstest"
)

// A producer importing the SDK compiles nats.go, never a NATS server.
func TestNoServerInDeps(t *testing.T) {
	natstest.RequireNoServer(t, ".")
}
