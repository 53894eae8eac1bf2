// Package load is the library behind herald-bench: SSE clients by the
// thousand (raw HTTP/1.1 over TCP, spread over loopback source addresses
// when one address runs out of ports), a byte-level SSE reader for the hot
// receive loop, per-client sequence accounting (delivered, duplicates,
// reordering), an HDR-style latency histogram, publishers (NATS and HTTP
// with a body template), fleets of worker processes for runs larger than
// one process's file limit, and a manager for Herald server processes
// (build, start on random loopback ports, read RSS and CPU from /proc).
//
// Payloads carry a step, a sequence number and a send timestamp taken on
// the same machine clock as the receive time, so latency is measured end
// to end: publish call to the event parsed by the client.
package load
