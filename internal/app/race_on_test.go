//go:build race

package app_test

// raceEnabled: the tests run under the race detector, so the binaries they
// build use it too (and reuse the packages the test build compiled).
const raceEnabled = true
