package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-push/herald/pkg/edge"
	"github.com/herald-push/herald/pkg/natsserver"
)

// HTTP server limits. There is deliberately no WriteTimeout: SSE streams
// live for hours and the edge sets a deadline on each write instead.
const (
	readHeaderTimeout = 10 * time.Second
	maxHeaderBytes    = 64 << 10
	idleTimeout       = 120 * time.Second
)

// NewRegistry returns a fresh Prometheus registry with the Go runtime,
// process and build-info collectors registered.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	return reg
}

// NewMux routes GET /metrics to reg, GET / (exactly "/") to demo when it is
// not nil, and everything else to the edge handler.
func NewMux(edgeHandler http.Handler, reg *prometheus.Registry, demo http.Handler, logger *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError),
		Registry: reg, // counts failed scrapes
	})
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, metrics))
	if demo != nil {
		mux.Handle("GET /{$}", demo)
	}
	mux.Handle("/", edgeHandler)
	return mux
}

// NewServer returns the http.Server both binaries use: ReadHeaderTimeout
// 10 s, MaxHeaderBytes 64 KiB, IdleTimeout 2 min, no WriteTimeout (streams
// use per-write deadlines), errors logged through logger. With tlsConfig it
// negotiates HTTP/2 over TLS; otherwise it serves HTTP/1.1, plus cleartext
// HTTP/2 (prior knowledge) when h2c is true.
func NewServer(h http.Handler, tlsConfig *tls.Config, h2c bool, logger *slog.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	switch {
	case tlsConfig != nil:
		protocols.SetHTTP2(true)
	case h2c:
		protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		Protocols:         &protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       idleTimeout,
		ErrorLog:          log.New(serverErrorWriter{logger.With("component", "http")}, "", 0),
	}
}

// NewWSServer returns the server of the dedicated WebSocket listener
// (-ws-listen): NewServer's limits, HTTP/1.1 only (WebSockets upgrade from
// HTTP/1.1), over TLS when tlsConfig is set.
func NewWSServer(h http.Handler, tlsConfig *tls.Config, logger *slog.Logger) *http.Server {
	if tlsConfig != nil {
		tlsConfig = tlsConfig.Clone() // net/http adjusts each server's config as it starts
	}
	srv := NewServer(h, tlsConfig, false, logger)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv.Protocols = &protocols
	return srv
}

// serverErrorWriter turns http.Server's log lines into slog records. TLS
// handshake failures (port scanners, TCP health checks) are debug noise.
type serverErrorWriter struct{ log *slog.Logger }

// Write logs one line of http.Server's error log.
func (w serverErrorWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	if strings.Contains(msg, "TLS handshake error") {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// loadTLS loads the HTTPS key pair, or returns nil when TLS is off.
func (o *Options) loadTLS() (*tls.Config, error) {
	if o.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, o.optionError("tls-cert", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// stack is what a binary has started, stopped in order by shutdown. Nil
// members were not started.
type stack struct {
	log   *slog.Logger
	grace time.Duration

	edge      *edge.Edge
	srv       *http.Server
	wsSrv     *http.Server // -ws-listen's server; nil without it
	wsLn      net.Listener // -ws-listen's listener, owned by wsSrv once serving
	pprofSrv  *http.Server // -pprof-listen's server; nil without it
	pprofLn   net.Listener // -pprof-listen's listener, owned by pprofSrv once serving
	nats      *NATSClient
	embedded  *natsserver.Server
	clustered bool // the embedded server has routes: leave in lame duck mode
}

// shutdown stops, in order and each bounded by the grace period: the edge
// (readiness off, pode.close to every client), the HTTP server, the NATS
// connection (drained) and the embedded NATS server. It returns every
// step's error.
func (s *stack) shutdown() error {
	var errs []error
	step := func(name string, stop func(context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), s.grace)
		defer cancel()
		start := time.Now()
		if err := stop(ctx); err != nil {
			s.log.Warn("shutdown step failed", "step", name, "err", err, "took", time.Since(start).Round(time.Millisecond).String())
			errs = append(errs, fmt.Errorf("shutdown %s: %w", name, err))
			return
		}
		s.log.Info("stopped", "step", name, "took", time.Since(start).Round(time.Millisecond).String())
	}
	if s.edge != nil {
		step("edge", s.edge.Shutdown)
	}
	if s.srv != nil {
		step("http server", func(ctx context.Context) error {
			err := s.srv.Shutdown(ctx)
			if err != nil {
				_ = s.srv.Close() // whatever is left, at once
			}
			return err
		})
	}
	switch {
	case s.wsSrv != nil:
		step("ws server", func(ctx context.Context) error {
			err := s.wsSrv.Shutdown(ctx)
			if err != nil {
				_ = s.wsSrv.Close()
			}
			return err
		})
	case s.wsLn != nil:
		_ = s.wsLn.Close() // bound but never served
	}
	switch {
	case s.pprofSrv != nil:
		_ = s.pprofSrv.Close() // a profile in progress is cut short
	case s.pprofLn != nil:
		_ = s.pprofLn.Close()
	}
	if s.nats != nil {
		step("nats connection", s.nats.Drain)
	}
	if s.embedded != nil {
		step("embedded nats server", s.stopEmbedded)
	}
	return errors.Join(errs...)
}

// NewPprofServer serves net/http/pprof's endpoints under /debug/pprof/
// (-pprof-listen). It has no write timeout: a CPU profile or trace takes as
// long as its seconds parameter.
func NewPprofServer(logger *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// stopEmbedded shuts the embedded server down; a cluster member first
// enters lame duck mode so that its clients and JetStream leadership move
// to other members. When ctx ends first it shuts down at once.
func (s *stack) stopEmbedded(ctx context.Context) error {
	if !s.clustered {
		s.embedded.Shutdown()
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.embedded.LameDuckShutdown()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.embedded.Shutdown()
		<-done
		return fmt.Errorf("lame duck mode cut short: %w", ctx.Err())
	}
}

// serve serves st.srv on ln (and st.wsSrv on st.wsLn) until ctx is done or
// a server fails, then runs the shutdown stack. ready, if set, is called
// once serving.
func serve(ctx context.Context, ln net.Listener, st *stack, ready func()) error {
	type result struct {
		name string
		err  error
	}
	served := make(chan result, 3)
	start := func(name string, srv *http.Server, l net.Listener) {
		go func() {
			if srv.TLSConfig != nil {
				served <- result{name, srv.ServeTLS(l, "", "")}
				return
			}
			served <- result{name, srv.Serve(l)}
		}()
	}
	running := 1
	start("http server", st.srv, ln)
	if st.wsSrv != nil {
		running++
		start("ws server", st.wsSrv, st.wsLn)
	}
	if st.pprofSrv != nil {
		running++
		start("pprof server", st.pprofSrv, st.pprofLn)
	}
	if ready != nil {
		ready()
	}

	var natsClosed <-chan struct{}
	if st.nats != nil {
		natsClosed = st.nats.Closed()
	}
	var runErr error
	select {
	case <-ctx.Done():
		st.log.Info("shutting down", "cause", context.Cause(ctx), "grace_per_step", st.grace.String())
	case <-natsClosed:
		// nats.go gives up only when the server refuses the credentials
		// again and again: the edge can never serve, so say why and stop.
		runErr = fmt.Errorf("NATS connection closed for good: %v (check the NATS credentials)", st.nats.Conn.LastError())
		st.log.Error("NATS connection closed for good; shutting down", "err", st.nats.Conn.LastError())
	case r := <-served:
		running--
		runErr = fmt.Errorf("%s: %w", r.name, r.err)
		st.log.Error(r.name+" failed; shutting down", "err", r.err)
	}
	shutErr := st.shutdown()
	for ; running > 0; running-- {
		if r := <-served; !errors.Is(r.err, http.ErrServerClosed) && runErr == nil {
			runErr = fmt.Errorf("%s: %w", r.name, r.err)
		}
	}
	return errors.Join(runErr, shutErr)
}

// displayURL is a URL a person can open for a listener address: an
// unspecified host (all interfaces) shows as localhost.
func displayURL(scheme string, addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + "://" + addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
