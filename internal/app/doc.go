// Package app holds what the two Herald binaries share: options loading
// (flags, HERALD_* environment variables and an optional YAML file, under
// the same names everywhere), the NATS connection helper, the HTTP server
// runner with its ordered shutdown, the Prometheus registry, and the demo
// page served by cmd/embedded.
//
// The binaries stay thin: cmd/embedded calls [RunEmbedded] and cmd/edge
// calls [RunEdge], each with a [Runtime] describing the process (arguments,
// environment, standard error) and a context cancelled on SIGINT/SIGTERM.
//
// # Options
//
// Every option has one name used three ways: the flag -publish-token, the
// environment variable HERALD_PUBLISH_TOKEN and the YAML key publish-token.
// Precedence is flag > environment > YAML > default. The YAML file is named by
// -config (or HERALD_CONFIG); a key it does not know is an error naming the
// key and its line. An environment variable set to the empty string counts
// as unset. Durations are written like "30s" or "1m30s"; sizes are bytes,
// optionally with a binary suffix ("64KiB", "1MiB"). Lists are
// comma-separated (in YAML also a sequence); a list flag may be repeated.
//
// Every option is one row of one table (optionTable in options.go): its
// name, kind, default, help text, the Options field it fills, the
// edge.Config field that field becomes, and its own check. Options are
// validated before anything starts. A row's check covers what the edge
// does not: options of the binaries alone (listeners, TLS files, NATS
// credentials, cluster) and rules across options, kept with the option the
// message is about (-drain-window must be less than -shutdown-grace,
// -signing-strict needs -signing-secret). Values that fill edge.Config are
// checked by edge.Config.Validate alone; its *edge.ConfigError names a
// Config field, which the table maps back to the option. Since edge.Config
// reads a zero field as its default, a typed 0 for one of its limits or
// intervals (-queue-bytes 0) is refused as "must be positive" rather than silently
// meaning the default. Either way the error is an [*OptionError] naming the
// option as the user typed it and where its value came from:
//
//	-queue-messages: must be positive (from env HERALD_QUEUE_MESSAGES)
//
// # Files
//
//	main.go     Main: signals, exit status
//	run.go      RunEmbedded, RunEdge: load options, start the servers in order, serve
//	options.go  Options, the option table, Load (defaults, YAML, environment, flags)
//	validate.go Validate, the checks the rows share, EdgeConfig and the mapping of edge errors to options
//	summary.go  the redacted summary of the options for logs
//	nats.go     ConnectNATS: the NATS client both binaries use
//	natsauth.go -nats-auth: the embedded NATS server's credentials and roles, the embedded edge's own key
//	server.go   HTTP, WebSocket and pprof servers, /metrics, the ordered shutdown
//	log.go      NewLogger
//	demo.go     the demo page of cmd/embedded (demo.html)
//
// # Shutdown
//
// When the context is cancelled the runner stops in this order, each step
// bounded by -shutdown-grace: the edge (readiness flips, every client gets
// pode.close), the HTTP server, the NATS connection (drained), and in
// cmd/embedded the embedded NATS server. A binary started by go run also
// shuts down so when the go command exits: a signal sent to go run's pid
// alone, which the go command does not pass on, still stops the server.
//
// # Secrets
//
// The signing secret, publish tokens, NATS password and token, the
// passwords and tokens of -nats-auth, and any credentials embedded in NATS
// URLs never reach the logs: [Options] implements [slog.LogValuer] and
// [fmt.Stringer] with those values redacted.
//
// # The NATS port
//
// With -nats-auth, cmd/embedded's NATS server admits only the credentials
// listed, each with its role's permissions (broker.Subjects.Permissions);
// its own edge connects with an nkey made at start, in the edge role, and
// stays on that server. Both binaries' edges take replies on their own
// inbox (broker.Subjects.EdgeInbox), which no other role may read.
package app
