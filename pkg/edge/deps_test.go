package edge

import (
	"testing"

	"github.com/herald-push/herald/internal/natstest"
)

// A program embedding an edge on its own NATS connection compiles no NATS
// server.
func TestNoServerInDeps(t *testing.T) {
	natstest.RequireNoServer(t, ".")
}
