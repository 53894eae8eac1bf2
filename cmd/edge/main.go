// Command edge runs a stateless Herald edge that joins an existing NATS
// cluster. It terminates SSE (HTTP/1.1 and HTTP/2) and WebSockets
// (/ws/{path}, and Pode-style on -ws-listen), accepts POST /publish and
// serves /healthz, /readyz and /metrics. Run as many as needed behind
// any load balancer: a client may land on any edge.
//
//	edge -nats nats://a:4222,nats://b:4222 -publish-token "$TOKEN" -listen :8080
//
// NATS credentials: -nats-creds (a .creds file), -nats-user with
// -nats-password, or -nats-token; TLS with -nats-tls-ca and optionally
// -nats-tls-cert/-nats-tls-key. The edge reconnects to NATS forever and
// reports not ready on /readyz while disconnected.
//
// Every option is a flag, a HERALD_* environment variable and a key of the
// YAML file named by -config, under the same name (-nats, HERALD_NATS,
// nats); flags win over the environment, which wins over the file. Run
// with -h for the list.
//
// On SIGINT or SIGTERM it flips /readyz, sends pode.close to every client
// (spread over -drain-window), stops the HTTP server and drains its NATS
// connection, each step bounded by -shutdown-grace. Started by go run, it
// also stops that way once the go command has exited.
package main

import "github.com/herald-push/herald/internal/app"

func main() { app.Main("herald edge", app.RunEdge) }
