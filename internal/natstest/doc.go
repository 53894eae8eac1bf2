// Package natstest is the test support every package of Herald shares.
//
// Real NATS servers: a single JetStream node (StartServer), an n-node
// JetStream cluster with full-mesh routes (StartCluster) whose nodes can be
// stopped and restarted with the same ports and store for fault tests, and
// a client connected to either (Connect, Cluster.Connect).
//
// Waiting without sleeping: Eventually polls a condition, CheckFor polls a
// function until it returns nil and reports its last error, Poll does the
// same without a test.
//
// And: SyncBuffer, a buffer safe for concurrent writers (log sinks),
// RequireNoServer, the guard that a package compiles no NATS server, and
// RecordLifecycle, which records the edges' lifecycle events.
//
// Files: natstest.go (StartServer, Connect), cluster.go (StartCluster),
// poll.go, buffer.go, deps.go, lifecycle.go.
//
// Everything started here is shut down by t.Cleanup. Server warnings and
// errors are kept in memory and written to the test log only when the test
// fails.
package natstest
