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
// Scenarios (each asserts, for every subscriber, lost = duplicated =
// reordered = unexpected = 0 and no herald.gap unless the scenario is
// about one):
//
//   - TestEdgeKilled: kill -9 of an edge mid-stream, then SIGTERM (graceful
//     drain) of a second one; their clients resume on the others;
//   - TestNATSNodeKilled: kill -9 of the NATS node leading the history
//     stream, with an edge connected to it, and its restart;
//   - TestEdgeNATSPartition: an edge's links to NATS cut for 5 s; with
//     HERALD_E2E_LONG=1 also a 30 s black hole, 100 ms of delay and a 30 s
//     cut; the last fault heals after the publishers stopped, so only the
//     edge's own resync can deliver what it missed;
//   - TestSlowClient: clients that stop reading are closed as slow and
//     recover the gap on reconnect;
//   - TestOfflineBeyondRetention: a client away longer than the retention
//     gets herald.gap (expired), malformed and foreign-epoch ids get
//     herald.gap (malformed, epoch);
//   - TestClusterKilled: kill -9 of every NATS node at once, with
//     sync_interval always and with the default;
//   - TestCheckerCatchesLossyResume: a control: a subscriber that resumes
//     from a position ahead of its last event is reported with lost events;
//   - TestPresenceEdgeKilled (presence_test.go): 3 edges with Pode.Web's
//     settings, kill -9 of one: lookups stop reporting its clients at
//     once, one edge_lost disconnect per connection appears within
//     -presence-lost-after plus a heartbeat and never twice, a clean close
//     has one disconnect, and a Pode.Web-style page reconnecting to another
//     edge keeps its clientId and receives what was sent to it meanwhile.
//
// regressions_test.go holds the minimal reproductions of the defects this
// suite found, all fixed, which now run as regression tests.
//
// go test -short shortens every phase; HERALD_E2E_LONG=1 lengthens the
// fault phases (about 5 minutes in all); HERALD_E2E_OUT=<dir> keeps the
// checker reports (JSON), the raw histories, the process logs and a
// summary there; HERALD_E2E_SKIP=1 skips the suite. Under -race the edge
// binary is built with the race detector too, and a race or panic in its
// log fails the scenario.
//
// The suite leaves no process behind: every process is started in its own
// process group, killed in t.Cleanup, and TestMain checks that none of
// the started process ids is still alive.
package e2e
