// Package broker is everything in Herald that touches NATS: the subject
// scheme and its token escaping, the messages and their headers, the
// publisher SDK, the edge's feed, and the history stream.
// It knows nothing of HTTP. A producer that imports it for the publisher
// compiles no NATS server (the embedded server has a package of its own).
//
// The embedded NATS server lives in package
// github.com/herald-push/herald/pkg/natsserver: natsserver.Config,
// natsserver.Start and *natsserver.Server take the place of this package's
// former EmbeddedConfig, StartEmbedded and *Embedded, with the same fields,
// methods and behaviour; its constants drop "Embedded" from their names
// (DefaultPort, StartTimeout, RandomPort) and its Validate reports a
// *natsserver.ConfigError.
//
// The data path: a producer publishes an event to
// herald.ev.<name>.<group>.<clientId> (with "_" meaning "any"), with this
// package's Publisher or any NATS client. With history on, the stream
// stores it and republishes it to herald.live.… with its position. Every
// edge holding a matching connection has joined that address on its Feed,
// which decodes the message once into a Message and hands it to the
// edge's fan-out.
//
// Files:
//
//	subject.go   the subject scheme, token escaping, the subjects of a connection
//	message.go   header names, Event, Message, and Decode: a NATS message decoded once
//	feed.go      Feed: reference-counted interest, the receive loop, resync causes
//	publisher.go Publisher: checked sends prepared once, acknowledged publishing, edges' own publishes
//	history.go   the history stream: configuration, state, replay, event ids
//	direct.go    replays by batched direct gets (one-replica streams)
//	watch.go     HistoryWatch: an edge's cached, coalesced view of the stream
//	auth.go      connect decisions by the app's backend: AuthClient (request, cache, purge), ServeAuth
//	local.go     Local streams: LocalClient and LocalStream (edge), ServeLocal and LocalWriter (backends)
//	presence.go  who is connected: request and answer types, PresenceClient (the SDK), Pode's header check
//	presence_service.go  Presence: an edge's answers, the requests it coordinates (gather from every edge)
//	lifecycle.go connect and disconnect events, their subjects and stream
//	lifecycle_watch.go  heartbeats, membership, watchers that publish a lost edge's disconnects
//	errors.go    the typed error and its stable codes
//
// Package broker/tasks runs Pode's async routes on NATS: the work queue,
// the task records, workers' reports and the Go worker SDK.
package broker
