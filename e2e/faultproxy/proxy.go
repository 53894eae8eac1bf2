// Package faultproxy is a TCP proxy that injects network faults between two
// processes, switchable at runtime: pass traffic through, delay it, cut
// every connection, or black-hole it. The e2e suite puts one in front of
// each NATS node for each edge, so that an edge's link to NATS can be cut
// or partitioned while the edge process keeps running.
//
// Modes:
//
//   - Pass: bytes are forwarded both ways as they arrive.
//   - Delay: every chunk is forwarded a fixed time after it was read, in
//     order, in both directions (a delay line, not a per-chunk pause: the
//     throughput is not reduced).
//   - Cut: every connection is closed now and new ones are accepted and
//     closed at once, as a refusing peer would.
//   - Blackhole: connections stay open but nothing is forwarded; new
//     connections are accepted and held without reaching the target. When
//     the mode changes back, what was held is forwarded (held connections
//     dial the target then), as after a healed partition: data sent during
//     the partition arrives late, and a side that gave up meanwhile is
//     seen to have closed.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Mode is what the proxy does to traffic.
type Mode int

// Modes.
const (
	Pass Mode = iota
	Delay
	Cut
	Blackhole
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Delay:
		return "delay"
	case Cut:
		return "cut"
	case Blackhole:
		return "blackhole"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// DialTimeout bounds the proxy's connection to its target.
const DialTimeout = 5 * time.Second

// chunkBuffer is how many chunks (of up to 32 KiB) one direction of one
// connection holds while it waits (delay, blackhole) before it stops
// reading, which pushes back on the sender through TCP.
const chunkBuffer = 64

// Proxy forwards TCP connections from its listener to one target address.
type Proxy struct {
	target string
	ln     net.Listener

	mu       sync.Mutex
	mode     Mode           // guarded by mu
	delay    time.Duration  // guarded by mu; the delay of Delay mode
	changed  chan struct{}  // guarded by mu; closed and replaced on every change
	links    map[*link]bool // guarded by mu
	closed   bool           // guarded by mu
	accepted int            // guarded by mu
	refused  int            // guarded by mu
	wg       sync.WaitGroup // the accept loop and every link's goroutines
}

// Stats counts connections.
type Stats struct {
	Accepted int // connections accepted and served (or held)
	Refused  int // connections closed at once in Cut mode
	Active   int // connections open now
}

// New listens on listen (e.g. "127.0.0.1:0") and forwards to target in
// Pass mode. Close it when done.
func New(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen %s: %w", listen, err)
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		changed: make(chan struct{}),
		links:   map[*link]bool{},
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listen address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Mode returns the current mode and delay.
func (p *Proxy) Mode() (Mode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

// Pass forwards traffic as it arrives.
func (p *Proxy) Pass() { p.set(Pass, 0) }

// Delay forwards every chunk d after it was read.
func (p *Proxy) Delay(d time.Duration) { p.set(Delay, d) }

// Cut closes every connection and refuses new ones until the mode changes.
func (p *Proxy) Cut() { p.set(Cut, 0) }

// Blackhole holds every connection, old and new, forwarding nothing until
// the mode changes.
func (p *Proxy) Blackhole() { p.set(Blackhole, 0) }

func (p *Proxy) set(m Mode, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
	if m == Cut {
		for l := range p.links {
			l.kill()
			delete(p.links, l) // gone now, not when its goroutines notice
		}
	}
}

// Stats returns the connection counts.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Accepted: p.accepted, Refused: p.refused, Active: len(p.links)}
}

// Close stops listening, closes every connection and waits until every
// goroutine of the proxy has returned.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	for l := range p.links {
		l.kill()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // the listener is broken; Close still cleans up
		}
		p.mu.Lock()
		if p.closed || p.mode == Cut {
			if !p.closed {
				p.refused++
			}
			p.mu.Unlock()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // refuse with a reset, as a closed port would
			}
			_ = c.Close()
			continue
		}
		l := &link{down: c, done: make(chan struct{})}
		p.links[l] = true
		p.accepted++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// link is one proxied connection: the client side (down) and, once
// dialled, the target side (up).
type link struct {
	down net.Conn
	done chan struct{} // closed by kill

	mu   sync.Mutex
	up   net.Conn // guarded by mu; nil until dialled
	dead bool     // guarded by mu
}

// kill closes both sides; every goroutine of the link then returns.
func (l *link) kill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return
	}
	l.dead = true
	close(l.done)
	_ = l.down.Close()
	if l.up != nil {
		_ = l.up.Close()
	}
}

// setUp records the dialled target connection; it reports false (and
// closes up) when the link was killed meanwhile.
func (l *link) setUp(up net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		_ = up.Close()
		return false
	}
	l.up = up
	return true
}

func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.kill()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	// A connection accepted in Blackhole mode waits here before it reaches
	// the target.
	if !p.gate(l, time.Time{}) {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, DialTimeout)
	if err != nil {
		return
	}
	if !l.setUp(up) {
		return
	}
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); p.pipe(l, l.down, up) }()
	go func() { defer pipes.Done(); p.pipe(l, up, l.down) }()
	pipes.Wait()
}

type chunk struct {
	data []byte
	at   time.Time
}

// pipe forwards src to dst until either fails, then kills the link. A
// reader goroutine timestamps chunks; this goroutine writes each one when
// the mode lets it.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	chunks := make(chan chunk, chunkBuffer)
	var ended time.Time // when src ended; written before chunks is closed
	var rd sync.WaitGroup
	rd.Add(1)
	go func() {
		defer rd.Done()
		defer close(chunks)
		defer func() { ended = time.Now() }()
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case chunks <- chunk{data: buf[:n], at: time.Now()}:
				case <-l.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer rd.Wait()
	defer l.kill() // the end of either direction ends the connection
	for c := range chunks {
		if !p.gate(l, c.at) {
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
	// The end of src is forwarded (by closing) under the mode too: a close
	// does not cross a black hole either.
	p.gate(l, ended)
}

// gate waits until data read at time at may be forwarded under the current
// mode (at zero: a new connection may reach the target). It returns false
// when the link is killed or the mode is Cut.
func (p *Proxy) gate(l *link, at time.Time) bool {
	for {
		p.mu.Lock()
		mode, delay, changed := p.mode, p.delay, p.changed
		p.mu.Unlock()
		switch mode {
		case Pass:
			return true
		case Cut:
			return false
		case Delay:
			if at.IsZero() {
				return true
			}
			wait := time.Until(at.Add(delay))
			if wait <= 0 {
				return true
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				return true
			case <-changed:
				t.Stop()
			case <-l.done:
				t.Stop()
				return false
			}
		case Blackhole:
			select {
			case <-changed:
			case <-l.done:
				return false
			}
		default:
			return false
		}
	}
}
