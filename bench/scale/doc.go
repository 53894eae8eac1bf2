// Package scale measures what Herald's NATS interest costs a clustered
// deployment and extrapolates it to a large one (1M connections over 50
// edges on a 3-node cluster, by default).
//
// Everything runs on real parts: nats-server processes built from the
// version in go.mod, joined by routes on loopback (each node's inbound
// route connections pass through a counting proxy, so route traffic is
// measured on the wire, by protocol operation), and "edges" that are
// worker processes holding a NATS connection and a broker.Interest, the
// edge's own subscription manager, subscribing exactly the subjects
// pkg/edge registers for a connection. Subscriptions do not need a TCP
// connection each, so a few edge processes stand in for many.
//
// Phases (each on a fresh cluster):
//
//   - interest: server memory (RSS and live heap after a forced GC) of
//     every node at increasing subscription counts, then reconnect storms
//     that move clients between edges on different nodes: route bytes and
//     operations, time to settle and server CPU per churned subscription.
//     Both interest designs: Herald's literal per-client subjects, and
//     sharded subjects (an edge subscribes to hash(clientId) mod S shards
//     as a set and drops what it does not hold).
//   - fanout: per targeted message, the server's and the edges' CPU when
//     every message reaches one edge (literal) or every edge holding the
//     shard (sharded).
//   - republish: acknowledged publishes into the history stream at R3
//     (pkg/broker's stream configuration), delivered to the edges through
//     RePublish: throughput, ack latency, CPU per message.
//   - replay: resume storms through broker.History.Replay (ordered
//     consumers on R3, batched direct gets on R1): server CPU per replay.
//
// The model (model.go) turns the measured unit costs into the estimate for
// the target deployment. Run it with `herald-bench scale`; bench/README.md
// ("Scale model") holds the method, the figures and the recommendation.
package scale
