package edge

import (
	"errors"
	"os"
	"time"
)

// The outbox: a connection's queue of frames waiting for its writer. Every
// frame — the response head and pode.open, live events, replayed events,
// pings, replies to a client's message — enters through one of the verbs
// below and meets the same bound (appendLocked); one function decides who
// writes (claimLocked) and one starts the writer (start). Nothing else
// changes the queue.
//
// A writer takes everything queued at once and writes it in one batch. It
// is, for the fan-out and pings, a pool writer making a non-blocking write
// (writers.go); otherwise, or for what a full socket leaves, the
// connection's writer goroutine (drain); on HTTP/2 the handler goroutine.
// At most one writer owns the socket at a time (outbox.writing).

type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // graceful close requested: flush the queue, send the close, close
	stateClosed
)

// outbox is a connection's queue and its writer's state, guarded by conn.mu.
type outbox struct {
	state   connState
	reason  CloseReason // why the server closed the connection
	q       [][]byte    // frames waiting for the writer
	bytes   int         // bytes in q
	spare   [][]byte    // the writer's previous batch, reused
	writing bool        // a writer owns the socket (pool writer or goroutine)
	held    bool        // the writer may not start yet: the connection is starting
	listed  bool        // on the fan-out's kick list
}

// wake is what claimLocked asks its caller to start.
type wake uint8

const (
	wakeNone  wake = iota // nothing: a writer has it, it is held, or the handler-writer was signalled
	wakeSpawn             // the connection's writer goroutine
	wakePool              // a pool writer: hand the connection to the pool
)

// appendLocked is the queue's one bound check: it queues frame if the
// queue has room for it in messages and bytes, and reports whether it did.
func (c *conn) appendLocked(frame []byte) bool {
	o := &c.out
	if len(o.q) >= c.e.cfg.QueueMessages || o.bytes+len(frame) > c.e.cfg.QueueBytes {
		return false
	}
	o.q = append(o.q, frame)
	o.bytes += len(frame)
	return true
}

// roomLocked reports whether a frame of n bytes may join the queue without
// taking it past half its bounds (or the queue is empty): replays and the
// switch to live wait for that much room rather than fill the queue a
// live event may need.
func (c *conn) roomLocked(n int) bool {
	o := &c.out
	return len(o.q) == 0 || (len(o.q) < c.e.cfg.QueueMessages/2 && o.bytes+n <= c.e.cfg.QueueBytes/2)
}

// claimLocked makes sure a writer will look at the queue, and says which
// one the caller must start. poolOK says the caller can hand the
// connection to the writer pool.
func (c *conn) claimLocked(poolOK bool) wake {
	o := &c.out
	if o.held {
		return wakeNone
	}
	if !c.spawn {
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return wakeNone
	}
	if o.writing {
		return wakeNone
	}
	o.writing = true
	if poolOK && c.direct && o.state == stateOpen {
		return wakePool
	}
	return wakeSpawn
}

// start starts the writer claimLocked asked for, outside the lock. It is
// the one place a writer starts.
func (c *conn) start(w wake, h *poolHand) {
	switch w {
	case wakeSpawn:
		go c.drainFn()
	case wakePool:
		h.add(c)
	}
}

// push queues a frame that does not come from the fan-out (a ping, a reply
// to a client's message) and makes sure a writer takes it; with h the
// writer may be a pool writer. It reports whether the frame was queued:
// not when the connection is closing, or was just closed as slow because
// the frame did not fit.
func (c *conn) push(frame []byte, h *poolHand) bool {
	c.mu.Lock()
	if c.out.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if !c.appendLocked(frame) {
		c.mu.Unlock()
		c.abort(ReasonSlow)
		return false
	}
	w := c.claimLocked(h != nil)
	c.mu.Unlock()
	c.start(w, h)
	return true
}

// pushLive queues a frame of the fan-out, at stream position seq (prev:
// the previous position on its subject; both 0 without history). With
// history the frame passes the connection's resume state first (resume.go):
// it waits while a replay runs, is dropped when a replay delivered it
// already, and starts a replay when it shows a missed event. A nil frame
// (an event too large to deliver) only moves the connection past seq. The
// writer is not claimed here: the connection goes on the fan-out's kick
// list, so that a run of messages leaves in one write. It reports whether
// the frame was queued now.
func (c *conn) pushLive(seq, prev uint64, frame []byte, f *fanout) bool {
	c.mu.Lock()
	if c.out.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if c.res.on {
		switch c.res.accept(seq, prev, frame, c.e.cfg.QueueMessages, c.e.processed.Load()) {
		case acceptHold:
			c.mu.Unlock()
			return false
		case acceptDup:
			c.mu.Unlock()
			return false
		case acceptGap:
			c.mu.Unlock()
			c.e.resync(c, causeGap)
			return false
		}
	}
	if frame == nil {
		c.mu.Unlock()
		return false
	}
	if !c.appendLocked(frame) {
		c.mu.Unlock()
		c.abort(ReasonSlow)
		return false
	}
	list := !c.out.listed
	c.out.listed = true
	// A queue past an eighth of its bounds is not left waiting for the
	// end of a run: the fan-out hands its list to the pool now.
	large := c.out.bytes > c.e.cfg.QueueBytes/8 || len(c.out.q) > c.e.cfg.QueueMessages/8
	c.mu.Unlock()
	if list {
		f.kicks = append(f.kicks, c)
	}
	if large {
		f.flush()
	}
	return true
}

// kick is the fan-out's turn at a connection on its kick list: it claims
// the writer when frames wait.
func (c *conn) kick(h *poolHand) {
	c.mu.Lock()
	c.out.listed = false
	w := wakeNone
	if len(c.out.q) > 0 {
		w = c.claimLocked(true)
	}
	c.mu.Unlock()
	c.start(w, h)
}

// pushReplayed queues a replayed frame (or a herald.gap event) at stream
// position seq, which the connection has then passed. A replay may outpace
// its client: rather than close it as slow, it waits for room; a client
// that takes nothing for a whole write timeout is slow all the same.
func (c *conn) pushReplayed(seq uint64, frame []byte) error {
	var timer *time.Timer
	defer stopTimer(&timer)
	for {
		c.mu.Lock()
		if c.out.state != stateOpen {
			c.mu.Unlock()
			return errConnClosed
		}
		if c.roomLocked(len(frame)) && c.appendLocked(frame) {
			c.res.pos = max(c.res.pos, seq)
			w := c.claimLocked(false)
			c.mu.Unlock()
			c.start(w, nil)
			c.e.m.deliveries.Inc()
			return nil
		}
		c.mu.Unlock()
		if err := c.waitRoom(&timer); err != nil {
			return err
		}
	}
}

// waitRoom waits for the writer to take frames from the queue. A client
// that takes nothing for a whole write timeout (counted from the caller's
// first wait, on *timer) is slow: it is closed.
func (c *conn) waitRoom(timer **time.Timer) error {
	if *timer == nil {
		*timer = time.NewTimer(c.e.cfg.WriteTimeout)
	}
	select {
	case <-c.space:
		return nil
	case <-c.done:
		return errConnClosed
	case <-(*timer).C:
		c.abort(ReasonSlow)
		return errConnClosed
	}
}

func stopTimer(t **time.Timer) {
	if *t != nil {
		(*t).Stop()
	}
}

// first puts the connection's first frame (the response head and
// pode.open) at the head of the queue, before what the fan-out queued
// while the connection started. It reports false when it does not fit.
func (c *conn) first(frame []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.appendLocked(frame) {
		return false
	}
	q := c.out.q
	copy(q[1:], q[:len(q)-1])
	q[0] = frame
	return true
}

// hold keeps the writer from starting until release: set before the
// connection registers.
func (c *conn) hold() {
	c.mu.Lock()
	c.out.held = true
	c.mu.Unlock()
}

// release lets the writer start, writing whatever queued while it was held.
func (c *conn) release() {
	c.mu.Lock()
	c.out.held = false
	w := wakeNone
	if len(c.out.q) > 0 || c.out.state != stateOpen { // a close may have come meanwhile
		w = c.claimLocked(false)
	}
	c.mu.Unlock()
	c.start(w, nil)
}

// close closes the connection for reason. A graceful reason first flushes
// what is queued and sends the transport's close; others close the socket
// at once. Closing an already closing connection does nothing.
func (c *conn) close(reason CloseReason) {
	if !reason.Graceful {
		c.abort(reason)
		return
	}
	c.mu.Lock()
	if c.out.state != stateOpen {
		c.mu.Unlock()
		return
	}
	c.out.state = stateClosing
	c.out.reason = reason
	w := c.claimLocked(false)
	c.mu.Unlock()
	c.e.unregister(c)
	c.start(w, nil)
}

// abort closes the socket at once and drops anything queued.
func (c *conn) abort(reason CloseReason) {
	c.mu.Lock()
	if c.out.state == stateClosed {
		c.mu.Unlock()
		return
	}
	wasOpen := c.out.state == stateOpen
	if wasOpen {
		c.out.reason = reason
	}
	c.out.state = stateClosed
	clear(c.out.q)
	c.out.q, c.out.bytes = nil, 0
	c.mu.Unlock()
	if wasOpen {
		c.e.unregister(c)
	}
	c.t.close()
	c.finish()
}

// What take tells a writer to do.
type next uint8

const (
	nextWrite next = iota // write the batch
	nextStop              // stop: nothing queued (the writer role is given up) or closed
	nextEnd               // closing and drained: send the close and finish
)

// take hands the writer everything queued.
func (c *conn) take() ([][]byte, next) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := &c.out
	switch {
	case o.state == stateClosed:
		o.writing = false
		return nil, nextStop
	case len(o.q) > 0:
		batch := c.stampLocked(o.q) // a kept clientId's id frame, when the batch moves its position (sticky.go)
		o.q, o.bytes, o.spare = o.spare[:0], 0, nil
		return batch, nextWrite
	case o.state == stateClosing:
		return nil, nextEnd
	}
	o.writing = false
	return nil, nextStop
}

// takeOpen is take for a pool writer: it hands over the queue of an open
// connection only; anything else is left to the writer goroutine.
func (c *conn) takeOpen() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := &c.out
	if o.state != stateOpen || len(o.q) == 0 {
		return nil
	}
	batch := c.stampLocked(o.q) // as in take (sticky.go)
	o.q, o.bytes, o.spare = o.spare[:0], 0, nil
	return batch
}

// wrote gives back a written batch for reuse and wakes a replay waiting
// for room.
func (c *conn) wrote(batch [][]byte) {
	clear(batch)
	c.mu.Lock()
	c.out.spare = batch[:0]
	c.mu.Unlock()
	select {
	case c.space <- struct{}{}:
	default:
	}
}

// poolWrote records a pool writer's non-blocking write of batch, of which
// rest was not written (the socket was full). It reports whether the
// writer goroutine must take over: for the rest, for frames queued
// meanwhile, or for a close.
func (c *conn) poolWrote(batch, rest [][]byte, now int64) bool {
	c.mu.Lock()
	o := &c.out
	if len(rest) == 0 {
		clear(batch)
		o.spare = batch[:0]
		done := len(o.q) == 0 && o.state == stateOpen
		if done {
			o.writing = false
		}
		waiting := c.res.replayer // only a replay waits for room
		c.mu.Unlock()
		c.lastSend.Store(now)
		if waiting {
			select {
			case c.space <- struct{}{}:
			default:
			}
		}
		return !done
	}
	if o.state == stateClosed {
		o.writing = false
		c.mu.Unlock()
		return false
	}
	// The socket is full: the rest goes first, then what queued meanwhile.
	restBytes := 0
	for _, b := range rest {
		restBytes += len(b)
	}
	q := append(rest, o.q...)
	clear(o.q)
	o.q, o.bytes = q, o.bytes+restBytes
	c.mu.Unlock()
	return true
}

// writeFailed ends a connection whose write failed: a missed deadline is
// a slow client, anything else a client gone.
func (c *conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.abort(ReasonSlow)
	} else {
		c.abort(ReasonGone)
	}
	c.mu.Lock()
	c.out.writing = false
	c.mu.Unlock()
}

// drain is the writer goroutine (and the handler-writer's turn): it takes
// everything queued, writes it in one batch, and repeats until the queue
// is empty. On a graceful close it then sends the transport's close and
// closes the socket.
func (c *conn) drain() {
	for {
		batch, n := c.take()
		switch n {
		case nextStop:
			return
		case nextEnd:
			c.end()
			return
		}
		err := c.t.write(batch)
		c.wrote(batch)
		if err != nil {
			c.writeFailed(err)
			return
		}
		c.lastSend.Store(time.Now().UnixNano())
	}
}

// end sends the transport's close for the closing reason, then closes.
func (c *conn) end() {
	c.mu.Lock()
	reason := c.out.reason
	c.mu.Unlock()
	_ = c.t.end(reason) // best effort: the socket is closed next anyway
	c.mu.Lock()
	c.out.state = stateClosed
	c.out.writing = false
	c.mu.Unlock()
	c.t.close()
	c.finish()
}
