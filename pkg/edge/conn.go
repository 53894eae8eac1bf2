package edge

import (
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // graceful close requested: flush the queue, send pode.close, close
	stateClosed
)

// conn is one client connection. Frames are queued by the fan-out (many
// goroutines may enqueue) and written by exactly one writer at a time, which
// drains everything queued and writes it in one batch.
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

	subjects []string // NATS interest held for this conn; set before registration, then read-only

	t        transport
	spawn    bool          // writer is spawned on demand (hijacked sockets)
	direct   bool          // the writer pool may write the socket (netTransport with raw set)
	drainFn  func()        // c.drain, bound once: "go c.drainFn()" then allocates nothing
	wake     chan struct{} // handler-as-writer transports are woken here
	done     chan struct{} // closed once the connection is fully closed
	lastSend atomic.Int64  // unix nanoseconds of the last successful write
	once     sync.Once

	mu          sync.Mutex
	state       connState   // guarded by mu
	reason      CloseReason // guarded by mu; why the server closed it
	q           [][]byte    // guarded by mu; frames waiting for the writer
	qBytes      int         // guarded by mu
	spare       [][]byte    // guarded by mu; the writer's previous batch, reused
	writing     bool        // guarded by mu; a spawned writer is running
	held        bool        // guarded by mu; the writer may not start yet (see Edge.start)
	kickPending bool        // guarded by mu; on the dispatcher's kick list
	watchID     uint64      // set once by goneWatcher.watch

	// History positions (only with history on; see resume.go).
	pos         uint64         // guarded by mu; stream sequence of the last event this conn received or passed
	baseline    bool           // guarded by mu; pos is meaningful (false until the edge knew the stream position)
	replaying   bool           // guarded by mu; a replay owns the queue; live frames wait in pending
	replayer    bool           // guarded by mu; a replay goroutine runs for this conn
	pending     []pendingFrame // guarded by mu; live frames held during a replay
	pendingLost bool           // guarded by mu; pending overflowed: replay again instead of using it
	closeLater  bool           // guarded by mu; a producer close arrived during a replay
	startGap    string         // guarded by mu; a herald.gap reason to send before anything else
	space       chan struct{}  // signalled by the writer after each batch: room in the queue
}

// pendingFrame is a live frame held while a replay runs.
type pendingFrame struct {
	seq, last uint64
	frame     []byte
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

// enqueue adds a frame for the writer. A connection whose queue would
// overflow is closed as slow; the frame is not queued. It reports whether
// the frame was queued.
func (c *conn) enqueue(frame []byte) bool {
	c.mu.Lock()
	return c.enqueueLocked(frame, false)
}

// enqueueLocked is enqueue with c.mu held; it unlocks c.mu. With deferKick
// (only the dispatcher, inside a batch) the writer is not woken now: the
// connection goes on the dispatcher's kick list, so that a batch of
// messages leaves in one write.
func (c *conn) enqueueLocked(frame []byte, deferKick bool) bool {
	if !c.pushLocked(frame) {
		return false
	}
	if deferKick && c.qBytes < c.e.cfg.QueueBytes/8 && len(c.q) < c.e.cfg.QueueMessages/8 {
		if !c.kickPending {
			c.kickPending = true
			c.e.kicks = append(c.e.kicks, c)
		}
		c.mu.Unlock()
		return true
	}
	start := c.kickLocked()
	c.mu.Unlock()
	if start {
		go c.drainFn()
	}
	return true
}

// pushLocked appends frame to the queue, with c.mu held. It reports false,
// with c.mu released, when the connection is not open or the frame would
// overflow its queue; an overflowing connection is closed as slow.
func (c *conn) pushLocked(frame []byte) bool {
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if len(c.q) >= c.e.cfg.QueueMessages || c.qBytes+len(frame) > c.e.cfg.QueueBytes {
		c.mu.Unlock()
		c.abort(ReasonSlow)
		return false
	}
	c.q = append(c.q, frame)
	c.qBytes += len(frame)
	return true
}

// enqueuePooled adds a frame like enqueue, but where a writer must start
// for a connection the writer pool can write, it reports true instead of
// starting one: the caller hands c to the pool.
func (c *conn) enqueuePooled(frame []byte) bool {
	c.mu.Lock()
	if !c.pushLocked(frame) {
		return false
	}
	start := c.kickLocked()
	c.mu.Unlock()
	if start && !c.direct {
		go c.drainFn()
		return false
	}
	return start
}

// kickLocked makes sure a writer will look at the queue. It reports whether
// the caller must start a writer goroutine.
func (c *conn) kickLocked() bool {
	if c.held {
		return false
	}
	if c.spawn {
		if c.writing {
			return false
		}
		c.writing = true
		return true
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return false
}

// release lets the writer start, writing whatever queued while it was held.
func (c *conn) release() {
	c.mu.Lock()
	c.held = false
	start := (len(c.q) > 0 || c.state != stateOpen) && c.kickLocked() // a close may have come meanwhile
	c.mu.Unlock()
	if start {
		go c.drainFn()
	}
}

// close closes the connection for reason. A graceful reason first flushes
// what is queued and sends pode.close; others close the socket at once.
// Closing an already closing connection does nothing.
func (c *conn) close(reason CloseReason) {
	if !reason.Graceful {
		c.abort(reason)
		return
	}
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	c.state = stateClosing
	c.reason = reason
	start := c.kickLocked()
	c.mu.Unlock()
	c.e.unregister(c)
	if start {
		go c.drainFn()
	}
}

// abort closes the socket at once and drops anything queued.
func (c *conn) abort(reason CloseReason) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	wasOpen := c.state == stateOpen
	if wasOpen {
		c.reason = reason
	}
	c.state = stateClosed
	clear(c.q)
	c.q, c.qBytes = nil, 0
	c.mu.Unlock()
	if wasOpen {
		c.e.unregister(c)
	}
	c.t.close()
	c.finish()
}

// finish runs once, when the connection is closed for good.
func (c *conn) finish() {
	c.once.Do(func() {
		c.mu.Lock()
		reason := c.reason
		c.mu.Unlock()
		c.e.gone.forget(c)
		c.e.m.disconnects.WithLabelValues(reason.Code).Inc()
		c.e.m.connections.WithLabelValues(c.kind).Dec()
		c.e.log.Debug("connection closed", "name", c.name, "clientId", c.id, "reason", reason.Code)
		close(c.done)
		c.e.conns.Done()
	})
}

// drain is the writer: it takes everything queued, writes it in one batch,
// and repeats until the queue is empty. On a graceful close it then writes
// pode.close and closes the socket.
func (c *conn) drain() {
	for {
		c.mu.Lock()
		if c.state == stateClosed {
			c.writing = false
			c.mu.Unlock()
			return
		}
		batch := c.q
		if len(batch) == 0 {
			if c.state == stateClosing {
				reason := c.reason
				c.mu.Unlock()
				_ = c.t.end(reason) // best effort: the socket is closed next anyway
				c.mu.Lock()
				c.state = stateClosed
				c.writing = false
				c.mu.Unlock()
				c.t.close()
				c.finish()
				return
			}
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.q, c.qBytes, c.spare = c.spare[:0], 0, nil
		c.mu.Unlock()

		err := c.t.write(batch)
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
		c.mu.Unlock()
		select {
		case c.space <- struct{}{}:
		default:
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.abort(ReasonSlow)
			} else {
				c.abort(ReasonGone)
			}
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.lastSend.Store(time.Now().UnixNano())
	}
}

// isClosed reports whether the connection is closed for good.
func (c *conn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// netTransport writes to a hijacked socket with writev. With raw set (plain
// TCP on Linux) the writer pool writes most frames without blocking (see
// writers.go); write is the blocking path of the writer goroutine.
type netTransport struct {
	nc      net.Conn
	raw     syscall.RawConn
	timeout time.Duration
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

func (t *netTransport) end(CloseReason) error { return t.write([][]byte{frameClose}) }

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
