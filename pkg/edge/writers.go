package edge

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// writers is the fan-out's pool of writer goroutines, one per CPU. The
// dispatcher hands it the connections it queued frames to, in chunks, and a
// pool writer writes each connection's queue without blocking. A socket that
// takes everything at once, which is nearly every healthy client, costs no
// goroutine, no timer and no wake-up; a socket that does not is handed to
// the connection's own writer goroutine for the rest, which may block up to
// the write timeout. Transports that cannot try a write (WebSocket, TLS)
// get their writer goroutine straight away.
type writers struct {
	done    prometheus.Counter // pool writes the socket took whole
	handoff prometheus.Counter // pool writes that left a rest for the writer goroutine
	work    chan []*conn
	free    chan []*conn
	wg      sync.WaitGroup
	once    sync.Once
}

// chunkSize is how many connections the dispatcher hands over at once:
// small enough that the first writes start while it is still queueing to
// the rest of a large fan-out, large enough that handing over is cheap.
const chunkSize = 128

func newWriters(n int, m *metrics) *writers {
	p := &writers{work: make(chan []*conn, 4*n), free: make(chan []*conn, 8*n),
		done: m.poolWrites.WithLabelValues(writeDone), handoff: m.poolWrites.WithLabelValues(writeHandoff)}
	p.wg.Add(n)
	for range n {
		go p.loop()
	}
	return p
}

// chunk returns an empty chunk to fill.
func (p *writers) chunk() []*conn {
	select {
	case c := <-p.free:
		return c
	default:
		return make([]*conn, 0, chunkSize)
	}
}

// hand gives a chunk to the pool. When every pool writer is busy and the
// queue of chunks is full, the caller writes the chunk itself rather than
// wait: the dispatcher then helps instead of idling.
func (p *writers) hand(chunk []*conn, w *poolWriter) {
	if len(chunk) == 0 {
		p.recycle(chunk)
		return
	}
	select {
	case p.work <- chunk:
	default:
		p.run(w, chunk)
	}
}

// run writes a chunk with w's scratch space and counts the outcomes.
func (p *writers) run(w *poolWriter, chunk []*conn) {
	w.run(chunk)
	if w.done > 0 {
		p.done.Add(float64(w.done))
	}
	if w.handoff > 0 {
		p.handoff.Add(float64(w.handoff))
	}
	w.done, w.handoff = 0, 0
	p.recycle(chunk)
}

func (p *writers) recycle(chunk []*conn) {
	clear(chunk)
	select {
	case p.free <- chunk[:0]:
	default:
	}
}

// close ends the pool once no more chunks can be handed over (the
// dispatcher has returned). Later calls wait for the first.
func (p *writers) close() {
	p.once.Do(func() { close(p.work) })
	p.wg.Wait()
}

func (p *writers) loop() {
	defer p.wg.Done()
	w := newPoolWriter()
	for chunk := range p.work {
		p.run(w, chunk)
	}
}

// poolWriter is one goroutine's scratch space for non-blocking writes.
type poolWriter struct {
	sys           sysWriter // platform part: the raw write and its buffers
	done, handoff int       // outcomes of the current chunk
}

func newPoolWriter() *poolWriter {
	w := &poolWriter{}
	w.sys.init()
	return w
}

// run writes every connection of a chunk.
func (w *poolWriter) run(chunk []*conn) {
	now := time.Now().UnixNano()
	for _, c := range chunk {
		w.flush(c, now)
	}
}

// flush is the pool's turn at a connection handed to it: the connection's
// writer role is claimed for the pool, so no other writer runs. What is
// queued is written without blocking; what the socket does not take now
// goes back to the head of the queue for the connection's writer goroutine.
func (w *poolWriter) flush(c *conn, now int64) {
	batch := c.takeOpen()
	if batch == nil {
		go c.drainFn() // closing, closed or nothing to do: the writer goroutine knows each case
		return
	}
	n, err := w.sys.write(c.t.(*netTransport), batch) // c.direct: a netTransport with a raw socket
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		// A dead socket. (An expired deadline left by the writer goroutine
		// only means "not now": the writer goroutine sets a fresh one.)
		clear(batch)
		c.writeFailed(err)
		return
	}
	rest := unwritten(batch, n)
	if len(rest) == 0 {
		w.done++
	} else {
		w.handoff++
	}
	if c.poolWrote(batch, rest, now) {
		go c.drainFn() // the rest, frames queued meanwhile, or a close: the writer goroutine finishes
	}
}

// poolHand collects the connections one goroutine (the fan-out, the
// pinger) hands to the pool, in chunks. It is owned by that goroutine.
type poolHand struct {
	p     *writers
	self  *poolWriter // writes a chunk itself when the pool is busy
	chunk []*conn
}

// newHand returns a hand for one goroutine.
func (p *writers) newHand() *poolHand {
	return &poolHand{p: p, self: newPoolWriter(), chunk: p.chunk()}
}

// add hands c over once its chunk is full.
func (h *poolHand) add(c *conn) {
	h.chunk = append(h.chunk, c)
	if len(h.chunk) == chunkSize {
		h.flush()
	}
}

// flush hands over what is collected.
func (h *poolHand) flush() {
	if len(h.chunk) == 0 {
		return
	}
	h.p.hand(h.chunk, h.self)
	h.chunk = h.p.chunk()
}

// unwritten trims the first n bytes off bufs, in place, and returns what
// is left.
func unwritten(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs[0] = nil
		bufs = bufs[1:]
	}
	if len(bufs) > 0 && n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}
