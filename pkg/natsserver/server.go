package natsserver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Defaults of Config.
const (
	DefaultHost        = "127.0.0.1"
	DefaultPort        = 4222
	DefaultClusterPort = 6222
	// DefaultLameDuckDuration is nats-server's default: clients are closed
	// spread over this long.
	DefaultLameDuckDuration = 2 * time.Minute
	// DefaultLameDuckGracePeriod is nats-server's default wait before the
	// first client is closed.
	DefaultLameDuckGracePeriod = 10 * time.Second
	// StartTimeout bounds Start's wait for the server to be ready for
	// connections.
	StartTimeout = 10 * time.Second
)

// RandomPort asks for a random free port in Config.Port and
// Config.ClusterPort.
const RandomPort = -1

// Config configures an embedded NATS server. The zero value is a
// standalone server on 127.0.0.1:4222 without JetStream and without logging.
type Config struct {
	// Host is the client listen host. Default "127.0.0.1" (use "0.0.0.0"
	// to accept clients from other machines).
	Host string
	// Port is the client port. 0 means 4222; RandomPort (-1) means a random
	// free port (read it back with ClientURL).
	Port int
	// ServerName names the server in the cluster and in JetStream.
	// Default: a random "herald-<hex>" name. Set a stable name for a node
	// whose JetStream data must survive restarts in a cluster: the
	// JetStream peer identity is derived from it.
	ServerName string

	// JetStream enables JetStream (history, tasks, KV). Default off.
	JetStream bool
	// DataDir is the JetStream store directory. Required when JetStream is on.
	DataDir string
	// JetStreamSyncAlways syncs every write to disk (sync_interval: always)
	// instead of nats-server's default periodic sync. Default off; requires
	// JetStream.
	JetStreamSyncAlways bool

	// ClusterName, when non-empty, enables clustering (NATS routes) under
	// this cluster name. Default "" (standalone).
	ClusterName string
	// ClusterHost is the route listen host. Default: Host. Requires ClusterName.
	ClusterHost string
	// ClusterPort is the route port. 0 means 6222; RandomPort (-1) means a
	// random free port (read it back with ClusterURL). Requires ClusterName.
	ClusterPort int
	// Routes are the other cluster members, e.g.
	// "nats-route://10.0.0.2:6222" (schemes nats-route, nats or tls).
	// Listing this server itself is harmless. Default none. Requires ClusterName.
	Routes []string

	// LameDuckDuration is how long LameDuckShutdown spreads closing client
	// connections over. Default 2m (DefaultLameDuckDuration).
	LameDuckDuration time.Duration
	// LameDuckGracePeriod is how long LameDuckShutdown waits before closing
	// the first client. Default 10s (DefaultLameDuckGracePeriod), or half of
	// LameDuckDuration when that is 20s or less. Must be less than
	// LameDuckDuration.
	LameDuckGracePeriod time.Duration

	// Users, when not empty, makes the server require authentication:
	// only a client with one of these credentials connects, and it may do
	// what its Permissions allow. Default none: every client connects and
	// may do anything.
	Users []User

	// Logger receives the server's notices (Info), warnings (Warn) and
	// errors (Error); debug output is enabled when the logger is enabled at
	// Debug level. nil (the default) turns server logging off.
	Logger *slog.Logger
}

// ConfigError reports an invalid Config field.
type ConfigError struct {
	// Field names the field as Go code spells it: "Port", "Routes[1]".
	Field string
	// Err says what is wrong with its value.
	Err error
}

// Error reads like "natsserver: Config.Port: 70000 is out of range ...".
func (e *ConfigError) Error() string { return "natsserver: Config." + e.Field + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate checks the configuration before defaults are applied and returns
// a *ConfigError naming the first bad field.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if strings.ContainsFunc(c.Host, isSpaceOrControl) {
		return bad("Host", "%q contains whitespace or a control character", c.Host)
	}
	if c.Port < RandomPort || c.Port > 65535 {
		return bad("Port", "%d is out of range (want -1 for random, 0 for 4222, or 1..65535)", c.Port)
	}
	if strings.ContainsFunc(c.ServerName, isSpaceOrControl) {
		return bad("ServerName", "%q contains whitespace or a control character", c.ServerName)
	}
	if c.JetStream && c.DataDir == "" {
		return bad("DataDir", "required when JetStream is on")
	}
	if c.JetStreamSyncAlways && !c.JetStream {
		return bad("JetStreamSyncAlways", "requires JetStream")
	}
	if strings.ContainsFunc(c.ClusterName, isSpaceOrControl) {
		return bad("ClusterName", "%q contains whitespace or a control character", c.ClusterName)
	}
	if c.ClusterName == "" {
		switch {
		case c.ClusterHost != "":
			return bad("ClusterHost", "requires ClusterName")
		case c.ClusterPort != 0:
			return bad("ClusterPort", "requires ClusterName")
		case len(c.Routes) > 0:
			return bad("Routes", "requires ClusterName")
		}
	}
	if strings.ContainsFunc(c.ClusterHost, isSpaceOrControl) {
		return bad("ClusterHost", "%q contains whitespace or a control character", c.ClusterHost)
	}
	if c.ClusterPort < RandomPort || c.ClusterPort > 65535 {
		return bad("ClusterPort", "%d is out of range (want -1 for random, 0 for 6222, or 1..65535)", c.ClusterPort)
	}
	for i, r := range c.Routes {
		if err := checkRouteURL(r); err != nil {
			return bad("Routes["+strconv.Itoa(i)+"]", "%q: %v", r, err)
		}
	}
	if c.LameDuckDuration < 0 {
		return bad("LameDuckDuration", "%v is negative", c.LameDuckDuration)
	}
	if c.LameDuckGracePeriod < 0 {
		return bad("LameDuckGracePeriod", "%v is negative", c.LameDuckGracePeriod)
	}
	if d := c.LameDuckDuration; c.LameDuckGracePeriod > 0 && c.LameDuckGracePeriod >= cmpOr(d, DefaultLameDuckDuration) {
		return bad("LameDuckGracePeriod", "%v must be less than LameDuckDuration (%v)", c.LameDuckGracePeriod, cmpOr(d, DefaultLameDuckDuration))
	}
	return validateUsers(c.Users)
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func checkRouteURL(r string) error {
	u, err := url.Parse(r)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "nats-route", "nats", "tls":
	default:
		return fmt.Errorf("scheme %q is not nats-route, nats or tls", u.Scheme)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not 1..65535", port)
	}
	return nil
}

// withDefaults returns c with every default applied.
func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host = DefaultHost
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.ServerName == "" {
		var b [6]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		c.ServerName = "herald-" + hex.EncodeToString(b[:])
	}
	if c.ClusterName != "" {
		if c.ClusterHost == "" {
			c.ClusterHost = c.Host
		}
		if c.ClusterPort == 0 {
			c.ClusterPort = DefaultClusterPort
		}
	}
	if c.LameDuckDuration == 0 {
		c.LameDuckDuration = DefaultLameDuckDuration
	}
	if c.LameDuckGracePeriod == 0 {
		c.LameDuckGracePeriod = min(DefaultLameDuckGracePeriod, c.LameDuckDuration/2)
	}
	return c
}

func (c Config) serverOptions() (*server.Options, error) {
	o := &server.Options{
		ServerName:          c.ServerName,
		Host:                c.Host,
		Port:                c.Port,
		NoLog:               true, // logging goes through our adapter, set after NewServer
		NoSigs:              true, // the embedding process owns signals
		JetStream:           c.JetStream,
		StoreDir:            c.DataDir,
		SyncAlways:          c.JetStreamSyncAlways,
		LameDuckDuration:    c.LameDuckDuration,
		LameDuckGracePeriod: c.LameDuckGracePeriod,
	}
	if len(c.Users) > 0 {
		o.CustomClientAuthentication = newAuthenticator(c.Users)
		o.AlwaysEnableNonce = true // nkey users sign it
	}
	if c.ClusterName != "" {
		o.Cluster = server.ClusterOpts{Name: c.ClusterName, Host: c.ClusterHost, Port: c.ClusterPort}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil { // already validated; kept for safety
				return nil, &ConfigError{Field: "Routes", Err: err}
			}
			o.Routes = append(o.Routes, u)
		}
	}
	return o, nil
}

// Server is a running embedded NATS server. Its methods are safe for
// concurrent use.
type Server struct {
	cfg Config // with defaults applied; read-only after start
	srv *server.Server
	log *serverLogger
}

// Start validates cfg, starts a NATS server and waits until it is ready
// for connections (listeners up, JetStream enabled), at most StartTimeout
// (10 s). A server that fails to start (port in use,
// store directory unusable, ...) is shut down and its fatal error returned.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts, err := cfg.serverOptions()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %q: %w", cfg.ServerName, err)
	}
	lg := newServerLogger(cfg.Logger, cfg.ServerName)
	srv.SetLogger(lg, lg.debug, false)
	e := &Server{cfg: cfg, srv: srv, log: lg}

	srv.Start() // returns once the listeners are being set up
	deadline := time.Now().Add(StartTimeout)
	for {
		if ferr := lg.fatalErr(); ferr != nil {
			e.Shutdown()
			return nil, fmt.Errorf("natsserver: %q failed to start: %w", cfg.ServerName, ferr)
		}
		if srv.ReadyForConnections(50 * time.Millisecond) {
			// A late fatal (e.g. the route listener) is still a failed start.
			if ferr := lg.fatalErr(); ferr == nil {
				return e, nil
			}
			continue
		}
		if time.Now().After(deadline) {
			e.Shutdown()
			return nil, fmt.Errorf("natsserver: %q not ready for connections after %v (client %s:%d)",
				cfg.ServerName, StartTimeout, cfg.Host, cfg.Port)
		}
	}
}

// ClientURL returns the URL clients connect to, e.g. "nats://127.0.0.1:4222",
// with the actual port when Port was RandomPort.
func (e *Server) ClientURL() string { return e.srv.ClientURL() }

// ClusterURL returns this server's route URL, e.g.
// "nats-route://127.0.0.1:6222", with the actual port when ClusterPort was
// RandomPort; "" when clustering is off or the route listener is closed.
func (e *Server) ClusterURL() string {
	if e.cfg.ClusterName == "" {
		return ""
	}
	a := e.srv.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + net.JoinHostPort(e.cfg.ClusterHost, strconv.Itoa(a.Port))
}

// Name returns the server name (the configured one or the random default).
func (e *Server) Name() string { return e.cfg.ServerName }

// Server returns the underlying nats-server, for inspection
// (NumRoutes, JetStreamIsLeader, ...).
func (e *Server) Server() *server.Server { return e.srv }

// Shutdown stops the server gracefully: it closes listeners and client
// connections, stops JetStream (flushing its store) and returns once the
// server has fully shut down. It is idempotent.
func (e *Server) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// LameDuckShutdown stops accepting clients, hands off JetStream leadership,
// closes existing clients spread over LameDuckDuration (after
// LameDuckGracePeriod) so that they reconnect elsewhere without a storm,
// then shuts down and returns once the server is fully down. It returns
// sooner when no clients are connected.
func (e *Server) LameDuckShutdown() {
	e.srv.LameDuckShutdown()
	// LameDuckShutdown is a no-op on a server already shutting down; make
	// sure it is fully down either way.
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
