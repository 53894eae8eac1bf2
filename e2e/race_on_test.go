//go:build race

package e2e

// raceEnabled: the test binary runs under the race detector, so the edge
// binary is built with it too, and a data race in an edge fails the run.
const raceEnabled = true
