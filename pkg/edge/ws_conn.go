package edge

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// wsState is a WebSocket connection's reading side and close handshake.
// Its writing side is the connection's outbox and transport, as for SSE:
// every frame the server sends, data and control alike, is a whole frame
// in the queue, so control frames never land inside a data frame.
//
// On Linux the socket is in the edge's epoll set (watch_linux.go): when
// the client sends something, a goroutine reads what is there without
// blocking, handles it and ends. An idle WebSocket holds no goroutine and
// no read buffer, like an idle SSE stream. Elsewhere, and over TLS, a
// reader goroutine blocks on the socket.
type wsState struct {
	c   *conn
	nc  net.Conn
	raw syscall.RawConn // nil: a blocking reader goroutine reads (TLS, no epoll)

	mu      sync.Mutex
	reading bool // guarded by mu; a reader goroutine runs
	again   bool // guarded by mu; the socket became readable while it ran

	// Owned by the reader that runs.
	parser  wsParser
	inbound inboundState
	stopped bool // nothing more is parsed: the client closed, or broke the protocol

	pingSent  atomic.Int64  // unix nanoseconds of a ping not answered yet; 0 when none
	peerClose chan struct{} // closed when the client's close frame, or the end of its stream, arrived
	peerOnce  sync.Once
}

// closeWait bounds the wait for the client's close frame after the
// server's: the socket is closed after it, so that the client reads the
// close frame rather than a reset.
const closeWait = 2 * time.Second

// readBufs are the read buffers of running readers.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

var errWouldBlock = errors.New("edge: nothing to read now")

// startReading starts the reading side once the connection has begun.
// early holds what the client sent after its request, before the 101.
func (w *wsState) startReading(gone *goneWatcher, early []byte) {
	if len(early) > 0 {
		w.parser.in = early
	}
	if w.raw != nil && gone.watch(w.nc, w.c) {
		// The watcher is edge-triggered: what arrived before the socket
		// joined it must be read now.
		w.kick()
		return
	}
	go w.readBlocking()
}

// kick makes sure a reader reads what the socket holds: the watcher calls
// it when the socket becomes readable or the client hangs up.
func (w *wsState) kick() {
	w.mu.Lock()
	if w.reading {
		w.again = true
		w.mu.Unlock()
		return
	}
	w.reading = true
	w.mu.Unlock()
	go w.readAll()
}

// readAll reads until the socket has nothing more, again if it became
// readable meanwhile.
func (w *wsState) readAll() {
	for {
		w.readAvailable()
		w.mu.Lock()
		if !w.again {
			w.reading = false
			w.mu.Unlock()
			return
		}
		w.again = false
		w.mu.Unlock()
	}
}

// readAvailable reads and handles everything the socket holds now.
func (w *wsState) readAvailable() {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	for {
		n, err := readNow(w.raw, *bp)
		if n > 0 {
			w.handleBytes((*bp)[:n])
		}
		switch {
		case errors.Is(err, errWouldBlock):
			w.parser.rest()
			return
		case err != nil:
			w.ended()
			return
		}
	}
}

// readBlocking is the reader goroutine of a socket outside the epoll set.
func (w *wsState) readBlocking() {
	buf := make([]byte, 16<<10)
	for {
		n, err := w.nc.Read(buf)
		if n > 0 {
			w.handleBytes(buf[:n])
		}
		if err != nil {
			w.ended()
			return
		}
	}
}

// ended handles the end of the client's stream (or a read error).
func (w *wsState) ended() {
	w.peerClosed()
	w.c.abort(ReasonGone) // nothing to do if the connection is closing already
}

func (w *wsState) peerClosed() {
	w.peerOnce.Do(func() { close(w.peerClose) })
}

// handleBytes parses what arrived and handles each message and control
// frame in order.
func (w *wsState) handleBytes(data []byte) {
	if w.stopped {
		return // after a close or a violation, what follows is discarded
	}
	p := &w.parser
	owned := len(p.in) > 0
	if owned {
		p.in = append(p.in, data...)
	} else {
		p.in = data
	}
	for !w.stopped {
		ev, ok, err := p.next()
		if err != nil {
			w.fail(err)
			break
		}
		if !ok {
			break
		}
		w.handle(ev)
	}
	if !owned && len(p.in) > 0 {
		p.in = append([]byte(nil), p.in...) // an unfinished frame keeps memory of its own; the read buffer is reused
	}
	if w.stopped {
		p.in, p.msg = nil, nil
	}
}

// handle handles one message or control frame.
func (w *wsState) handle(ev wsEvent) {
	c := w.c
	switch ev.op {
	case opPing:
		c.push(wsFrame(opPong, ev.payload), nil)
	case opPong:
		w.pingSent.Store(0)
	case opClose:
		code, err := closePayload(ev.payload)
		if err != nil {
			w.fail(err)
			return
		}
		w.stopped = true
		w.peerClosed()
		if code == 1005 {
			code = 1000
		}
		// The client closes: reply with its code, after what is queued.
		reason := ReasonGone
		reason.WSCode, reason.Graceful = code, true
		c.close(reason)
	case opText, opBinary:
		if stop := c.e.handleInbound(c, &w.inbound, ev.op == opBinary, ev.payload); stop {
			w.stopped = true
		}
	}
}

// fail ends a connection whose client broke the protocol or a limit: the
// close frame says why (1002, 1007, 1009).
func (w *wsState) fail(err error) {
	w.stopped = true
	var we *wsError
	if !errors.As(err, &we) {
		w.c.abort(ReasonGone)
		return
	}
	label := inboundProtocol
	switch we.reason.Code {
	case ReasonTooBig.Code:
		label = inboundTooBig
	case ReasonBadData.Code:
		label = inboundBadUTF8
	}
	w.c.e.m.wsInbound.WithLabelValues(label).Inc()
	w.c.close(we.reason)
}

// end runs the server's side of the close handshake: the close frame with
// the reason's code and its code as text, then a wait (bounded) for the
// client's close, so that the socket is closed after the client has read
// the frame.
func (w *wsState) end(t *netTransport, reason CloseReason) error {
	err := t.write([][]byte{wsCloseFrame(reason.WSCode, reason.Code)})
	if err != nil {
		return err
	}
	timer := time.NewTimer(min(t.timeout, closeWait))
	defer timer.Stop()
	select {
	case <-w.peerClose:
	case <-timer.C:
	}
	return nil
}

// overdue reports whether a ping sent before deadline is unanswered.
func (w *wsState) overdue(deadline int64) bool {
	sent := w.pingSent.Load()
	return sent != 0 && sent < deadline
}
