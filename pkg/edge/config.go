package edge

import (
	"errors"
	"fmt"
	"math"
	"path"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/policy"
)

// Config configures an Edge. The zero value of every field means its
// documented default; defaults are applied in one place, by (*Config).withDefaults.
type Config struct {
	// SubjectPrefix is the first subject token. Default "herald".
	SubjectPrefix string

	// SSEPath is the route pattern of SSE connections, in net/http ServeMux
	// syntax. It must contain {name}; {group} is optional. Default "/sse/{name}".
	SSEPath string
	// ExtraSSERoutes adds more SSE routes, each a pattern plus a fixed name
	// used when the pattern has no {name}, e.g. Pode.Web's
	// "/pode.web-dynamic/pages/{group}/sse-open" with name "Pode.Web.Actions".
	ExtraSSERoutes []SSERoute

	// Signing signs assigned clientIds and verifies client-supplied ones.
	// A zero Signer (no secret) turns signing off.
	Signing policy.Signer
	// Levels are the broadcast levels enforced at the edge (and by /publish).
	Levels policy.Levels

	// PublishTokens are the bearer tokens accepted by POST /publish. Empty
	// disables the endpoint (404).
	PublishTokens []string
	// MaxPublishBytes caps a /publish body and a single event's data.
	// Default 64 KiB.
	MaxPublishBytes int

	// Retry, when > 0, is sent as the SSE "retry:" field in milliseconds
	// right after the headers. Default 0 (not sent), as Pode.
	Retry time.Duration
	// PingInterval is the idle period after which pode.ping is sent.
	// Default 30 s.
	PingInterval time.Duration
	// WriteTimeout is the deadline of one write to a client. A client that
	// cannot take a write within it is closed as slow. Default 10 s.
	WriteTimeout time.Duration
	// QueueBytes and QueueMessages bound each connection's queue. A
	// connection whose queue overflows is closed with reason "slow".
	// Defaults 1 MiB and 1024.
	QueueBytes    int
	QueueMessages int

	// AllowAllOrigins adds "Access-Control-Allow-Origin: *" to SSE responses.
	AllowAllOrigins bool

	// History turns on event history (a JetStream stream, see
	// broker.History): every event carries a position as its SSE id,
	// clients resume with Last-Event-ID on any edge, and the edge fills its
	// own gaps from the stream. nil turns it off: producer ids pass through
	// unchanged and Last-Event-ID is ignored.
	History *broker.HistoryConfig
	// MaxReplays bounds the replays (resumes and resyncs) one edge runs at
	// once; more wait their turn. Default 64.
	MaxReplays int

	// DrainWindow spreads the closes of Shutdown uniformly over this window,
	// so that clients do not reconnect all at once. Default 0 (close at once).
	DrainWindow time.Duration

	// NoHijack keeps HTTP/1.x streams inside net/http instead of taking
	// over the socket after the response head. Hijacking (the default)
	// frees per-connection buffers; turn it off behind middleware that
	// cannot be bypassed. HTTP/2 streams are never hijacked.
	NoHijack bool

	// BodyTimeout bounds how long a request may take to send its body
	// (and the rest of a body the edge does not read): a client that
	// stalls is cut off instead of holding a goroutine and a socket. SSE
	// and WebSocket streams clear it once they start; their writes have
	// their own deadline (WriteTimeout). Default 10 s.
	BodyTimeout time.Duration

	// LogInterval bounds repeated warnings of one kind (e.g. broadcast-level
	// drops) to one per interval. Default 10 s.
	LogInterval time.Duration

	// EdgeID names this edge in logs and system messages. Default: random.
	EdgeID string

	// WebSocket connections (ws.go, ws_inbound.go). Keep-alive pings use
	// PingInterval, writes WriteTimeout and the queue QueueBytes and
	// QueueMessages, as for SSE.

	// WSOriginPatterns lists the browser origins allowed to open WebSockets
	// besides the request's own host, against Cross-Site WebSocket
	// Hijacking. Each pattern is matched case-insensitively with path.Match
	// against the Origin's host ("*.example.com"), or against
	// "scheme://host" when the pattern contains "://". Requests without an
	// Origin header (non-browser clients) are allowed; any other origin gets
	// 403 and is never upgraded. Default none: same origin only. "*" allows
	// every origin and turns the protection off.
	WSOriginPatterns []string
	// WSReadLimit caps one client message in bytes; a larger one closes the
	// connection with 1009 (reason too_big). Default 64 KiB.
	WSReadLimit int
	// WSInboundRate and WSInboundBurst bound the messages one connection
	// may send (a token bucket: WSInboundRate per second, bursts of
	// WSInboundBurst). Over the limit the connection is closed with 1008
	// (reason policy). Defaults 20 per second, burst 40.
	WSInboundRate  float64
	WSInboundBurst int
	// WSEchoNames turns on Pode's default handling of client messages for
	// these connection names ("*" for every name): the edge re-sends the
	// message's "message" to its "path" (which must be enabled too; without
	// a path every name with "*", else the sender's own name), narrowed by
	// its "group" and "clientId", or back to the sender alone with
	// "direct": true. Sends obey the broadcast levels. Letting clients
	// broadcast is a privilege: default none.
	WSEchoNames []string
}

// SSERoute is an extra SSE route: a ServeMux pattern and a fixed name used
// when the pattern has no {name} wildcard.
type SSERoute struct {
	Pattern string
	Name    string
}

// Defaults.
const (
	DefaultSSEPath         = "/sse/{name}"
	DefaultMaxPublishBytes = 64 << 10
	DefaultPingInterval    = 30 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultBodyTimeout     = 10 * time.Second
	DefaultQueueBytes      = 1 << 20
	DefaultQueueMessages   = 1024
	DefaultLogInterval     = 10 * time.Second
	DefaultWSReadLimit     = 64 << 10
	DefaultWSInboundRate   = 20
	DefaultWSInboundBurst  = 40
	DefaultMaxReplays      = 64
)

// PodeWebRoute is the route Pode.Web's browser code opens.
var PodeWebRoute = SSERoute{Pattern: "/pode.web-dynamic/pages/{group}/sse-open", Name: "Pode.Web.Actions"}

func (c Config) withDefaults() Config {
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = broker.DefaultPrefix
	}
	if c.SSEPath == "" {
		c.SSEPath = DefaultSSEPath
	}
	if c.MaxPublishBytes == 0 {
		c.MaxPublishBytes = DefaultMaxPublishBytes
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.QueueMessages == 0 {
		c.QueueMessages = DefaultQueueMessages
	}
	if c.MaxReplays == 0 {
		c.MaxReplays = DefaultMaxReplays
	}
	if c.LogInterval == 0 {
		c.LogInterval = DefaultLogInterval
	}
	if c.EdgeID == "" {
		c.EdgeID = policy.NewClientID()[:8]
	}
	if c.WSReadLimit == 0 {
		c.WSReadLimit = DefaultWSReadLimit
	}
	if c.WSInboundRate == 0 {
		c.WSInboundRate = DefaultWSInboundRate
	}
	if c.WSInboundBurst == 0 {
		c.WSInboundBurst = DefaultWSInboundBurst
	}
	return c
}

// Validate reports the first bad field, by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, err := broker.NewSubjects(c.SubjectPrefix); err != nil {
		return fmt.Errorf("edge: SubjectPrefix: %w", err)
	}
	if !strings.Contains(c.SSEPath, "{name}") {
		return fmt.Errorf("edge: SSEPath %q must contain {name}", c.SSEPath)
	}
	for i, r := range c.ExtraSSERoutes {
		if !strings.HasPrefix(r.Pattern, "/") {
			return fmt.Errorf("edge: ExtraSSERoutes[%d].Pattern %q must start with /", i, r.Pattern)
		}
		if !strings.Contains(r.Pattern, "{name}") && r.Name == "" {
			return fmt.Errorf("edge: ExtraSSERoutes[%d] needs {name} in its pattern or a Name", i)
		}
	}
	switch {
	case c.MaxPublishBytes < 0:
		return errors.New("edge: MaxPublishBytes must be positive")
	case c.PingInterval < 0:
		return errors.New("edge: PingInterval must be positive")
	case c.WriteTimeout < 0:
		return errors.New("edge: WriteTimeout must be positive")
	case c.BodyTimeout < 0:
		return errors.New("edge: BodyTimeout must be positive")
	case c.QueueBytes < 0 || c.QueueMessages < 0:
		return errors.New("edge: QueueBytes and QueueMessages must be positive")
	case c.MaxReplays < 0:
		return errors.New("edge: MaxReplays must be positive")
	case c.DrainWindow < 0:
		return errors.New("edge: DrainWindow must not be negative")
	case c.Retry < 0:
		return errors.New("edge: Retry must not be negative")
	}
	if c.History != nil {
		if err := c.History.Validate(); err != nil {
			return fmt.Errorf("edge: History: %w", err)
		}
	}
	for i, t := range c.PublishTokens {
		if len(t) < 8 {
			return fmt.Errorf("edge: PublishTokens[%d] is shorter than 8 characters", i)
		}
	}
	return c.validateWS()
}

// validateWS checks the WebSocket section.
func (c Config) validateWS() error {
	switch {
	case c.WSReadLimit < 0:
		return errors.New("edge: WSReadLimit must be positive")
	case c.WSInboundRate < 0 || math.IsNaN(c.WSInboundRate) || math.IsInf(c.WSInboundRate, 0):
		return errors.New("edge: WSInboundRate must be a positive number")
	case c.WSInboundBurst < 0:
		return errors.New("edge: WSInboundBurst must be positive")
	}
	for i, p := range c.WSOriginPatterns {
		if p == "" {
			return fmt.Errorf("edge: WSOriginPatterns[%d] is empty", i)
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("edge: WSOriginPatterns[%d] %q: %w", i, p, err)
		}
	}
	for i, n := range c.WSEchoNames {
		if n == policy.AnyName {
			continue
		}
		if err := policy.ValidateName(n); err != nil {
			return fmt.Errorf("edge: WSEchoNames[%d]: %w", i, err)
		}
	}
	return nil
}
