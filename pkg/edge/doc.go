// Package edge is Herald's HTTP edge: it turns requests into SSE and
// WebSocket connections, keeps a registry of them, holds NATS interest for
// exactly the identities it serves, and fans each NATS message out to the
// matching connections.
//
// The data path, file by file:
//
//	sse.go      request → identity (name, group, clientId; signing) → conn
//	registry.go conn → local index + reference-counted NATS interest
//	fanout.go   NATS message → policy check → one encoded frame → every matching conn
//	conn.go     per-connection bounded queue and one writer at a time that coalesces writes
//	writers.go  the writer pool: non-blocking writev of queued frames, one goroutine per CPU
//	frame.go    the SSE wire format (Pode-compatible, injection-safe)
//	close.go    the one table of close reasons
//	publish.go  POST /publish for producers without NATS
//	ws.go       WebSocket upgrade (origin check, same identity rules) → conn with a WebSocket transport
//	ws_inbound.go client messages → validated → herald.in.<name>.<group>.<clientId>; Pode's opt-in echo
package edge
