package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/edge"
	"github.com/herald-push/herald/pkg/policy"
)

// Validate checks the options of the binary they were loaded for: first
// each option's own check, in table order, then the edge configuration the
// options describe, with edge.Config.Validate. It returns an *OptionError
// naming the first bad option and where its value came from.
func (o *Options) Validate() error {
	for _, op := range optionTable {
		if op.modes&o.mode == 0 {
			continue
		}
		if err := op.validate(o); err != nil {
			return o.optionError(op.name, err)
		}
	}
	_, err := o.EdgeConfig()
	return err
}

// validate runs the option's own checks on o.
func (op *option) validate(o *Options) error {
	if op.noZero && isZero(op.field(o)) {
		return errors.New("must be positive")
	}
	if op.check != nil {
		return op.check(o)
	}
	return nil
}

func isZero(field any) bool {
	switch p := field.(type) {
	case *int:
		return *p == 0
	case *time.Duration:
		return *p == 0
	case *float64:
		return *p == 0
	}
	return false
}

// optionError reports err as the error of option name, with the source
// of its value.
func (o *Options) optionError(name string, err error) *OptionError {
	return &OptionError{Option: name, Source: o.sources[name], Err: err}
}

// clustered reports whether any cluster option of cmd/embedded is set.
func (o *Options) clustered() bool {
	return o.ClusterListen != "" || len(o.Routes) > 0 || o.ClusterName != ""
}

// neededToCluster refuses an empty value of an option every cluster member
// needs, once any cluster option is set; why says what the value must be.
func (o *Options) neededToCluster(value, why string) error {
	if o.clustered() && value == "" {
		return fmt.Errorf("required to cluster (%s)", why)
	}
	return nil
}

func positive(n int64) error {
	if n <= 0 {
		return errors.New("must be positive")
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

// checkRoutes accepts NATS route URLs with scheme nats-route, nats or tls.
func checkRoutes(routes []string) error {
	for _, r := range routes {
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

// EdgeConfig returns the edge configuration the options describe, checked
// by edge.Config.Validate. A bad field is reported as an *OptionError of
// the option that fills it.
func (o *Options) EdgeConfig() (edge.Config, error) {
	levels, err := policy.ParseLevels(o.BroadcastLevels)
	if err != nil {
		return edge.Config{}, o.optionError("broadcast-levels", err)
	}
	connectAuth, err := policy.ParseConnectModes(o.ConnectAuth)
	if err != nil {
		return edge.Config{}, o.optionError("connect-auth", err)
	}
	scopes, err := policy.ParseScopes(o.Scopes)
	if err != nil {
		return edge.Config{}, o.optionError("scopes", err)
	}
	var tokenKeys []byte
	if o.TokenKeys != "" {
		if tokenKeys, err = os.ReadFile(o.TokenKeys); err != nil {
			return edge.Config{}, o.optionError("token-keys", err)
		}
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
		BodyTimeout:     o.BodyTimeout,

		MaxConnections:      o.MaxConnections,
		MaxConnectionsPerIP: o.MaxConnsPerIP,
		PerIPExempt:         o.PerIPExempt,
		ConnectRate:         o.ConnectRate,
		ConnectBurst:        o.ConnectBurst,
		QueueBytes:          o.QueueBytes,
		QueueMessages:       o.QueueMessages,
		AllowAllOrigins:     o.AllowAllOrigins,
		MaxReplays:          o.MaxReplays,
		DrainWindow:         o.DrainWindow,
		NoHijack:            o.NoHijack,
		LogInterval:         o.LogInterval,
		EdgeID:              o.EdgeID,

		NoLifecycle:       !o.Lifecycle,
		PresenceHeartbeat: o.PresenceHeartbeat,
		PresenceLostAfter: o.PresenceLostAfter,
		PresenceTimeout:   o.PresenceTimeout,
		KeepClientID:      o.KeepClientID,

		WSOriginPatterns: o.WSOrigins,
		WSReadLimit:      o.WSReadLimit,
		WSInboundRate:    o.WSInboundRate,
		WSInboundBurst:   o.WSInboundBurst,
		WSEchoNames:      o.WSEcho,

		ConnectAuth: connectAuth,
		Token: policy.TokenConfig{Secret: o.TokenSecret, PublicKeys: tokenKeys,
			Audience: o.TokenAudience, Issuer: o.TokenIssuer, Leeway: o.TokenLeeway},
		TokenCookie:      o.TokenCookie,
		AuthTimeout:      o.AuthTimeout,
		AuthHeaders:      o.AuthHeaders,
		AuthCacheSize:    o.AuthCacheSize,
		Scopes:           scopes,
		LocalIdleTimeout: o.LocalIdle,
	}
	if o.History {
		cfg.History = &broker.HistoryConfig{
			Stream:   o.HistoryStream,
			MaxAge:   o.HistoryMaxAge,
			MaxMsgs:  int64(o.HistoryMaxMsgs),
			MaxBytes: int64(o.HistoryMaxBytes),
			Replicas: o.HistoryReplicas,
			Memory:   o.HistoryMemory,
		}
	}
	if o.LifecycleMaxAge != 0 {
		cfg.LifecycleStream = &broker.LifecycleStreamConfig{MaxAge: o.LifecycleMaxAge, Replicas: o.LifecycleReplicas}
	}
	for _, r := range o.SSERoutes {
		pattern, name, _ := strings.Cut(r, "=")
		cfg.ExtraSSERoutes = append(cfg.ExtraSSERoutes, edge.SSERoute{Pattern: pattern, Name: name})
	}
	if o.PodeWeb {
		cfg.ExtraSSERoutes = append(cfg.ExtraSSERoutes, edge.PodeWebRoute)
	}
	cfg.TaskPath, cfg.TaskLease = o.TaskPath, o.TaskLease
	for _, r := range o.TaskRoutes {
		tr, err := edge.ParseTaskRoute(r)
		if err != nil {
			return edge.Config{}, o.optionError("task-routes", err)
		}
		cfg.TaskRoutes = append(cfg.TaskRoutes, tr)
	}
	if err := cfg.Validate(); err != nil {
		var ce *edge.ConfigError
		if errors.As(err, &ce) {
			if name := o.optionOf(ce.Field); name != "" {
				return edge.Config{}, o.optionError(name, ce.Err)
			}
		}
		return edge.Config{}, err
	}
	return cfg, nil
}

// optionOf returns the option that fills the edge.Config field named by an
// *edge.ConfigError: "QueueBytes", "History.MaxAge", "WSOriginPatterns[1]".
// ExtraSSERoutes holds the routes of -sse-routes, then -pode-web's.
func (o *Options) optionOf(field string) string {
	base, index, _ := strings.Cut(field, "[")
	if i, err := strconv.Atoi(strings.TrimSuffix(index, "]")); err == nil && base == "ExtraSSERoutes" && i >= len(o.SSERoutes) {
		return "pode-web"
	}
	for _, op := range optionTable {
		if op.edge == base {
			return op.name
		}
	}
	return ""
}
