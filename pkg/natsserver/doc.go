// Package natsserver runs a NATS server inside the process: the server of
// cmd/embedded (JetStream on, data in a directory, optionally a member of
// a cluster through NATS routes) and of the tests.
//
//	srv, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort, JetStream: true, DataDir: dir})
//	if err != nil { ... }
//	defer srv.Shutdown()
//	nc, err := nats.Connect(srv.ClientURL())
//
// It is a package of its own so that a producer importing the publishing
// SDK (pkg/broker) does not compile nats-server into its binary: only
// programs that start a server import this package.
//
// The server logs through an injected *slog.Logger (nil: silent), never
// exits the process on a fatal error (Start reports it instead) and leaves
// signals to the embedding program.
//
// With Config.Users the server requires authentication: user and password,
// token or nkey, each credential with the subjects it may publish and
// subscribe to (Herald's roles are in pkg/broker, Permissions).
//
// Files: server.go (Config, Start, Server), auth.go (Users: credentials and
// their permissions), log.go (the slog adapter of the server's logger).
package natsserver
