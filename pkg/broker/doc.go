// Package broker is everything in Herald that talks to NATS as a client:
// the subject scheme and its token escaping, the event envelope, the
// publisher SDK, the edge-side subscription manager and the history stream
// (JetStream). It knows nothing of HTTP.
//
// A producer that imports it compiles nats.go, not a NATS server. The
// embedded NATS server lives in package
// github.com/herald-push/herald/pkg/natsserver: natsserver.Config,
// natsserver.Start and *natsserver.Server take the place of this package's
// EmbeddedConfig, StartEmbedded and *Embedded, with the same fields,
// methods and behaviour; its constants drop "Embedded" from their names
// (DefaultPort, StartTimeout, RandomPort) and its Validate reports a
// *natsserver.ConfigError.
//
// The data path: a producer publishes an event to
// herald.ev.<name>.<group>.<clientId> (with "_" meaning "any"); every edge
// holding a matching connection has a subscription on that subject and
// writes the event to its clients.
package broker
