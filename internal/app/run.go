package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/edge"
	"github.com/herald-push/herald/pkg/natsserver"
)

// Runtime is the process a binary runs in. OSRuntime describes the real
// one; tests build their own.
type Runtime struct {
	// Args is the command line without the program name.
	Args []string
	// LookupEnv reads an environment variable. Default: none set.
	LookupEnv func(string) (string, bool)
	// Environ lists the environment as KEY=VALUE, only to warn about
	// HERALD_* variables that name no option. May be nil.
	Environ []string
	// Stderr receives logs, help and the generated publish token.
	// Default io.Discard.
	Stderr io.Writer
	// Ready, when set, is called once the HTTP server accepts connections.
	Ready func(Addrs)
}

// Addrs are the addresses a running binary actually bound, which differ
// from the options when a port was 0.
type Addrs struct {
	HTTP  string // host:port of the HTTP listener
	WS    string // host:port of the -ws-listen listener; empty without it
	Pprof string // host:port of the -pprof-listen listener; empty without it
	NATS  string // NATS client URL (the embedded server's, or the first -nats URL)
}

// OSRuntime returns the Runtime of this process: os.Args, the real
// environment and os.Stderr.
func OSRuntime() Runtime {
	return Runtime{Args: os.Args[1:], LookupEnv: os.LookupEnv, Environ: os.Environ(), Stderr: os.Stderr}
}

// RunEmbedded runs cmd/embedded: an embedded NATS server (JetStream on,
// optionally a cluster member), an edge on it, /metrics and the demo page,
// until ctx is done; then it shuts down in order. It returns flag.ErrHelp
// for -h.
func RunEmbedded(ctx context.Context, rt Runtime) error {
	o, logger, edgeCfg, tlsCfg, err := setup(ModeEmbedded, rt)
	if err != nil {
		return err
	}
	ecfg, edgeKey, err := o.embeddedConfig(logger)
	if err != nil {
		return err
	}
	warnOpenNATS(logger, o)

	// Bind the HTTP port first: a port in use fails before NATS starts.
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return o.listenError("listen", err)
	}
	st := &stack{log: logger, grace: o.ShutdownGrace, clustered: ecfg.ClusterName != ""}
	if err := o.listenExtra(st); err != nil {
		_ = ln.Close()
		return err
	}
	fail := func(err error) error {
		_ = ln.Close()
		return errors.Join(err, st.shutdown())
	}

	st.embedded, err = natsserver.Start(ecfg)
	if err != nil {
		return fail(err)
	}
	natsURL := st.embedded.ClientURL()
	logger.Info("embedded NATS server started", "client_url", natsURL, "server_name", st.embedded.Name(),
		"jetstream_dir", o.DataDir, "cluster_url", st.embedded.ClusterURL())

	nc := NATSConfig{URLs: []string{natsURL}, Name: "herald-embedded", InboxPrefix: broker.MustSubjects(edgeCfg.SubjectPrefix).EdgeInbox(),
		DrainTimeout: o.ShutdownGrace}
	if edgeKey != nil {
		// Only this server knows the key: stay on it.
		nc.Nkey, nc.Sign, nc.OnlyURLs = edgeKey.user.Nkey, edgeKey.kp.Sign, true
		logger.Info("the embedded NATS server requires authentication", "users", len(ecfg.Users)-1,
			"edge", embeddedEdgeName+" (a key made at start, with the edge role)")
	}
	st.nats, err = ConnectNATS(nc, logger)
	if err != nil {
		return fail(err)
	}
	return startEdge(ctx, rt, o, logger, edgeCfg, tlsCfg, ln, st, natsURL)
}

// RunEdge runs cmd/edge: an edge joining the NATS servers of -nats, with
// /metrics, until ctx is done; then it shuts down in order. It returns
// flag.ErrHelp for -h.
func RunEdge(ctx context.Context, rt Runtime) error {
	o, logger, edgeCfg, tlsCfg, err := setup(ModeEdge, rt)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return o.listenError("listen", err)
	}
	st := &stack{log: logger, grace: o.ShutdownGrace}
	if err := o.listenExtra(st); err != nil {
		_ = ln.Close()
		return err
	}
	st.nats, err = ConnectNATS(NATSConfig{
		URLs:         o.NATSURLs,
		Name:         o.NATSName,
		CredsFile:    o.NATSCreds,
		User:         o.NATSUser,
		Password:     o.NATSPassword,
		Token:        o.NATSToken,
		NkeyFile:     o.NATSNkey,
		TLSCA:        o.NATSTLSCA,
		TLSCert:      o.NATSTLSCert,
		TLSKey:       o.NATSTLSKey,
		InboxPrefix:  broker.MustSubjects(edgeCfg.SubjectPrefix).EdgeInbox(),
		DrainTimeout: o.ShutdownGrace,
	}, logger)
	if err != nil {
		_ = ln.Close()
		return errors.Join(err, st.shutdown())
	}
	return startEdge(ctx, rt, o, logger, edgeCfg, tlsCfg, ln, st, redactURL(o.NATSURLs[0]))
}

// setup loads the options, builds the logger, generates a publish token
// when none is configured, logs the redacted configuration, and returns the
// edge and TLS configurations the options describe.
func setup(mode Mode, rt Runtime) (*Options, *slog.Logger, edge.Config, *tls.Config, error) {
	if rt.Stderr == nil {
		rt.Stderr = io.Discard
	}
	o, err := Load(mode, rt.Args, rt.LookupEnv, rt.Stderr)
	if err != nil {
		return nil, nil, edge.Config{}, nil, err
	}
	logger, err := NewLogger(rt.Stderr, o.LogLevel, o.LogFormat)
	if err != nil {
		return nil, nil, edge.Config{}, nil, err // unreachable: Load validated both
	}
	if len(o.PublishTokens) == 0 {
		tok := NewToken()
		o.PublishTokens = []string{tok}
		o.generatedToken = true
		o.sources["publish-token"] = "generated"
		printToken(rt.Stderr, tok)
	}
	for _, k := range UnknownEnv(rt.Environ) {
		logger.Warn("environment variable names no option; ignored", "var", k)
	}
	logger.Info("starting "+mode.String(), "options", o)
	edgeCfg, err := o.EdgeConfig()
	if err != nil {
		return nil, nil, edge.Config{}, nil, err
	}
	tlsCfg, err := o.loadTLS()
	if err != nil {
		return nil, nil, edge.Config{}, nil, err
	}
	return o, logger, edgeCfg, tlsCfg, nil
}

// startEdge starts the edge on st.nats and serves it until ctx is done.
func startEdge(ctx context.Context, rt Runtime, o *Options, logger *slog.Logger, cfg edge.Config,
	tlsCfg *tls.Config, ln net.Listener, st *stack, natsURL string) error {
	reg := NewRegistry()
	var err error
	st.edge, err = edge.New(st.nats.Conn, cfg, logger.With("component", "edge"), reg)
	if err != nil && st.nats.Conn.IsClosed() {
		// nats.go gave up while the edge started: its reason says why.
		err = fmt.Errorf("NATS connection closed for good: %v (check the NATS credentials): %w", st.nats.Conn.LastError(), err)
	}
	if err != nil {
		_ = ln.Close()
		return errors.Join(err, st.shutdown())
	}
	var demo http.Handler
	if o.mode == ModeEmbedded {
		dc := DemoConfig{SSEPath: cfg.SSEPath, WSEcho: cfg.WSEchoNames, TaskPath: cfg.TaskPath}
		for _, r := range cfg.TaskRoutes {
			dc.TaskRoutes = append(dc.TaskRoutes, r.Method+" "+r.Path)
		}
		demo = NewDemoHandler(dc)
	}
	st.srv = NewServer(edge.BodyDeadline(NewMux(st.edge.Handler(), reg, demo, logger), cfg.BodyTimeout), tlsCfg, o.H2C, logger)
	if st.wsLn != nil {
		st.wsSrv = NewWSServer(st.edge.WSHandler(), tlsCfg, logger)
	}
	if st.pprofLn != nil {
		st.pprofSrv = NewPprofServer(logger)
	}

	scheme, wsScheme := "http", "ws"
	if tlsCfg != nil {
		scheme, wsScheme = "https", "wss"
	}
	base := displayURL(scheme, ln.Addr())
	return serve(ctx, ln, st, func() {
		attrs := []any{"url", base, "sse", base + sampleSSEPath(cfg.SSEPath),
			"ws", displayURL(wsScheme, ln.Addr()) + sampleWSPath(), "metrics", base + "/metrics"}
		addrs := Addrs{HTTP: ln.Addr().String(), NATS: natsURL}
		if st.wsLn != nil {
			addrs.WS = st.wsLn.Addr().String()
			attrs = append(attrs, "ws_pode", displayURL(wsScheme, st.wsLn.Addr())+"/")
		}
		if st.pprofLn != nil {
			addrs.Pprof = st.pprofLn.Addr().String()
			attrs = append(attrs, "pprof", displayURL("http", st.pprofLn.Addr())+"/debug/pprof/")
		}
		if demo != nil {
			attrs = append(attrs, "demo", base+"/")
		}
		logger.Info("serving", attrs...)
		if demo != nil && o.Source("ws-echo") == "default" {
			logger.Info("WebSocket echo on for the demo page's name (cmd/embedded's default; -ws-echo '' turns it off)",
				"name", DemoName)
		}
		if rt.Ready != nil {
			rt.Ready(addrs)
		}
	})
}

// listenExtra binds the optional listeners, -ws-listen and -pprof-listen,
// into st; st.shutdown closes whatever was bound.
func (o *Options) listenExtra(st *stack) error {
	listen := func(option, addr string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, o.listenError(option, err)
		}
		return ln, nil
	}
	var err error
	if st.wsLn, err = listen("ws-listen", o.WSListen); err != nil {
		return err
	}
	if st.pprofLn, err = listen("pprof-listen", o.PprofListen); err != nil {
		if st.wsLn != nil {
			_ = st.wsLn.Close()
		}
		return err
	}
	return nil
}

// listenError is the error of a listener that could not bind; a port in
// use, usually by a Herald started earlier and still running, says so.
func (o *Options) listenError(option string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		err = fmt.Errorf("%w (is another Herald still running? stop it, or choose another -%s)", err, option)
	}
	return o.optionError(option, err)
}

// sampleSSEPath shows the SSE route of the demo page's name, DemoName.
func sampleSSEPath(pattern string) string {
	return strings.ReplaceAll(pattern, "{name}", url.PathEscape(DemoName))
}

// sampleWSPath shows the WebSocket route of DemoName: a WebSocket's name is
// its path, so the two sample URLs reach the same clients.
func sampleWSPath() string {
	return strings.TrimSuffix(edge.WSRoute, "/{path...}") + DemoName
}

// embeddedConfig maps the options to the embedded NATS server's config.
// With -nats-auth the server's users are those credentials plus the
// embedded edge's own key, returned for its connection (nil without).
func (o *Options) embeddedConfig(logger *slog.Logger) (natsserver.Config, *internalEdge, error) {
	host, port, err := splitListen(o.NATSListen)
	if err != nil {
		return natsserver.Config{}, nil, o.optionError("nats-listen", err)
	}
	users, err := o.natsUsers()
	if err != nil {
		return natsserver.Config{}, nil, o.optionError("nats-auth", err)
	}
	var edgeKey *internalEdge
	if len(users) > 0 {
		perms, err := o.edgePermissions()
		if err != nil {
			return natsserver.Config{}, nil, err
		}
		if edgeKey, err = newInternalEdge(perms); err != nil {
			return natsserver.Config{}, nil, err
		}
		users = append(users, edgeKey.user)
	}
	cfg := natsserver.Config{
		Host:                host,
		Port:                port,
		ServerName:          o.ServerName,
		JetStream:           true,
		DataDir:             o.DataDir,
		JetStreamSyncAlways: o.SyncAlways,
		Users:               users,
		Logger:              logger,
	}
	if o.ClusterListen != "" {
		chost, cport, err := splitListen(o.ClusterListen)
		if err != nil {
			return natsserver.Config{}, nil, o.optionError("cluster-listen", err)
		}
		cfg.ClusterName, cfg.ClusterHost, cfg.ClusterPort, cfg.Routes = o.ClusterName, chost, cport, o.Routes
		// Lame duck mode at shutdown must fit the grace period.
		cfg.LameDuckDuration = o.ShutdownGrace / 2
	}
	if err := cfg.Validate(); err != nil {
		return natsserver.Config{}, nil, err
	}
	return cfg, edgeKey, nil
}

// splitListen maps host:port to the embedded server's host and port: an
// empty host means every interface, port 0 a random free port.
func splitListen(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if port == 0 {
		port = natsserver.RandomPort
	}
	return host, port, nil
}

// NewToken returns a random publish token of 32 hex characters.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// printToken shows a generated token once, on w, outside the logs.
func printToken(w io.Writer, token string) {
	fmt.Fprintf(w, `
  ----------------------------------------------------------------------
  No publish token configured: generated one for this run.

    publish token: %s

  POST /publish with the header "Authorization: Bearer <token>".
  Set -publish-token or %sPUBLISH_TOKEN to choose your own.
  ----------------------------------------------------------------------

`, token, EnvPrefix)
}
