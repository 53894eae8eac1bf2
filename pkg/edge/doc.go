// Package edge is Herald's HTTP edge: it turns requests into SSE and
// WebSocket connections, keeps a registry of them, and fans every event
// the broker's feed brings in out to the matching connections. It speaks
// no NATS itself: the broker receives (broker.Feed), publishes
// (broker.Publisher) and knows the history stream (broker.HistoryWatch).
//
// A request becomes a connection:
//
//	sse.go        request → identity (name, group, clientId; signing) → conn; start and begin
//	auth.go       who may connect: authorize (open, token, backend) → the identity granted; refusals; token expiry
//	local.go      Local (request-scoped) connections: one backend request, its events through the outbox, then pode.close
//	ws.go         WebSocket upgrade (origin check, same identity rules) → conn with a WebSocket transport
//	edge.go       register: registry + the feed's interest for the conn's address; Shutdown; the pinger
//	registry.go   the local index by name, group and clientId
//
// An event reaches a socket:
//
//	fanout.go     the feed's handler: a decoded message → policy check → one frame per format → every matching conn
//	outbox.go     each conn's queue: every frame enters through its verbs and meets one bound; one writer at a time
//	writers.go    the writer pool: non-blocking writev of queued frames, one goroutine per CPU
//	frame.go      the SSE and WebSocket message formats (Pode-compatible, injection-safe)
//	resume.go     history on: positions, gap detection, replays, herald.gap
//	sticky.go     routes that keep clientIds: the proof in Last-Event-ID, one id-only frame per write batch
//
// And the rest:
//
//	conn.go       the connection and its transports
//	close.go      the one table of close reasons
//	publish.go    POST /publish for producers without NATS
//	presence.go   who is connected: lifecycle events, GET /presence, Pode's header check, Pode.Web's sse-close
//	ws_inbound.go client messages → validated → herald.in.<name>.<group>.<clientId>; Pode's opt-in echo
//	config.go     Config, its defaults and its validation
//	metrics.go    the Prometheus metrics
//
// Async tasks (Pode's async routes; the NATS side is package broker/tasks):
//
//	tasks.go       task routes: configuration, start, read, stop, Pode's task info JSON
//	tasks_sse.go   a task's stream, <path>_events?Id=<id>: identity from the task, late attach
//	tasks_query.go Pode's task query filter
package edge
