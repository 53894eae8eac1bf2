// Command embedded runs Herald in one process: an embedded NATS server
// (JetStream on, data in a directory), an SSE and WebSocket edge on it,
// Prometheus metrics and a demo page. It needs no configuration:
//
//	go run ./cmd/embedded
//
// then open http://127.0.0.1:8080/: the demo page connects to the name
// /demo over SSE and over a WebSocket (whose messages this binary echoes
// to the name unless -ws-echo says otherwise). Publish to it with the token
// printed at startup:
//
//	curl -H "Authorization: Bearer $TOKEN" -d '{"name":"/demo","data":"hello"}' http://127.0.0.1:8080/publish
//
// or with any NATS client on nats://127.0.0.1:4222, e.g.
//
//	nats pub herald.ev./demo._._ hello
//
// The same binary grows into a cluster: give each member a unique
// -server-name, the same -cluster-name, a -cluster-listen address and the
// -routes of the others:
//
//	embedded -server-name n1 -cluster-name herald -cluster-listen 10.0.0.1:6222 \
//	    -routes nats-route://10.0.0.2:6222,nats-route://10.0.0.3:6222
//
// Every option is a flag, a HERALD_* environment variable and a key of the
// YAML file named by -config, under the same name (-publish-token,
// HERALD_PUBLISH_TOKEN, publish-token); flags win over the environment,
// which wins over the file. Run with -h for the list.
//
// On SIGINT or SIGTERM it stops in order: every client gets pode.close,
// the HTTP server stops, the NATS connection is drained and the embedded
// server shuts down, each step bounded by -shutdown-grace. Started by
// go run, it also stops that way once the go command has exited, so a
// signal to go run's pid alone stops the server too.
package main

import "github.com/herald-push/herald/internal/app"

func main() { app.Main("herald embedded", app.RunEmbedded) }
