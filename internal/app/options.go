package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/edge"
	"github.com/herald-push/herald/pkg/policy"
)

// Mode selects the binary whose options are loaded.
type Mode uint8

const (
	// ModeEmbedded is cmd/embedded: embedded NATS server plus an edge.
	ModeEmbedded Mode = 1 << iota
	// ModeEdge is cmd/edge: an edge joining an existing NATS cluster.
	ModeEdge

	modeBoth = ModeEmbedded | ModeEdge
)

// String names the binary: "cmd/embedded" or "cmd/edge".
func (m Mode) String() string {
	switch m {
	case ModeEmbedded:
		return "cmd/embedded"
	case ModeEdge:
		return "cmd/edge"
	}
	return "herald"
}

// EnvPrefix starts every environment variable that sets an option.
const EnvPrefix = "HERALD_"

// Defaults of the options that are not edge.Config defaults.
const (
	DefaultListen        = "127.0.0.1:8080"
	DefaultNATSListen    = "127.0.0.1:4222"
	DefaultDataDir       = "herald-data"
	DefaultShutdownGrace = 10 * time.Second
	DefaultLogLevel      = "info"
	DefaultLogFormat     = "text"
)

// Options is the configuration of both binaries. Fields that belong to one
// binary only are ignored by the other. Load fills it from defaults, the
// YAML file, the environment and flags; Validate checks it.
type Options struct {
	// Config is the YAML file the options were read from, if any.
	Config string

	// Common options.

	Listen          string        // -listen: HTTP listen address
	PublishTokens   []string      // -publish-token: bearer tokens for POST /publish (secret)
	SigningSecret   string        // -signing-secret: clientId signing secret (secret)
	SigningStrict   bool          // -signing-strict: bind signatures to User-Agent and IP
	BroadcastLevels string        // -broadcast-levels: "name=level,..." (policy.ParseLevels)
	SubjectPrefix   string        // -subject-prefix: first NATS subject token
	SSEPath         string        // -sse-path: SSE route pattern
	SSERoutes       []string      // -sse-routes: more SSE routes, "pattern" or "pattern=name"
	PodeWeb         bool          // -pode-web: add edge.PodeWebRoute
	Retry           time.Duration // -retry: SSE retry: field, 0 = not sent
	PingInterval    time.Duration // -ping-interval: idle time before pode.ping
	WriteTimeout    time.Duration // -write-timeout: deadline of one write to a client
	BodyTimeout     time.Duration // -body-timeout: deadline for a request's body
	MaxConnections  int           // -max-connections: connections on this edge
	MaxConnsPerIP   int           // -max-connections-per-ip: connections from one address
	PerIPExempt     []string      // -per-ip-exempt: prefixes the per-address cap does not apply to
	ConnectRate     float64       // -connect-rate: new connections per second
	ConnectBurst    int           // -connect-burst: new connections at once above the rate
	QueueBytes      int           // -queue-bytes: per-connection queue bound in bytes
	QueueMessages   int           // -queue-messages: per-connection queue bound in messages
	MaxPublishBytes int           // -max-publish-bytes: POST /publish body cap
	AllowAllOrigins bool          // -allow-all-origins: Access-Control-Allow-Origin: *
	NoHijack        bool          // -no-hijack: keep HTTP/1.1 streams inside net/http
	TLSCert         string        // -tls-cert: HTTPS certificate file
	TLSKey          string        // -tls-key: HTTPS key file
	H2C             bool          // -h2c: cleartext HTTP/2 alongside HTTP/1.1
	LogLevel        string        // -log-level: debug, info, warn, error
	LogFormat       string        // -log-format: text or json
	LogInterval     time.Duration // -log-interval: at most one warning of a kind per interval
	EdgeID          string        // -edge-id: this edge's name in logs and system messages
	ShutdownGrace   time.Duration // -shutdown-grace: bound of each shutdown step
	DrainWindow     time.Duration // -drain-window: spread of client closes at shutdown
	WSListen        string        // -ws-listen: dedicated Pode-compatible WebSocket listen address
	WSOrigins       []string      // -ws-origins: browser origins allowed to open WebSockets
	WSReadLimit     int           // -ws-read-limit: largest WebSocket client message in bytes
	WSInboundRate   float64       // -ws-inbound-rate: client messages per second per connection
	WSInboundBurst  int           // -ws-inbound-burst: client messages at once above the rate
	WSEcho          []string      // -ws-echo: names whose client messages the edge re-sends (Pode's echo)
	PprofListen     string        // -pprof-listen: address of the runtime profiling endpoints
	ConnectAuth     string        // -connect-auth: "pattern=mode,..." (policy.ParseConnectModes)
	TokenSecret     string        // -token-secret: HS256 key of connection tokens (secret)
	TokenKeys       string        // -token-keys: PEM file of RS256/EdDSA public keys
	TokenAudience   string        // -token-audience: required aud of connection tokens
	TokenIssuer     string        // -token-issuer: required iss of connection tokens
	TokenLeeway     time.Duration // -token-leeway: clock skew allowed on token times
	TokenCookie     string        // -token-cookie: cookie a token may come in
	AuthTimeout     time.Duration // -auth-timeout: deadline of a backend's connect decision
	AuthHeaders     []string      // -auth-headers: request headers forwarded to backends
	AuthCacheSize   int           // -auth-cache-size: backend decisions kept for reuse
	Scopes          string        // -scopes: "pattern=scope,..." (policy.ParseScopes)
	LocalIdle       time.Duration // -local-idle-timeout: silence that ends a Local stream
	History         bool          // -history: event history and resume (JetStream)
	HistoryMaxAge   time.Duration // -history-max-age: how long events are kept
	HistoryMaxMsgs  int           // -history-max-msgs: cap on stored events
	HistoryMaxBytes int           // -history-max-bytes: cap on stored bytes
	HistoryReplicas int           // -history-replicas: stream replication factor
	HistoryStream   string        // -history-stream: stream name
	HistoryMemory   bool          // -history-memory: memory storage instead of files
	MaxReplays      int           // -max-replays: concurrent replays from the history
	TaskRoutes      []string      // -task-routes: async routes, "METHOD /path setting=value ..."
	TaskPath        string        // -task-path: where tasks are read, stopped and queried
	TaskLease       time.Duration // -task-lease: how long a worker holds a task without renewing it

	Lifecycle         bool          // -lifecycle: publish connect and disconnect events
	LifecycleMaxAge   time.Duration // -lifecycle-max-age: keep lifecycle events in a stream this long (0: no stream)
	LifecycleReplicas int           // -lifecycle-replicas: lifecycle stream replication factor
	PresenceHeartbeat time.Duration // -presence-heartbeat: how often the edge tells the others it is alive
	PresenceLostAfter time.Duration // -presence-lost-after: silence after which an edge is taken for lost
	PresenceTimeout   time.Duration // -presence-timeout: wait for the edges' answers to a presence request
	KeepClientID      bool          // -keep-client-id: SSE clients keep their clientId across reconnects

	// cmd/embedded options.

	NATSListen    string   // -nats-listen: embedded NATS client address (port 0 = random)
	NATSAuth      []string // -nats-auth: credentials the embedded NATS server requires (secret)
	DataDir       string   // -data: JetStream directory
	SyncAlways    bool     // -sync-always: fsync every JetStream write
	ClusterName   string   // -cluster-name: NATS cluster name
	ClusterListen string   // -cluster-listen: NATS route listen address
	Routes        []string // -routes: NATS route URLs of other cluster members
	ServerName    string   // -server-name: NATS server name (unique in a cluster)

	// cmd/edge options.

	NATSURLs     []string // -nats: NATS server URLs
	NATSCreds    string   // -nats-creds: credentials file
	NATSUser     string   // -nats-user: user name
	NATSPassword string   // -nats-password: password (secret)
	NATSToken    string   // -nats-token: token (secret)
	NATSNkey     string   // -nats-nkey: file holding a user nkey's seed
	NATSTLSCA    string   // -nats-tls-ca: CA file for NATS TLS
	NATSTLSCert  string   // -nats-tls-cert: client certificate file
	NATSTLSKey   string   // -nats-tls-key: client key file
	NATSName     string   // -nats-name: connection name shown by NATS monitoring

	mode           Mode
	sources        map[string]string // option name → where its value came from
	generatedToken bool
}

// kind says how an option's text is parsed.
type kind uint8

const (
	kindString kind = iota
	kindBool
	kindDuration
	kindInt
	kindSize
	kindList
	kindFloat
)

// option describes one option: its name (flag and YAML key), environment
// variable, default, help text, the field it fills and how it is checked.
type option struct {
	name   string
	kind   kind
	def    string
	defFor map[Mode]string // a default that differs by binary, overriding def
	usage  string
	secret bool
	// redactItem shows one item of a secret list without its secret (the
	// summary shows "[redacted] x N" without it).
	redactItem func(item string) string
	pairs      bool // YAML may write it as a mapping, read as key=value items
	modes      Mode
	field      func(o *Options) any

	// edge names the edge.Config field the option fills ("QueueBytes",
	// "History.MaxAge"). edge.Config.Validate checks that value, and its
	// *edge.ConfigError on the field is reported as this option's error.
	edge string
	// noZero refuses 0 with "must be positive": edge.Config reads a zero
	// field as its default, so a typed 0 would silently mean the default.
	noZero bool
	// check validates what edge.Config.Validate does not: the options of
	// the binaries alone, and rules across options (kept with the option
	// whose message names the other). nil: nothing to check here.
	check func(o *Options) error
}

// defaultFor returns the option's default in mode.
func (op *option) defaultFor(mode Mode) string {
	if d, ok := op.defFor[mode]; ok {
		return d
	}
	return op.def
}

// env returns the environment variable of the option.
func (op *option) env() string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(op.name, "-", "_"))
}

// optionTable lists every option in help order. It is the single source of
// names, defaults, help text and checks; README's Configuration table lists
// the same options (TestREADMEOptions compares them).
var optionTable = []*option{
	{name: "listen", def: DefaultListen, modes: modeBoth,
		usage: "HTTP listen `address` (host:port; port 0 picks a free port)",
		field: func(o *Options) any { return &o.Listen },
		check: func(o *Options) error { return checkAddr(o.Listen) }},
	{name: "publish-token", kind: kindList, secret: true, modes: modeBoth, edge: "PublishTokens",
		usage: "bearer `tokens` accepted by POST /publish, comma-separated (at least " + strconv.Itoa(edge.MinPublishTokenLen) + " characters each, no spaces); generated and printed when unset",
		field: func(o *Options) any { return &o.PublishTokens }},
	{name: "signing-secret", secret: true, modes: modeBoth, edge: "Signing",
		usage: "`secret` that signs assigned clientIds and verifies client-supplied ones (Pode-compatible); empty turns signing off",
		field: func(o *Options) any { return &o.SigningSecret }},
	{name: "signing-strict", kind: kindBool, modes: modeBoth,
		usage: "bind signed clientIds to the client's User-Agent and IP (needs -signing-secret)",
		field: func(o *Options) any { return &o.SigningStrict },
		check: func(o *Options) error {
			if o.SigningStrict && o.SigningSecret == "" {
				return errors.New("needs -signing-secret")
			}
			return nil
		}},
	{name: "broadcast-levels", pairs: true, modes: modeBoth, edge: "Levels",
		usage: "broadcast `levels` as name=level pairs, e.g. \"*=group,Orders=clientid\" (levels: name, group, clientid)",
		field: func(o *Options) any { return &o.BroadcastLevels },
		check: func(o *Options) error {
			_, err := policy.ParseLevels(o.BroadcastLevels)
			return err
		}},
	{name: "subject-prefix", def: "herald", modes: modeBoth, edge: "SubjectPrefix",
		usage: "first NATS subject `token`(s) of every Herald subject",
		field: func(o *Options) any { return &o.SubjectPrefix }},
	{name: "sse-path", def: edge.DefaultSSEPath, modes: modeBoth, edge: "SSEPath",
		usage: "SSE route `pattern` (net/http ServeMux syntax, must contain {name})",
		field: func(o *Options) any { return &o.SSEPath }},
	{name: "sse-routes", kind: kindList, pairs: true, modes: modeBoth, edge: "ExtraSSERoutes",
		usage: "more SSE `routes`, comma-separated, each a pattern with {name} or pattern=name (a fixed connection name), e.g. /pages/{group}/events=Pages",
		field: func(o *Options) any { return &o.SSERoutes }},
	{name: "pode-web", kind: kindBool, modes: modeBoth,
		usage: "also serve Pode.Web's SSE route " + edge.PodeWebRoute.Pattern + " (name " + edge.PodeWebRoute.Name + ")",
		field: func(o *Options) any { return &o.PodeWeb }},
	{name: "retry", kind: kindDuration, def: "0s", modes: modeBoth, edge: "Retry",
		usage: "SSE reconnect `delay` sent as retry: after the headers; 0 sends none",
		field: func(o *Options) any { return &o.Retry }},
	{name: "ping-interval", kind: kindDuration, def: edge.DefaultPingInterval.String(), modes: modeBoth, edge: "PingInterval", noZero: true,
		usage: "idle `period` after which pode.ping is sent",
		field: func(o *Options) any { return &o.PingInterval }},
	{name: "write-timeout", kind: kindDuration, def: edge.DefaultWriteTimeout.String(), modes: modeBoth, edge: "WriteTimeout", noZero: true,
		usage: "`deadline` of one write to a client; a client that misses it is closed as slow",
		field: func(o *Options) any { return &o.WriteTimeout }},
	{name: "body-timeout", kind: kindDuration, def: edge.DefaultBodyTimeout.String(), modes: modeBoth, edge: "BodyTimeout", noZero: true,
		usage: "`deadline` for a request to send its body (streams clear it once they start); a client that stalls is cut off",
		field: func(o *Options) any { return &o.BodyTimeout }},
	{name: "max-connections", kind: kindInt, def: "0", modes: modeBoth, edge: "MaxConnections",
		usage: "most connections this edge holds (`number`); more are told to come back later (SSE: herald.refused and retry:, WebSocket: close 1013). 0 keeps a tenth of the open-file limit for everything else",
		field: func(o *Options) any { return &o.MaxConnections }},
	{name: "max-connections-per-ip", kind: kindInt, def: strconv.Itoa(edge.DefaultMaxConnsPerIP), modes: modeBoth, edge: "MaxConnectionsPerIP", noZero: true,
		usage: "most connections from one client address (`number`), except -per-ip-exempt; -1 turns it off",
		field: func(o *Options) any { return &o.MaxConnsPerIP }},
	{name: "per-ip-exempt", kind: kindList, def: strings.Join(edge.DefaultPerIPExempt, ","), modes: modeBoth, edge: "PerIPExempt",
		usage: "address `prefixes` -max-connections-per-ip does not apply to (your proxies, NATs); \"" + edge.NoExemptions + "\" exempts none",
		field: func(o *Options) any { return &o.PerIPExempt }},
	{name: "connect-rate", kind: kindFloat, def: strconv.Itoa(edge.DefaultConnectRate), modes: modeBoth, edge: "ConnectRate", noZero: true,
		usage: "new connections this edge takes per second (`rate`), in bursts of -connect-burst; more are told to come back later; negative turns it off",
		field: func(o *Options) any { return &o.ConnectRate }},
	{name: "connect-burst", kind: kindInt, def: strconv.Itoa(edge.DefaultConnectBurst), modes: modeBoth, edge: "ConnectBurst", noZero: true,
		usage: "new connections taken at once above -connect-rate (`number`)",
		field: func(o *Options) any { return &o.ConnectBurst }},
	{name: "queue-bytes", kind: kindSize, def: "1MiB", modes: modeBoth, edge: "QueueBytes", noZero: true,
		usage: "per-connection queue bound in `bytes`; overflow closes the client as slow",
		field: func(o *Options) any { return &o.QueueBytes }},
	{name: "queue-messages", kind: kindInt, def: strconv.Itoa(edge.DefaultQueueMessages), modes: modeBoth, edge: "QueueMessages", noZero: true,
		usage: "per-connection queue bound in `messages`; overflow closes the client as slow",
		field: func(o *Options) any { return &o.QueueMessages }},
	{name: "max-publish-bytes", kind: kindSize, def: "64KiB", modes: modeBoth, edge: "MaxPublishBytes", noZero: true,
		usage: "largest POST /publish body in `bytes`",
		field: func(o *Options) any { return &o.MaxPublishBytes }},
	{name: "allow-all-origins", kind: kindBool, modes: modeBoth, edge: "AllowAllOrigins",
		usage: "send Access-Control-Allow-Origin: * on SSE responses",
		field: func(o *Options) any { return &o.AllowAllOrigins }},
	{name: "no-hijack", kind: kindBool, modes: modeBoth, edge: "NoHijack",
		usage: "keep HTTP/1.1 streams inside net/http instead of taking over their sockets after the response head: costs the per-connection buffers hijacking frees; for middleware that must not be bypassed",
		field: func(o *Options) any { return &o.NoHijack }},
	{name: "tls-cert", modes: modeBoth,
		usage: "TLS certificate `file` (PEM); with -tls-key serves HTTPS with HTTP/2",
		field: func(o *Options) any { return &o.TLSCert },
		check: func(o *Options) error { return checkPair(o.TLSCert, o.TLSKey, "-tls-key") }},
	{name: "tls-key", modes: modeBoth,
		usage: "TLS private key `file` (PEM)",
		field: func(o *Options) any { return &o.TLSKey },
		check: func(o *Options) error { return checkPair(o.TLSKey, o.TLSCert, "-tls-cert") }},
	{name: "h2c", kind: kindBool, modes: modeBoth,
		usage: "serve cleartext HTTP/2 (prior knowledge) alongside HTTP/1.1; not with TLS",
		field: func(o *Options) any { return &o.H2C },
		check: func(o *Options) error {
			if o.H2C && o.TLSCert != "" {
				return errors.New("applies only without TLS (HTTPS already negotiates HTTP/2)")
			}
			return nil
		}},
	{name: "log-level", def: DefaultLogLevel, modes: modeBoth,
		usage: "log `level`: debug, info, warn or error",
		field: func(o *Options) any { return &o.LogLevel },
		check: func(o *Options) error {
			_, err := parseLevel(o.LogLevel)
			return err
		}},
	{name: "log-format", def: DefaultLogFormat, modes: modeBoth,
		usage: "log `format`: text or json",
		field: func(o *Options) any { return &o.LogFormat },
		check: func(o *Options) error {
			if o.LogFormat != "text" && o.LogFormat != "json" {
				return fmt.Errorf("unknown format %q (want text or json)", o.LogFormat)
			}
			return nil
		}},
	{name: "log-interval", kind: kindDuration, def: edge.DefaultLogInterval.String(), modes: modeBoth, edge: "LogInterval", noZero: true,
		usage: "at most one warning of a kind (e.g. broadcast-level drops) per `period`",
		field: func(o *Options) any { return &o.LogInterval }},
	{name: "edge-id", modes: modeBoth, edge: "EdgeID",
		usage: "`name` of this edge in logs and system messages, unique in the cluster; random when unset",
		field: func(o *Options) any { return &o.EdgeID }},
	{name: "shutdown-grace", kind: kindDuration, def: DefaultShutdownGrace.String(), modes: modeBoth,
		usage: "`duration` bounding each shutdown step (edge drain, HTTP server, NATS drain, embedded NATS)",
		field: func(o *Options) any { return &o.ShutdownGrace },
		check: func(o *Options) error { return positive(int64(o.ShutdownGrace)) }},

	{name: "drain-window", kind: kindDuration, def: "0s", defFor: map[Mode]string{ModeEdge: "5s"}, modes: modeBoth, edge: "DrainWindow",
		usage: "at shutdown, spread the clients' pode.close over this `window` so they do not all reconnect at once (less than -shutdown-grace)",
		field: func(o *Options) any { return &o.DrainWindow },
		check: func(o *Options) error {
			if o.DrainWindow > 0 && o.DrainWindow >= o.ShutdownGrace {
				return fmt.Errorf("%v must be less than -shutdown-grace (%v)", o.DrainWindow, o.ShutdownGrace)
			}
			return nil
		}},

	{name: "history", kind: kindBool, def: "true", modes: modeBoth, edge: "History",
		usage: "keep event history in JetStream: position ids, resume with Last-Event-ID on any edge, gap repair",
		field: func(o *Options) any { return &o.History }},
	{name: "history-max-age", kind: kindDuration, def: broker.DefaultHistoryMaxAge.String(), modes: modeBoth, edge: "History.MaxAge",
		usage: "how long the history keeps events (`duration`); only used when this process creates the stream",
		field: func(o *Options) any { return &o.HistoryMaxAge }},
	{name: "history-max-msgs", kind: kindInt, def: strconv.Itoa(broker.DefaultHistoryMaxMsgs), modes: modeBoth, edge: "History.MaxMsgs",
		usage: "cap on the `number` of events the history keeps",
		field: func(o *Options) any { return &o.HistoryMaxMsgs }},
	{name: "history-max-bytes", kind: kindSize, def: "1GiB", modes: modeBoth, edge: "History.MaxBytes",
		usage: "cap on the `size` of the history",
		field: func(o *Options) any { return &o.HistoryMaxBytes }},
	{name: "history-replicas", kind: kindInt, def: "1", modes: modeBoth, edge: "History.Replicas",
		usage: "replication `factor` of the history stream: 1 on one node, 3 in a cluster",
		field: func(o *Options) any { return &o.HistoryReplicas }},
	{name: "history-stream", modes: modeBoth, edge: "History.Stream",
		usage: "`name` of the history stream; default the subject prefix in upper case plus _EVENTS (HERALD_EVENTS)",
		field: func(o *Options) any { return &o.HistoryStream }},
	{name: "history-memory", kind: kindBool, modes: modeBoth, edge: "History.Memory",
		usage: "keep the history in memory instead of files (lost when every replica restarts); only used when this process creates the stream",
		field: func(o *Options) any { return &o.HistoryMemory }},
	{name: "max-replays", kind: kindInt, def: strconv.Itoa(edge.DefaultMaxReplays), modes: modeBoth, edge: "MaxReplays", noZero: true,
		usage: "`number` of replays from the history (resumes and gap repairs) this edge runs at once; more wait their turn",
		field: func(o *Options) any { return &o.MaxReplays }},

	{name: "task-routes", kind: kindList, pairs: true, modes: modeBoth, edge: "TaskRoutes",
		usage: "async `routes` (Pode's async routes, run by workers through NATS), comma-separated, each \"METHOD /path\" and optional settings: max=2 timeout=8h retention=10m cancellable=true group=<path> result=false access=open|token|connect attempts=3 headers=Content-Type;X-Other; in YAML a mapping of route to settings",
		field: func(o *Options) any { return &o.TaskRoutes },
		check: func(o *Options) error {
			for _, r := range o.TaskRoutes {
				if _, err := edge.ParseTaskRoute(r); err != nil {
					return err
				}
			}
			return nil
		}},
	{name: "task-path", def: edge.DefaultTaskPath, modes: modeBoth, edge: "TaskPath",
		usage: "`path` where a task is read (GET ?id=), stopped (DELETE ?id=) and tasks are queried (POST, publish token)",
		field: func(o *Options) any { return &o.TaskPath }},
	{name: "task-lease", kind: kindDuration, def: edge.DefaultTaskLease.String(), modes: modeBoth, edge: "TaskLease", noZero: true,
		usage: "how long a worker holds a task without renewing it before the task goes to another worker (`duration`, at least 3s)",
		field: func(o *Options) any { return &o.TaskLease }},
	{name: "lifecycle", kind: kindBool, def: "true", modes: modeBoth, edge: "NoLifecycle",
		usage: "publish a connect and a disconnect event for every connection on " + broker.DefaultPrefix + ".sys.lifecycle.>, and the disconnects of a lost edge's connections (edge_lost)",
		field: func(o *Options) any { return &o.Lifecycle }},
	{name: "lifecycle-max-age", kind: kindDuration, def: "0s", modes: modeBoth, edge: "LifecycleStream",
		usage: "keep lifecycle events in a JetStream stream (prefix in upper case plus _LIFECYCLE) this `long`, for backends that subscribe late; 0: no stream",
		field: func(o *Options) any { return &o.LifecycleMaxAge },
		check: func(o *Options) error {
			if o.LifecycleMaxAge > 0 && !o.Lifecycle {
				return errors.New("needs -lifecycle")
			}
			return nil
		}},
	{name: "lifecycle-replicas", kind: kindInt, def: "1", modes: modeBoth,
		usage: "replication `factor` of the lifecycle stream: 1 on one node, 3 in a cluster",
		field: func(o *Options) any { return &o.LifecycleReplicas },
		check: func(o *Options) error {
			if o.LifecycleReplicas < 1 || o.LifecycleReplicas > 5 {
				return errors.New("must be 1 to 5")
			}
			return nil
		}},
	{name: "presence-heartbeat", kind: kindDuration, def: broker.DefaultPresenceHeartbeat.String(), modes: modeBoth, edge: "PresenceHeartbeat", noZero: true,
		usage: "how often this edge tells the other edges it is alive (`period`)",
		field: func(o *Options) any { return &o.PresenceHeartbeat }},
	{name: "presence-lost-after", kind: kindDuration, def: broker.DefaultPresenceLostAfter.String(), modes: modeBoth, edge: "PresenceLostAfter", noZero: true,
		usage: "`silence` after which the other edges take an edge for lost: presence stops waiting for it and its watchers publish edge_lost disconnects for its connections (at least three heartbeats)",
		field: func(o *Options) any { return &o.PresenceLostAfter }},
	{name: "presence-timeout", kind: kindDuration, def: broker.DefaultPresenceTimeout.String(), modes: modeBoth, edge: "PresenceTimeout", noZero: true,
		usage: "how long a presence request waits for the other edges' answers (`duration`)",
		field: func(o *Options) any { return &o.PresenceTimeout }},
	{name: "keep-client-id", kind: kindBool, modes: modeBoth, edge: "KeepClientID",
		usage: "SSE clients of every route keep their clientId across reconnects by proving it in Last-Event-ID (Pode.Web's route always does)",
		field: func(o *Options) any { return &o.KeepClientID }},

	{name: "ws-listen", modes: modeBoth,
		usage: "also serve WebSockets Pode-style on this `address` (host:port): any path upgrades and the name is the path, e.g. ws://host:8091/ is name \"/\"; TLS as -listen. /ws/{path} on -listen works without it",
		field: func(o *Options) any { return &o.WSListen },
		check: func(o *Options) error {
			if o.WSListen == "" {
				return nil
			}
			if o.WSListen == o.Listen && !strings.HasSuffix(o.WSListen, ":0") {
				return errors.New("must differ from -listen (/ws/{path} on -listen needs no second listener)")
			}
			return checkAddr(o.WSListen)
		}},
	{name: "ws-origins", kind: kindList, modes: modeBoth, edge: "WSOriginPatterns",
		usage: "browser `origins` allowed to open WebSockets besides the page's own host, comma-separated path.Match patterns of a host (*.example.com) or scheme://host; others get 403",
		field: func(o *Options) any { return &o.WSOrigins }},
	{name: "ws-read-limit", kind: kindSize, def: "64KiB", modes: modeBoth, edge: "WSReadLimit", noZero: true,
		usage: "largest WebSocket client message in `bytes`; a larger one closes the connection with 1009",
		field: func(o *Options) any { return &o.WSReadLimit }},
	{name: "ws-inbound-rate", kind: kindFloat, def: strconv.Itoa(edge.DefaultWSInboundRate), modes: modeBoth, edge: "WSInboundRate", noZero: true,
		usage: "average `rate`, in messages per second, at which one WebSocket client may send; beyond it and -ws-inbound-burst the connection is closed with 1008",
		field: func(o *Options) any { return &o.WSInboundRate }},
	{name: "ws-inbound-burst", kind: kindInt, def: strconv.Itoa(edge.DefaultWSInboundBurst), modes: modeBoth, edge: "WSInboundBurst", noZero: true,
		usage: "`number` of messages one WebSocket client may send at once above -ws-inbound-rate",
		field: func(o *Options) any { return &o.WSInboundBurst }},
	{name: "ws-echo", kind: kindList, defFor: map[Mode]string{ModeEmbedded: DemoName}, modes: modeBoth, edge: "WSEchoNames",
		usage: "connection `names` (\"*\" for all) whose WebSocket clients' messages the edge re-sends like Pode's default signal handler; letting clients broadcast is a privilege: none in cmd/edge, the demo page's " + DemoName + " in cmd/embedded; empty turns it off",
		field: func(o *Options) any { return &o.WSEcho }},
	{name: "pprof-listen", modes: modeBoth,
		usage: "serve Go's runtime profiles (net/http/pprof, /debug/pprof/) on this `address` (host:port); plain HTTP without authentication, so keep it on loopback or a private network. Off by default",
		field: func(o *Options) any { return &o.PprofListen },
		check: func(o *Options) error {
			if o.PprofListen == "" {
				return nil
			}
			if !strings.HasSuffix(o.PprofListen, ":0") && (o.PprofListen == o.Listen || o.PprofListen == o.WSListen) {
				return errors.New("must differ from -listen and -ws-listen: profiles are not for the public port")
			}
			return checkAddr(o.PprofListen)
		}},

	{name: "connect-auth", pairs: true, modes: modeBoth, edge: "ConnectAuth",
		usage: "who may connect, as pattern=mode `pairs`: open (anyone; the default), token (a token the app signed), backend (a NATS request on <prefix>.auth.<name>); e.g. \"*=token,Public=open,/tasks/*=backend\"",
		field: func(o *Options) any { return &o.ConnectAuth },
		check: func(o *Options) error {
			_, err := policy.ParseConnectModes(o.ConnectAuth)
			return err
		}},
	{name: "token-secret", secret: true, modes: modeBoth, edge: "Token.Secret",
		usage: "HS256 `secret` that verifies connection tokens (at least " + strconv.Itoa(policy.MinTokenSecretLen) + " bytes)",
		field: func(o *Options) any { return &o.TokenSecret }},
	{name: "token-keys", modes: modeBoth, edge: "Token.PublicKeys",
		usage: "PEM `file` of public keys that verify connection tokens: RSA (RS256) and Ed25519 (EdDSA); the edge never needs the private key",
		field: func(o *Options) any { return &o.TokenKeys },
		check: func(o *Options) error { return checkFile(o.TokenKeys) }},
	{name: "token-audience", modes: modeBoth, edge: "Token.Audience",
		usage: "`audience` connection tokens must name in aud; empty: not checked",
		field: func(o *Options) any { return &o.TokenAudience }},
	{name: "token-issuer", modes: modeBoth, edge: "Token.Issuer",
		usage: "`issuer` connection tokens must name in iss; empty: not checked",
		field: func(o *Options) any { return &o.TokenIssuer }},
	{name: "token-leeway", kind: kindDuration, def: "5s", modes: modeBoth, edge: "Token.Leeway",
		usage: "clock skew `allowed` on a token's exp, nbf and iat (a live connection is closed this long after exp)",
		field: func(o *Options) any { return &o.TokenLeeway }},
	{name: "token-cookie", def: edge.DefaultTokenCookie, modes: modeBoth, edge: "TokenCookie",
		usage: "`name` of the cookie a connection token may come in (besides ?token= and Authorization: Bearer)",
		field: func(o *Options) any { return &o.TokenCookie }},
	{name: "auth-timeout", kind: kindDuration, def: edge.DefaultAuthTimeout.String(), modes: modeBoth, edge: "AuthTimeout", noZero: true,
		usage: "`deadline` of a backend's connect decision; without an answer the connection is refused as unavailable (never let in)",
		field: func(o *Options) any { return &o.AuthTimeout }},
	{name: "auth-headers", kind: kindList, def: strings.Join(edge.DefaultAuthHeaders, ","), modes: modeBoth, edge: "AuthHeaders",
		usage: "request `headers` forwarded to backends (connect decisions, Local streams), comma-separated; cookies are always forwarded",
		field: func(o *Options) any { return &o.AuthHeaders }},
	{name: "auth-cache-size", kind: kindInt, def: strconv.Itoa(edge.DefaultAuthCacheSize), modes: modeBoth, edge: "AuthCacheSize", noZero: true,
		usage: "`number` of backend connect decisions kept for reuse (only those the backend marks cacheable); -1 turns the cache off",
		field: func(o *Options) any { return &o.AuthCacheSize }},
	{name: "scopes", pairs: true, modes: modeBoth, edge: "Scopes",
		usage: "connection scopes as pattern=scope `pairs`: global (addressable; the default), local (request-scoped streams from a backend on <prefix>.local.<name>), either (scope=local in the request chooses)",
		field: func(o *Options) any { return &o.Scopes },
		check: func(o *Options) error {
			_, err := policy.ParseScopes(o.Scopes)
			return err
		}},
	{name: "local-idle-timeout", kind: kindDuration, def: edge.DefaultLocalIdle.String(), modes: modeBoth, edge: "LocalIdleTimeout", noZero: true,
		usage: "`silence` after which a Local stream's backend counts as stalled and the stream ends (a backend keeps a quiet stream with keep-alives)",
		field: func(o *Options) any { return &o.LocalIdle }},

	{name: "nats-listen", def: DefaultNATSListen, modes: ModeEmbedded,
		usage: "embedded NATS client listen `address` (host:port; port 0 picks a free port)",
		field: func(o *Options) any { return &o.NATSListen },
		check: func(o *Options) error { return checkAddr(o.NATSListen) }},
	{name: "nats-auth", kind: kindList, secret: true, redactItem: redactCredential, modes: ModeEmbedded,
		usage: "`credentials` the embedded NATS server requires, comma-separated, each ROLE:user:NAME:PASSWORD (plain or bcrypt), ROLE:token:TOKEN or ROLE:nkey:PUBLIC-KEY; ROLE is edge, producer, consumer, worker, backend or admin and sets what the credential may publish and subscribe to. Empty: no authentication (keep -nats-listen on loopback)",
		field: func(o *Options) any { return &o.NATSAuth },
		check: func(o *Options) error {
			if _, err := broker.NewSubjects(o.SubjectPrefix); err != nil {
				return nil // -subject-prefix reports it
			}
			_, err := o.natsUsers()
			return err
		}},
	{name: "data", def: DefaultDataDir, modes: ModeEmbedded,
		usage: "JetStream data `directory`",
		field: func(o *Options) any { return &o.DataDir },
		check: func(o *Options) error { return nonEmpty(o.DataDir) }},
	{name: "sync-always", kind: kindBool, modes: ModeEmbedded,
		usage: "fsync every JetStream write (safer, slower)",
		field: func(o *Options) any { return &o.SyncAlways }},
	{name: "cluster-listen", modes: ModeEmbedded,
		usage: "NATS route listen `address` (host:port) for other cluster members",
		field: func(o *Options) any { return &o.ClusterListen },
		check: func(o *Options) error {
			if !o.clustered() {
				return nil
			}
			if o.ClusterListen == "" {
				return errors.New("required when -cluster-name or -routes is set")
			}
			return checkAddr(o.ClusterListen)
		}},
	{name: "cluster-name", modes: ModeEmbedded,
		usage: "NATS cluster `name`, the same on every member (needed to cluster)",
		field: func(o *Options) any { return &o.ClusterName },
		check: func(o *Options) error { return o.neededToCluster(o.ClusterName, "the same name on every member") }},
	{name: "routes", kind: kindList, modes: ModeEmbedded,
		usage: "NATS route `URLs` of other members, comma-separated, e.g. nats-route://10.0.0.2:6222",
		field: func(o *Options) any { return &o.Routes },
		check: func(o *Options) error { return checkRoutes(o.Routes) }},
	{name: "server-name", modes: ModeEmbedded,
		usage: "NATS server `name`, unique in the cluster (needed to cluster)",
		field: func(o *Options) any { return &o.ServerName },
		check: func(o *Options) error {
			return o.neededToCluster(o.ServerName, "a unique name per member; JetStream needs it")
		}},

	{name: "nats", kind: kindList, modes: ModeEdge,
		usage: "NATS server `URLs`, comma-separated (required), e.g. nats://a:4222,nats://b:4222",
		field: func(o *Options) any { return &o.NATSURLs },
		check: func(o *Options) error {
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
	{name: "nats-creds", modes: ModeEdge,
		usage: "NATS credentials `file` (JWT and NKey seed)",
		field: func(o *Options) any { return &o.NATSCreds },
		check: func(o *Options) error {
			if o.NATSCreds == "" {
				return nil
			}
			if o.NATSUser != "" || o.NATSToken != "" {
				return errors.New("use one of -nats-creds, -nats-user/-nats-password or -nats-token")
			}
			return checkFile(o.NATSCreds)
		}},
	{name: "nats-user", modes: ModeEdge,
		usage: "NATS `user` (with -nats-password)",
		field: func(o *Options) any { return &o.NATSUser },
		check: func(o *Options) error {
			if o.NATSUser != "" && o.NATSToken != "" {
				return errors.New("use one of -nats-user/-nats-password or -nats-token")
			}
			if o.NATSUser != "" && o.NATSPassword == "" {
				return errors.New("needs -nats-password")
			}
			return nil
		}},
	{name: "nats-password", secret: true, modes: ModeEdge,
		usage: "NATS `password`",
		field: func(o *Options) any { return &o.NATSPassword },
		check: func(o *Options) error {
			if o.NATSPassword != "" && o.NATSUser == "" {
				return errors.New("needs -nats-user")
			}
			return nil
		}},
	{name: "nats-token", secret: true, modes: ModeEdge,
		usage: "NATS authentication `token`",
		field: func(o *Options) any { return &o.NATSToken }},
	{name: "nats-nkey", modes: ModeEdge,
		usage: "`file` holding a NATS user nkey's seed (SU…), e.g. for an edge credential ROLE:nkey:PUBLIC-KEY of cmd/embedded's -nats-auth",
		field: func(o *Options) any { return &o.NATSNkey },
		check: func(o *Options) error {
			if o.NATSNkey == "" {
				return nil
			}
			if o.NATSCreds != "" || o.NATSUser != "" || o.NATSToken != "" {
				return errors.New("use one of -nats-creds, -nats-user/-nats-password, -nats-token or -nats-nkey")
			}
			if err := checkFile(o.NATSNkey); err != nil {
				return err
			}
			_, err := nats.NkeyOptionFromSeed(o.NATSNkey)
			return err
		}},
	{name: "nats-tls-ca", modes: ModeEdge,
		usage: "CA certificate `file` that verifies the NATS servers (turns TLS on)",
		field: func(o *Options) any { return &o.NATSTLSCA },
		check: func(o *Options) error { return checkFile(o.NATSTLSCA) }},
	{name: "nats-tls-cert", modes: ModeEdge,
		usage: "client certificate `file` for NATS TLS (with -nats-tls-key)",
		field: func(o *Options) any { return &o.NATSTLSCert },
		check: func(o *Options) error { return checkPair(o.NATSTLSCert, o.NATSTLSKey, "-nats-tls-key") }},
	{name: "nats-tls-key", modes: ModeEdge,
		usage: "client key `file` for NATS TLS",
		field: func(o *Options) any { return &o.NATSTLSKey },
		check: func(o *Options) error { return checkPair(o.NATSTLSKey, o.NATSTLSCert, "-nats-tls-cert") }},
	{name: "nats-name", def: "herald-edge", modes: ModeEdge,
		usage: "NATS connection `name` shown by NATS monitoring",
		field: func(o *Options) any { return &o.NATSName }},
}

// configOption is -config / HERALD_CONFIG. It is not a YAML key.
const configOption = "config"

func lookupOption(name string) *option {
	for _, op := range optionTable {
		if op.name == name {
			return op
		}
	}
	return nil
}

// OptionError reports a bad option value. It names the option and, when
// known, where the value came from (a flag, an environment variable or a
// line of the YAML file).
type OptionError struct {
	Option string // option name without dash, e.g. "queue-bytes"
	Source string // e.g. "env HERALD_QUEUE_BYTES"; empty when unknown
	Err    error
}

// Error reads like "-queue-bytes: must be positive (from env HERALD_QUEUE_BYTES)".
func (e *OptionError) Error() string {
	msg := "-" + e.Option + ": " + e.Err.Error()
	if e.Source != "" {
		msg += " (from " + e.Source + ")"
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *OptionError) Unwrap() error { return e.Err }

// Load builds the options of mode from defaults, the YAML file named by
// -config or HERALD_CONFIG, HERALD_* environment variables and args (the
// command line without the program name), in increasing precedence, then
// validates them. lookupEnv is usually os.LookupEnv; usage and parse errors
// of flags are written to output. With -h it returns flag.ErrHelp.
func Load(mode Mode, args []string, lookupEnv func(string) (string, bool), output io.Writer) (*Options, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	o := &Options{mode: mode, sources: map[string]string{}}

	// Flags are parsed first (the YAML path may be one of them) but
	// applied last. Each flag records its raw text.
	fs := flag.NewFlagSet(mode.String(), flag.ContinueOnError)
	fs.SetOutput(output)
	var configFlag string
	fs.StringVar(&configFlag, configOption, "", "YAML `file` of options (keys are the flag names) (env "+EnvPrefix+"CONFIG)")
	raw := map[string][]string{}
	for _, op := range optionTable {
		if op.modes&mode == 0 {
			continue
		}
		fs.Var(&flagValue{op: op, def: op.defaultFor(mode), raw: raw}, op.name, op.usage+" (env "+op.env()+")")
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of %s:\n", mode)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q (options are flags, e.g. -listen :8080)", mode, fs.Arg(0))
	}

	// 1. Defaults.
	for _, op := range optionTable {
		if op.modes&mode == 0 || op.defaultFor(mode) == "" {
			continue
		}
		if err := o.set(op, op.defaultFor(mode), "default"); err != nil {
			panic(fmt.Sprintf("app: default of -%s: %v", op.name, err)) // a programming error
		}
	}

	// 2. YAML.
	o.Config = configFlag
	if o.Config == "" {
		if v, ok := lookupEnv(EnvPrefix + "CONFIG"); ok && v != "" {
			o.Config = v
		}
	}
	if o.Config != "" {
		if err := o.loadYAML(o.Config); err != nil {
			return nil, err
		}
	}

	// 3. Environment.
	for _, op := range optionTable {
		if op.modes&mode == 0 {
			continue
		}
		v, ok := lookupEnv(op.env())
		if !ok || v == "" {
			continue
		}
		if err := o.set(op, v, "env "+op.env()); err != nil {
			return nil, err
		}
	}

	// 4. Flags, in the order the options are listed.
	for _, op := range optionTable {
		vals, ok := raw[op.name]
		if !ok {
			continue
		}
		v := vals[len(vals)-1]
		if op.kind == kindList {
			v = strings.Join(vals, ",") // a repeated list flag accumulates
		}
		if err := o.set(op, v, "flag -"+op.name); err != nil {
			return nil, err
		}
	}

	if err := o.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}

// UnknownEnv returns the HERALD_* variables among environ (KEY=VALUE
// entries, as os.Environ returns) that name no option of either binary,
// usually typos worth a warning.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{EnvPrefix + "CONFIG": true}
	for _, op := range optionTable {
		known[op.env()] = true
	}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, EnvPrefix) && !known[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// flagValue records the raw text of a flag; Load applies it after the YAML
// file and the environment.
type flagValue struct {
	op  *option
	def string
	raw map[string][]string
}

// String returns the default, which flag's help shows.
func (f *flagValue) String() string {
	if f == nil {
		return ""
	}
	return f.def
}

// Set records s after checking that it parses.
func (f *flagValue) Set(s string) error {
	// Parse now so that a bad flag fails with the flag's usage.
	var scratch Options
	if err := setField(f.op, f.op.field(&scratch), s); err != nil {
		return err
	}
	f.raw[f.op.name] = append(f.raw[f.op.name], s)
	return nil
}

// IsBoolFlag lets boolean options be given as a bare -flag.
func (f *flagValue) IsBoolFlag() bool { return f != nil && f.op != nil && f.op.kind == kindBool }

// set parses text into the option's field and records its source.
func (o *Options) set(op *option, text, source string) error {
	if err := setField(op, op.field(o), text); err != nil {
		return &OptionError{Option: op.name, Source: source, Err: err}
	}
	o.sources[op.name] = source
	return nil
}

func setField(op *option, field any, text string) error {
	switch p := field.(type) {
	case *string:
		*p = strings.TrimSpace(text)
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(text))
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", text)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil {
			return fmt.Errorf("invalid duration %q (want e.g. 30s, 1m30s)", text)
		}
		*p = d
	case *int:
		var n int
		var err error
		if op.kind == kindSize {
			n, err = parseSize(text)
		} else {
			n, err = strconv.Atoi(strings.TrimSpace(text))
			if err != nil {
				err = fmt.Errorf("invalid integer %q", text)
			}
		}
		if err != nil {
			return err
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", text)
		}
		*p = f
	case *[]string:
		*p = splitList(text)
	default:
		panic(fmt.Sprintf("app: option -%s has an unsupported field type %T", op.name, field))
	}
	return nil
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parseSize parses a byte count: a non-negative integer with an optional
// binary suffix KiB, MiB or GiB (K, M, G and KB, MB, GB mean the same).
func parseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	mult := 0
	switch unit {
	case "", "B":
		mult = 1
	case "K", "KB", "KIB":
		mult = 1 << 10
	case "M", "MB", "MIB":
		mult = 1 << 20
	case "G", "GB", "GIB":
		mult = 1 << 30
	}
	n, err := strconv.Atoi(num)
	if num == "" || err != nil || mult == 0 {
		return 0, fmt.Errorf("invalid size %q (want bytes, e.g. 65536, 64KiB, 1MiB)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// loadYAML applies the options of a YAML file. Keys are option names; a
// key that is not an option of this binary is an error naming it.
func (o *Options) loadYAML(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		if root.Tag == "!!null" {
			return nil
		}
		return fmt.Errorf("config %s: line %d: want a mapping of option names to values", path, root.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		where := fmt.Sprintf("config %s line %d", path, k.Line)
		op := lookupOption(name)
		switch {
		case op == nil:
			return fmt.Errorf("%s: unknown key %q", where, name)
		case op.modes&o.mode == 0:
			return fmt.Errorf("%s: key %q is an option of %s, not of %s", where, name, op.modes, o.mode)
		}
		if line, dup := seen[name]; dup {
			return fmt.Errorf("%s: key %q repeats line %d", where, name, line)
		}
		seen[name] = k.Line
		text, skip, err := yamlText(op, v)
		if err != nil {
			return &OptionError{Option: name, Source: where, Err: err}
		}
		if skip {
			continue
		}
		if err := o.set(op, text, where); err != nil {
			return err
		}
	}
	return nil
}

// yamlText turns a YAML value into the option's text form. A null value
// leaves the option unset.
func yamlText(op *option, v *yaml.Node) (text string, skip bool, err error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", true, nil
		}
		return v.Value, false, nil
	case yaml.SequenceNode:
		if op.kind != kindList {
			return "", false, errors.New("want a single value, not a list")
		}
		items := make([]string, 0, len(v.Content))
		for _, it := range v.Content {
			if it.Kind != yaml.ScalarNode {
				return "", false, fmt.Errorf("line %d: list items must be plain values", it.Line)
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), false, nil
	case yaml.MappingNode:
		// e.g. broadcast-levels as {"*": group, Orders: clientid}.
		if !op.pairs {
			return "", false, errors.New("want a single value, not a mapping")
		}
		pairs := make([]string, 0, len(v.Content)/2)
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := v.Content[i], v.Content[i+1]
			if val.Kind == yaml.MappingNode && op.kind == kindList {
				// e.g. task-routes as {"POST /process-data": {max: 2, result: true}}.
				item, err := yamlSettings(k.Value, val)
				if err != nil {
					return "", false, err
				}
				pairs = append(pairs, item)
				continue
			}
			if val.Kind != yaml.ScalarNode {
				return "", false, fmt.Errorf("line %d: values of %q must be plain values", val.Line, k.Value)
			}
			if val.Tag == "!!null" {
				pairs = append(pairs, k.Value) // a key alone, e.g. an SSE route with {name}
				continue
			}
			pairs = append(pairs, k.Value+"="+val.Value)
		}
		return strings.Join(pairs, ","), false, nil
	}
	return "", false, fmt.Errorf("unsupported YAML value at line %d", v.Line)
}

// Source reports where the value of an option came from: "default",
// "flag -name", "env HERALD_NAME" or "config file line N"; empty when the
// option was never set.
func (o *Options) Source(name string) string { return o.sources[name] }

// yamlSettings writes a key with a mapping of settings as one list item,
// "key k1=v1 k2=v2", the form -task-routes takes.
func yamlSettings(key string, m *yaml.Node) (string, error) {
	parts := []string{key}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if v.Kind == yaml.SequenceNode {
			var items []string
			for _, it := range v.Content {
				items = append(items, it.Value)
			}
			parts = append(parts, k.Value+"="+strings.Join(items, ";"))
			continue
		}
		if v.Kind != yaml.ScalarNode || strings.ContainsAny(v.Value, " ,") {
			return "", fmt.Errorf("line %d: setting %q of %q must be a plain value without spaces or commas", v.Line, k.Value, key)
		}
		parts = append(parts, k.Value+"="+v.Value)
	}
	return strings.Join(parts, " "), nil
}
