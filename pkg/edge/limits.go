package edge

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// Admission: how many connections an edge takes, and how fast. Three
// limits are checked before a request becomes a connection (and before
// any identity work): the rate of new connections (a token bucket), the
// connections open on this edge, and the connections open from one client
// address. A refused client is told to come back later in the way its
// kind of client handles:
//
//   - SSE gets 200 with retry: (1 to 5 s, at random) and a herald.refused
//     event, then the stream ends. A browser's EventSource gives up for good
//     on any status but 200, and reconnects after retry: when a stream ends.
//   - WebSocket is upgraded and closed at once with 1013 (try again later),
//     the code a browser's WebSocket shows the page; the refusal reason is
//     the close text.
//
// A draining edge refuses the same way, so that clients reconnect (to
// another edge) instead of giving up.

// Refusal reasons: the herald.refused event's reason, the WebSocket close
// text and the herald_edge_rejections_total label (with "limit_" before
// the first three).
const (
	refuseRate        = "rate"        // over ConnectRate and ConnectBurst
	refuseConnections = "connections" // MaxConnections open on this edge
	refusePerIP       = "per_ip"      // MaxConnectionsPerIP open from the client's address
	refuseDraining    = "draining"    // the edge is shutting down
)

// EventRefused is the event an SSE client receives when the edge does not
// take its connection now: {"reason":"…","retry":<ms>}. The stream then
// ends and EventSource reconnects after retry milliseconds.
const EventRefused = "herald.refused"

// admission holds the limits' state.
type admission struct {
	rate   *rate.Limiter // nil: no rate limit
	max    int64         // connections on this edge
	perIP  int           // connections per client address; 0: none
	exempt []netip.Prefix
	open   atomic.Int64 // admitted connections not finished yet
	mu     sync.Mutex
	byIP   map[netip.Addr]int // guarded by mu
}

func newAdmission(cfg Config) *admission {
	a := &admission{max: int64(cfg.MaxConnections), perIP: max(cfg.MaxConnectionsPerIP, 0), byIP: map[netip.Addr]int{}}
	if a.max <= 0 {
		a.max = defaultMaxConnections()
	}
	if cfg.ConnectRate > 0 {
		a.rate = rate.NewLimiter(rate.Limit(cfg.ConnectRate), cfg.ConnectBurst)
	}
	for _, p := range cfg.PerIPExempt {
		if p != NoExemptions {
			a.exempt = append(a.exempt, netip.MustParsePrefix(p)) // checked by Validate
		}
	}
	return a
}

// defaultMaxConnections keeps a tenth of the process's open-file limit for
// everything else (NATS, listeners, the history store of cmd/embedded), so
// that a flood is refused cleanly instead of failing accept and reconnects
// with EMFILE.
func defaultMaxConnections() int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 || rl.Cur > 1<<40 {
		return 1 << 20
	}
	return max(int64(rl.Cur)*9/10-64, 16)
}

// admit decides whether a request from ip may become a connection. On
// success the caller holds a place (and ip's key is returned, "" when the
// address is exempt or unknown) until it calls leave.
func (a *admission) admit(ip string) (key netip.Addr, refused string) {
	if a == nil {
		return netip.Addr{}, ""
	}
	if a.rate != nil && !a.rate.Allow() {
		return netip.Addr{}, refuseRate
	}
	if a.open.Add(1) > a.max {
		a.open.Add(-1)
		return netip.Addr{}, refuseConnections
	}
	if a.perIP <= 0 {
		return netip.Addr{}, ""
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || a.isExempt(addr) {
		return netip.Addr{}, ""
	}
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byIP[addr] >= a.perIP {
		a.open.Add(-1)
		return netip.Addr{}, refusePerIP
	}
	a.byIP[addr]++
	return addr, ""
}

func (a *admission) isExempt(addr netip.Addr) bool {
	for _, p := range a.exempt {
		if p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

// leave gives back a place admit granted.
func (a *admission) leave(key netip.Addr) {
	if a == nil {
		return
	}
	a.open.Add(-1)
	if !key.IsValid() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := a.byIP[key] - 1; n > 0 {
		a.byIP[key] = n
	} else {
		delete(a.byIP, key)
	}
}

// refusalLabel is the rejections metric label of a refusal.
func refusalLabel(reason string) string {
	switch {
	case reason == refuseDraining:
		return "unavailable"
	case strings.HasPrefix(reason, "auth_"):
		return reason // a connect decision that may change soon (auth.go)
	}
	return "limit_" + reason
}

// retryLater picks how long a refused client waits: 1 to 5 s, spread so
// that refused clients do not all come back at once.
func retryLater() time.Duration { return time.Second + rand.N(4*time.Second) }

// admitSSE admits an SSE request, or refuses it as a stream (draining, or
// over a limit) and reports false. The caller releases the place it got.
func (e *Edge) admitSSE(w http.ResponseWriter, r *http.Request) (place netip.Addr, ok bool) {
	if e.draining.Load() {
		e.refuseSSE(w, refuseDraining)
		return netip.Addr{}, false
	}
	place, refused := e.adm.admit(remoteIP(r))
	if refused != "" {
		e.refuseSSE(w, refused)
		return netip.Addr{}, false
	}
	return place, true
}

// refuseSSE answers an SSE request the edge does not take now.
func (e *Edge) refuseSSE(w http.ResponseWriter, reason string) {
	e.m.rejections.WithLabelValues(refusalLabel(reason)).Inc()
	retry := retryLater().Milliseconds()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Connection", "close")
	h.Set("Retry-After", fmt.Sprint((retry+999)/1000))
	w.WriteHeader(http.StatusOK)
	data := fmt.Sprintf(`{"reason":%q,"retry":%d}`, reason, retry)
	_, _ = fmt.Fprintf(w, "retry: %d\r\n%s", retry, encodeSSE("", EventRefused, []byte(data)))
}

// refuseWS answers a WebSocket handshake the edge does not take now: it
// completes the handshake and closes at once with 1013 (try again later)
// and the reason as text, then closes the socket, all within a second.
func (e *Edge) refuseWS(w http.ResponseWriter, r *http.Request, reason string) {
	e.m.rejections.WithLabelValues(refusalLabel(reason)).Inc()
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "edge busy; retry", http.StatusServiceUnavailable)
		return
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(time.Second))
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		wsAccept(strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))) + "\r\n\r\n"
	nb := net.Buffers{[]byte(head), wsCloseFrame(1013, reason)}
	_, _ = nb.WriteTo(nc)
}
