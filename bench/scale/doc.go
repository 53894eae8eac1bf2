// Package scale measures what Herald's NATS interest costs a clustered
// deployment and extrapolates it to a large one (1M connections over 50
// edges on a 3-node cluster, by default).
//
// Everything runs on real parts: nats-server processes built from the
// version in go.mod, joined by routes on loopback (each node's inbound
// route connections pass through a counting proxy, so route traffic is
// measured on the wire, by protocol operation), and "edges" that are
// worker processes holding a NATS connection and reference-counted interest, the
// edge's own subscription manager, subscribing exactly the subjects
// pkg/edge registers for a connection. Subscriptions do not need a TCP
// connection each, so a few edge processes stand in for many.
//
// Phases (each on a fresh cluster):
//
//   - interest: server memory (RSS and live heap after a forced GC) of
//     every node at increasing subscription counts, then reconnect storms
//     that move clients between edges on different nodes: route bytes and
//     operations, time to settle and server CPU per churned subscription,
//     and the connection notices; then a node killed (its edges fail over)
//     and restarted (it receives the whole interest again). Both interest
//     designs: Herald's literal per-client subjects, and sharded subjects
//     (an edge subscribes to hash(clientId) mod S shards as a set and
//     drops what it does not hold).
//   - fanout: per targeted event, the servers' and the edges' CPU when
//     every event reaches one edge (literal) or every edge holding the
//     shard (sharded).
//   - republish: acknowledged publishes into the history stream at R3
//     (pkg/broker's stream configuration), delivered to the edges through
//     RePublish: throughput, ack latency, CPU per event.
//   - replay: resume storms through broker.History.Replay (ordered
//     consumers on R3, batched direct gets on R1) and, on R3, through
//     direct gets answered by any replica; with pkg/edge's replay filters
//     and with literal ones: server CPU per replay, short replays.
//
// The model (model.go) turns the measured unit costs into the estimate for
// the target deployment. Run it with `herald-bench scale`; bench/README.md
// ("Scale model") holds the method, the figures and the recommendation.
package scale
