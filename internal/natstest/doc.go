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
// The machine's own nats-server package (StartSystemServer): Debian 12's
// 2.9.10, the oldest server Herald supports, as a process.
//
// And: SyncBuffer, a buffer safe for concurrent writers (log sinks),
// AsyncErrors, a connection's asynchronous errors (permissions
// violations), RequireNoServer, the guard that a package compiles no
// NATS server, and RecordLifecycle, which records the edges' lifecycle
// events.
//
// Files: natstest.go (StartServer, Connect), cluster.go (StartCluster),
// system.go (StartSystemServer), poll.go, buffer.go, asyncerr.go, deps.go,
// lifecycle.go.
//
// Everything started here is shut down by t.Cleanup. Server warnings and
// errors are kept in memory and written to the test log only when the test
// fails.
package natstest
