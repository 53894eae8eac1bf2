// Package broker is everything in Herald that touches NATS: the subject
// scheme and its token escaping, the event envelope, the publisher SDK, the
// edge-side subscription manager, and the embedded NATS server helper.
// It knows nothing of HTTP.
//
// The data path: a producer publishes an event to
// herald.ev.<name>.<group>.<clientId> (with "_" meaning "any"); every edge
// holding a matching connection has a subscription on that subject and
// writes the event to its clients.
package broker
