package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// NATS connection tuning shared by both binaries.
const (
	natsPingInterval   = 5 * time.Second // with 2 outstanding pings, a dead or black-holed server is noticed within 15 s
	natsMaxPingsOut    = 2
	natsReconnectWait  = 2 * time.Second
	natsReconnectJit   = 500 * time.Millisecond
	natsReconnectJitTL = 2 * time.Second
)

// NATSConfig says how ConnectNATS reaches NATS. Only URLs is required.
type NATSConfig struct {
	// URLs are the servers to connect to (any member of a cluster will do;
	// the others are discovered).
	URLs []string
	// Name is the connection name shown by NATS monitoring.
	Name string

	// At most one way to authenticate: a credentials file, user and
	// password, a token, or an nkey with the function that signs the
	// server's nonce with its seed. URLs may also carry user information.
	CredsFile string
	User      string
	Password  string
	Token     string
	Nkey      string
	Sign      func(nonce []byte) ([]byte, error)
	NkeyFile  string // a file holding a user nkey's seed

	// InboxPrefix replaces nats.go's _INBOX as the prefix of the
	// connection's reply subjects. Default _INBOX.
	InboxPrefix string
	// OnlyURLs keeps the connection to URLs, ignoring the servers a
	// cluster announces (a credential only those servers know).
	OnlyURLs bool

	// TLS: a CA file that verifies the servers, and a client certificate.
	TLSCA   string
	TLSCert string
	TLSKey  string

	// DrainTimeout bounds Drain inside the client library. Default 30 s.
	DrainTimeout time.Duration
}

// NATSClient is a NATS connection that reconnects forever and logs its
// state changes. Close it with Drain.
type NATSClient struct {
	// Conn is the connection, for the edge and the publisher SDK.
	Conn *nats.Conn

	closed    chan struct{} // closed by the ClosedHandler
	closeOnce sync.Once
}

// ConnectNATS connects to NATS with infinite reconnects (with jitter), a
// ping interval that notices a dead server within a minute, and every
// disconnect, reconnect and asynchronous error (slow consumers included)
// logged through logger. It does not wait for the first connection to
// succeed: the client keeps retrying in the background, and the edge's
// /readyz reports not ready until it is connected.
func ConnectNATS(cfg NATSConfig, logger *slog.Logger) (*NATSClient, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("app: no NATS URLs")
	}
	c := &NATSClient{closed: make(chan struct{})}
	log := logger.With("component", "nats")
	servers := make([]string, len(cfg.URLs))
	for i, u := range cfg.URLs {
		servers[i] = redactURL(u)
	}

	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(natsReconnectWait),
		nats.ReconnectJitter(natsReconnectJit, natsReconnectJitTL),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(natsPingInterval),
		nats.MaxPingsOutstanding(natsMaxPingsOut),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "server", redactURL(nc.ConnectedUrl()), "server_name", nc.ConnectedServerName())
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil {
				log.Info("NATS disconnected")
				return
			}
			log.Warn("NATS disconnected; reconnecting", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "server", redactURL(nc.ConnectedUrl()), "server_name", nc.ConnectedServerName())
		}),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn("NATS reconnect attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			log.Info("NATS connection closed")
			c.closeOnce.Do(func() { close(c.closed) })
		}),
		nats.DiscoveredServersHandler(func(nc *nats.Conn) {
			log.Debug("NATS servers discovered", "servers", len(nc.DiscoveredServers()))
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			log.Info("NATS server entering lame duck mode; will move to another server")
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
				if msgs, bytes, perr := sub.Pending(); perr == nil {
					attrs = append(attrs, "pending_msgs", msgs, "pending_bytes", bytes)
				}
				if dropped, derr := sub.Dropped(); derr == nil {
					attrs = append(attrs, "dropped", dropped)
				}
			}
			if errors.Is(err, nats.ErrSlowConsumer) {
				log.Warn("NATS slow consumer: messages dropped for a subscription", attrs...)
				return
			}
			log.Error("NATS asynchronous error", attrs...)
		}),
	}
	if cfg.DrainTimeout > 0 {
		opts = append(opts, nats.DrainTimeout(cfg.DrainTimeout))
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.Nkey != "":
		opts = append(opts, nats.Nkey(cfg.Nkey, cfg.Sign))
	case cfg.NkeyFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("app: NATS nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.OnlyURLs {
		opts = append(opts, nats.IgnoreDiscoveredServers())
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}

	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("app: NATS %s: %w", strings.Join(servers, ","), err)
	}
	c.Conn = nc
	if !nc.IsConnected() {
		log.Warn("NATS not reachable yet; retrying in the background (/readyz reports not ready meanwhile)",
			"servers", strings.Join(servers, ","))
	}
	return c, nil
}

// Closed is closed once the connection is closed: by Drain, or by nats.go
// giving up (a server that refuses the credentials twice in a row).
func (c *NATSClient) Closed() <-chan struct{} { return c.closed }

// Drain drains the connection (subscriptions stop, pending messages are
// handled, buffered publishes are flushed) and waits until it is closed or
// ctx is done, in which case the connection is closed at once.
func (c *NATSClient) Drain(ctx context.Context) error {
	switch err := c.Conn.Drain(); {
	case err == nil:
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting):
		// Not connected: nothing can be drained, the connection is closed.
		c.Conn.Close()
	default:
		c.Conn.Close()
		return fmt.Errorf("app: NATS drain: %w", err)
	}
	select {
	case <-c.closed:
		return nil
	case <-ctx.Done():
		c.Conn.Close()
		return fmt.Errorf("app: NATS drain: %w", ctx.Err())
	}
}
