// Package e2e runs Herald as it runs in production — separate processes on
// loopback — and injects faults while publishers and subscribers record
// everything, then judges the record with package checker.
//
// Each scenario builds, from binaries compiled once per test run:
//
//   - 3 nats-server processes (JetStream, a cluster with routes, each with
//     its own store directory and config file);
//   - 2 or 3 cmd/edge processes with -history-replicas 3, each reaching
//     every NATS node through its own faultproxy, so an edge's link to
//     NATS can be cut, delayed or black-holed while the edge keeps
//     running;
//   - publishers (JetStream publishes with a message id, each recorded as
//     ok, fail or unknown) writing unique {"p":publisher,"n":counter}
//     values;
//   - SSE and WebSocket (herald.v1) subscribers that record every event and,
//     when a connection ends, reconnect to another edge after a short
//     jittered backoff with the last event id they saw, as a browser's
//     EventSource does.
//
// Scenarios: kill -9 of an edge; kill -9 of a NATS node and its restart;
// edge↔NATS cut (and, with HERALD_E2E_LONG=1, longer cuts and a black
// hole); a slow client closed by the edge; a client away longer than the
// retention. Each asserts that resumed clients lost nothing, received
// nothing twice and nothing out of order, or were told with herald.gap.
//
// go test -short shortens every phase; HERALD_E2E_LONG=1 lengthens the
// fault phases; HERALD_E2E_OUT=<dir> keeps the checker reports (JSON) and
// process logs there; HERALD_E2E_SKIP=1 skips the suite.
//
// The suite leaves no process behind: every process is started in its own
// process group, killed in t.Cleanup, and TestMain checks that none of
// the started process ids is still alive.
package e2e
