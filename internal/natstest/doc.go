// Package natstest starts real embedded NATS servers and clusters for tests:
// a single JetStream node (StartServer), an n-node JetStream cluster with
// full-mesh routes (StartCluster) whose nodes can be stopped and restarted
// with the same ports and store for fault tests, and a polling helper
// (Eventually) so tests wait on conditions instead of sleeping, and a guard
// (RequireNoServer) that a package compiles no NATS server.
//
// Everything started here is shut down by t.Cleanup. Server warnings and
// errors are kept in memory and written to the test log only when the test
// fails.
package natstest
