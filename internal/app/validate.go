package app

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/edge"
	"github.com/herald-push/herald/pkg/policy"
)

// minTokenLen is the shortest publish token accepted (edge.Config agrees).
const minTokenLen = 8

// Validate checks the options of the binary they were loaded for and
// returns an *OptionError naming the first bad option.
func (o *Options) Validate() error {
	for _, check := range o.checks() {
		if err := check.fn(); err != nil {
			return &OptionError{Option: check.name, Source: o.sources[check.name], Err: err}
		}
	}
	return nil
}

type check struct {
	name string
	fn   func() error
}

func (o *Options) checks() []check {
	cs := []check{
		{"listen", func() error { return checkAddr(o.Listen) }},
		{"publish-token", func() error {
			for i, t := range o.PublishTokens {
				if len(t) < minTokenLen {
					return fmt.Errorf("token %d of %d is shorter than %d characters", i+1, len(o.PublishTokens), minTokenLen)
				}
				if strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
					return fmt.Errorf("token %d of %d contains a space or control character", i+1, len(o.PublishTokens))
				}
			}
			return nil
		}},
		{"signing-strict", func() error {
			if o.SigningStrict && o.SigningSecret == "" {
				return errors.New("needs -signing-secret")
			}
			return nil
		}},
		{"broadcast-levels", func() error {
			_, err := policy.ParseLevels(o.BroadcastLevels)
			return err
		}},
		{"subject-prefix", func() error {
			_, err := broker.NewSubjects(o.SubjectPrefix)
			return err
		}},
		{"sse-path", func() error { return checkPattern(o.SSEPath) }},
		{"retry", func() error { return nonNegative(int64(o.Retry)) }},
		{"ping-interval", func() error { return positive(int64(o.PingInterval)) }},
		{"write-timeout", func() error { return positive(int64(o.WriteTimeout)) }},
		{"queue-bytes", func() error { return positive(int64(o.QueueBytes)) }},
		{"queue-messages", func() error { return positive(int64(o.QueueMessages)) }},
		{"max-publish-bytes", func() error { return positive(int64(o.MaxPublishBytes)) }},
		{"tls-cert", func() error { return checkPair(o.TLSCert, o.TLSKey, "-tls-key") }},
		{"tls-key", func() error { return checkPair(o.TLSKey, o.TLSCert, "-tls-cert") }},
		{"h2c", func() error {
			if o.H2C && o.TLSCert != "" {
				return errors.New("applies only without TLS (HTTPS already negotiates HTTP/2)")
			}
			return nil
		}},
		{"log-level", func() error {
			_, err := parseLevel(o.LogLevel)
			return err
		}},
		{"log-format", func() error {
			if o.LogFormat != "text" && o.LogFormat != "json" {
				return fmt.Errorf("unknown format %q (want text or json)", o.LogFormat)
			}
			return nil
		}},
		{"shutdown-grace", func() error { return positive(int64(o.ShutdownGrace)) }},
		{"ws-listen", func() error {
			if o.WSListen == "" {
				return nil
			}
			if o.WSListen == o.Listen && !strings.HasSuffix(o.WSListen, ":0") {
				return errors.New("must differ from -listen (/ws/{path} on -listen needs no second listener)")
			}
			return checkAddr(o.WSListen)
		}},
		{"pprof-listen", func() error {
			if o.PprofListen == "" {
				return nil
			}
			if !strings.HasSuffix(o.PprofListen, ":0") && (o.PprofListen == o.Listen || o.PprofListen == o.WSListen) {
				return errors.New("must differ from -listen and -ws-listen: profiles are not for the public port")
			}
			return checkAddr(o.PprofListen)
		}},
		{"ws-origins", func() error {
			for _, p := range o.WSOrigins {
				if _, err := path.Match(p, ""); err != nil {
					return fmt.Errorf("%q: %w", p, err)
				}
			}
			return nil
		}},
		{"ws-read-limit", func() error { return positive(int64(o.WSReadLimit)) }},
		{"ws-echo", func() error {
			for _, n := range o.WSEcho {
				if n == policy.AnyName {
					continue
				}
				if err := policy.ValidateName(n); err != nil {
					return fmt.Errorf("%q: %w", n, err)
				}
			}
			return nil
		}},
		{"drain-window", func() error {
			if err := nonNegative(int64(o.DrainWindow)); err != nil {
				return err
			}
			if o.DrainWindow > 0 && o.DrainWindow >= o.ShutdownGrace {
				return fmt.Errorf("%v must be less than -shutdown-grace (%v)", o.DrainWindow, o.ShutdownGrace)
			}
			return nil
		}},
	}
	switch o.mode {
	case ModeEmbedded:
		clustered := o.ClusterListen != "" || len(o.Routes) > 0 || o.ClusterName != ""
		cs = append(cs,
			check{"nats-listen", func() error { return checkAddr(o.NATSListen) }},
			check{"data", func() error { return nonEmpty(o.DataDir) }},
			check{"cluster-listen", func() error {
				if !clustered {
					return nil
				}
				if o.ClusterListen == "" {
					return errors.New("required when -cluster-name or -routes is set")
				}
				return checkAddr(o.ClusterListen)
			}},
			check{"cluster-name", func() error {
				if clustered && o.ClusterName == "" {
					return errors.New("required to cluster (the same name on every member)")
				}
				return nil
			}},
			check{"server-name", func() error {
				if clustered && o.ServerName == "" {
					return errors.New("required to cluster (a unique name per member; JetStream needs it)")
				}
				return nil
			}},
			check{"routes", func() error {
				for _, r := range o.Routes {
					if !strings.Contains(r, "://") {
						return fmt.Errorf("%s: want a URL like nats-route://host:6222", redactURL(r))
					}
					if err := checkURL(r); err != nil {
						return err
					}
					u, _ := url.Parse(r) // checkURL parsed it
					switch u.Scheme {
					case "nats-route", "nats", "tls":
					default:
						return fmt.Errorf("%s: scheme must be nats-route, nats or tls", redactURL(r))
					}
				}
				return nil
			}},
		)
	case ModeEdge:
		cs = append(cs,
			check{"nats", func() error {
				if len(o.NATSURLs) == 0 {
					return errors.New("required: the NATS servers to join, e.g. nats://127.0.0.1:4222")
				}
				for _, u := range o.NATSURLs {
					if err := checkURL(u); err != nil {
						return err
					}
				}
				return nil
			}},
			check{"nats-creds", func() error {
				if o.NATSCreds == "" {
					return nil
				}
				if o.NATSUser != "" || o.NATSToken != "" {
					return errors.New("use one of -nats-creds, -nats-user/-nats-password or -nats-token")
				}
				return checkFile(o.NATSCreds)
			}},
			check{"nats-user", func() error {
				if o.NATSUser != "" && o.NATSToken != "" {
					return errors.New("use one of -nats-user/-nats-password or -nats-token")
				}
				if o.NATSUser != "" && o.NATSPassword == "" {
					return errors.New("needs -nats-password")
				}
				return nil
			}},
			check{"nats-password", func() error {
				if o.NATSPassword != "" && o.NATSUser == "" {
					return errors.New("needs -nats-user")
				}
				return nil
			}},
			check{"nats-tls-ca", func() error { return checkFile(o.NATSTLSCA) }},
			check{"nats-tls-cert", func() error { return checkPair(o.NATSTLSCert, o.NATSTLSKey, "-nats-tls-key") }},
			check{"nats-tls-key", func() error { return checkPair(o.NATSTLSKey, o.NATSTLSCert, "-nats-tls-cert") }},
		)
	}
	return cs
}

func positive(n int64) error {
	if n <= 0 {
		return errors.New("must be positive")
	}
	return nil
}

func nonNegative(n int64) error {
	if n < 0 {
		return errors.New("must not be negative")
	}
	return nil
}

func nonEmpty(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// checkAddr accepts host:port with a numeric port (host may be empty for
// every interface).
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("must not be empty")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if _, err := parsePort(port); err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	return nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 0 to 65535", s)
	}
	return p, nil
}

// checkURL accepts scheme://[user@]host:port and plain host:port.
func checkURL(s string) error {
	if !strings.Contains(s, "://") {
		if err := checkAddr(s); err != nil {
			return fmt.Errorf("%s is neither a URL nor host:port", redactURL(s))
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%s is not a valid URL", redactURL(s))
	}
	if p := u.Port(); p != "" {
		if _, err := parsePort(p); err != nil {
			return fmt.Errorf("%s: %w", redactURL(s), err)
		}
	}
	return nil
}

// checkPair requires other whenever v is set, and v to be a readable file.
func checkPair(v, other, otherFlag string) error {
	if v == "" {
		return nil
	}
	if other == "" {
		return fmt.Errorf("needs %s", otherFlag)
	}
	return checkFile(v)
}

func checkFile(path string) error {
	if path == "" {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

// checkPattern requires an absolute ServeMux pattern with {name}, and
// checks it registers.
func checkPattern(p string) (err error) {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q must start with / (no method or host)", p)
	}
	if !strings.Contains(p, "{name}") {
		return fmt.Errorf("%q must contain {name}", p)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%q is not a valid route pattern: %v", p, r)
		}
	}()
	http.NewServeMux().Handle(p, http.NotFoundHandler())
	return nil
}

// EdgeConfig returns the edge configuration the options describe. The
// options must be valid (Load validates them).
func (o *Options) EdgeConfig() (edge.Config, error) {
	levels, err := policy.ParseLevels(o.BroadcastLevels)
	if err != nil {
		return edge.Config{}, &OptionError{Option: "broadcast-levels", Source: o.sources["broadcast-levels"], Err: err}
	}
	cfg := edge.Config{
		SubjectPrefix:   o.SubjectPrefix,
		SSEPath:         o.SSEPath,
		Signing:         policy.Signer{Secret: o.SigningSecret, Strict: o.SigningStrict},
		Levels:          levels,
		PublishTokens:   o.PublishTokens,
		MaxPublishBytes: o.MaxPublishBytes,
		Retry:           o.Retry,
		PingInterval:    o.PingInterval,
		WriteTimeout:    o.WriteTimeout,
		QueueBytes:      o.QueueBytes,
		QueueMessages:   o.QueueMessages,
		AllowAllOrigins: o.AllowAllOrigins,
		DrainWindow:     o.DrainWindow,

		WSOriginPatterns: o.WSOrigins,
		WSReadLimit:      o.WSReadLimit,
		WSEchoNames:      o.WSEcho,
	}
	if o.History {
		cfg.History = &broker.HistoryConfig{
			MaxAge:   o.HistoryMaxAge,
			MaxMsgs:  int64(o.HistoryMaxMsgs),
			MaxBytes: int64(o.HistoryMaxBytes),
			Replicas: o.HistoryReplicas,
		}
	}
	if o.PodeWeb {
		cfg.ExtraSSERoutes = append(cfg.ExtraSSERoutes, edge.PodeWebRoute)
	}
	if err := cfg.Validate(); err != nil {
		return edge.Config{}, err
	}
	return cfg, nil
}
