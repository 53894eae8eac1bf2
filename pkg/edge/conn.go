package edge

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/herald-push/herald/pkg/broker"
)

// conn is one client connection: its identity, its transport, and its
// outbox (outbox.go), the queue of frames waiting for the writer, which
// is the only code that changes the queue.
//
// Two transports exist. On HTTP/1.x the socket is hijacked after the
// response head. Its writer is, for the fan-out and pings, a pool writer
// making a non-blocking write (writers.go), and otherwise (or for what a
// full socket leaves) a goroutine started when frames arrive and gone when
// the queue is empty; on Linux one epoll goroutine notices every client
// leaving (watch_linux.go), elsewhere a small reader goroutine each. An
// idle connection costs no goroutine and no buffers. On HTTP/2 the handler
// goroutine is the writer and waits for work.
type conn struct {
	e      *Edge
	token  string // cluster-wide unique: edge id + serial
	since  int64  // connect time, unix nanoseconds
	name   string
	group  string // as given by the client
	gkey   string // lowercased group, the matching key
	id     string // raw clientId: the addressing key
	shown  string // clientId as shown to the client (signed form when signing is on)
	lastID string // Last-Event-ID presented on connect
	kind   string // transport label for metrics
	format format // how events are encoded for this connection
	chosen bool   // the client chose its clientId (an assigned one is new: it replaces nobody)

	// Set before the connection starts, then read-only.
	t       transport
	spawn   bool          // the writer is a goroutine started on demand (hijacked sockets)
	direct  bool          // the writer pool may write the socket (netTransport with raw set)
	drainFn func()        // c.drain, bound once: "go c.drainFn()" then allocates nothing
	wake    chan struct{} // handler-as-writer transports are woken here
	done    chan struct{} // closed once the connection is fully closed
	space   chan struct{} // signalled after each write while a replay waits for room
	ws      *wsState      // a WebSocket's reading side and close handshake; nil for SSE
	watchID uint64        // set once by goneWatcher.watch; guarded by its mu
	ipSlot  netip.Addr    // the client address whose per-address count this conn holds (limits.go); zero when exempt
	authz   *connAuth     // set by bind (auth.go): a token's expiry, a Local stream; nil for neither

	lastSend atomic.Int64 // unix nanoseconds of the last successful write
	once     sync.Once

	mu     sync.Mutex
	out    outbox  // guarded by mu
	res    resume  // guarded by mu; history positions (resume.go)
	sticky *sticky // set before start, nil unless the connection keeps its clientId; guarded by mu (sticky.go)
}

// addr is the connection's address as the broker matches it.
func (c *conn) addr() broker.Address {
	return broker.Address{Name: c.name, Group: c.gkey, ClientID: c.id}
}

// matches reports whether an address targets c (Pode's rules).
func (c *conn) matches(a broker.Address) bool {
	if !a.AllNames() && a.Name != c.name {
		return false
	}
	if a.ClientID != "" && a.ClientID != c.id {
		return false
	}
	return a.Group == "" || strings.ToLower(a.Group) == c.gkey
}

// transport writes batches of frames to a client.
type transport interface {
	// write writes all of bufs, bounded by the write timeout.
	write(bufs [][]byte) error
	// end tells the client the server is closing, for reason (SSE:
	// pode.close; WebSocket: a close frame with the reason's code). Best
	// effort: the socket is closed next whatever it returns.
	end(reason CloseReason) error
	// close closes the underlying socket, unblocking a stuck write.
	close()
}

// finish runs once, when the connection is closed for good.
func (c *conn) finish() {
	c.once.Do(func() {
		c.mu.Lock()
		reason := c.out.reason
		c.mu.Unlock()
		c.e.gone.forget(c)
		c.e.adm.leave(c.ipSlot)
		c.e.m.disconnects.WithLabelValues(reason.Code).Inc()
		c.e.m.connections.WithLabelValues(c.kind).Dec()
		c.e.log.Debug("connection closed", "name", c.name, "clientId", c.id, "reason", reason.Code)
		c.e.retired(c, reason) // its disconnect event
		close(c.done)
		c.e.conns.Done()
	})
}

// isOpen reports whether the connection is neither closing nor closed.
func (c *conn) isOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.state == stateOpen
}

// netTransport writes to a hijacked socket with writev: SSE frames, or
// WebSocket frames after the 101 response. With raw set (plain TCP on
// Linux) the writer pool writes most frames without blocking (see
// writers.go); write is the blocking path of the writer goroutine.
type netTransport struct {
	nc      net.Conn
	raw     syscall.RawConn
	timeout time.Duration
	ws      *wsState // a WebSocket: end runs the close handshake
}

func (t *netTransport) write(bufs [][]byte) error {
	if err := t.nc.SetWriteDeadline(time.Now().Add(t.timeout)); err != nil {
		return err
	}
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(t.nc)
	if err == nil && t.raw != nil {
		// An expired deadline would fail the pool's next non-blocking write.
		err = t.nc.SetWriteDeadline(time.Time{})
	}
	return err
}

func (t *netTransport) end(reason CloseReason) error {
	if t.ws != nil {
		return t.ws.end(t, reason)
	}
	return t.write([][]byte{frameClose})
}

func (t *netTransport) close() { _ = t.nc.Close() }

// readUntilGone blocks reading the hijacked socket (a client sends nothing
// on an SSE stream) and aborts the connection when the client goes away.
func (c *conn) readUntilGone(nc net.Conn) {
	buf := make([]byte, 32)
	for {
		if _, err := nc.Read(buf); err != nil {
			c.abort(ReasonGone)
			return
		}
	}
}

// streamTransport writes through an http.ResponseWriter (HTTP/2, or when
// hijacking is off). Only the handler goroutine may call write.
type streamTransport struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (t *streamTransport) write(bufs [][]byte) error {
	_ = t.rc.SetWriteDeadline(time.Now().Add(t.timeout)) // unsupported writers just have no deadline
	for _, b := range bufs {
		if _, err := t.w.Write(b); err != nil {
			return err
		}
	}
	return t.rc.Flush()
}

func (t *streamTransport) end(CloseReason) error { return t.write([][]byte{frameClose}) }

// close does nothing: the handler returns when the connection is done,
// which ends the stream.
func (t *streamTransport) close() {}
