//go:build linux

package edge

import (
	"net"
	"sync"
	"syscall"
)

// goneWatcher notices hijacked clients leaving without a goroutine per
// connection: every socket is in one epoll set watched by one goroutine,
// which aborts an SSE connection when its peer hangs up (EPOLLRDHUP, HUP,
// ERR), and starts a WebSocket connection's reader when its client sends
// something. This is what lets an idle connection cost no goroutine at all.
// Sockets it cannot watch fall back to a reader goroutine each.
type goneWatcher struct {
	epfd  int
	wake  [2]int        // a pipe in the set: a byte on it ends the loop
	done  chan struct{} // closed when the loop has ended
	mu    sync.Mutex
	next  uint64
	conns map[uint64]*conn
}

// newGoneWatcher starts the watcher, or returns nil when epoll is not
// available (connections then use reader goroutines).
func newGoneWatcher() *goneWatcher {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	w := &goneWatcher{epfd: epfd, conns: map[uint64]*conn{}, done: make(chan struct{})}
	if err := syscall.Pipe2(w.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // id 0: the wake pipe
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.wake[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(w.wake[0])
		syscall.Close(w.wake[1])
		return nil
	}
	go w.loop()
	return w
}

const epollET = 1 << 31 // EPOLLET, which package syscall declares with the wrong type

// watch adds a hijacked socket; it reports false when the caller must
// watch it itself (no watcher, or not a raw socket).
func (w *goneWatcher) watch(nc net.Conn, c *conn) bool {
	if w == nil {
		return false
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	w.mu.Lock()
	w.next++
	id := w.next
	w.conns[id] = c
	c.watchID = id
	w.mu.Unlock()
	var cerr error
	err = rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | syscall.EPOLLIN | epollET, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
		cerr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || cerr != nil {
		w.forget(c)
		return false
	}
	return true
}

// forget drops a closed connection (closing the socket has already
// removed it from the epoll set).
func (w *goneWatcher) forget(c *conn) {
	if w == nil {
		return
	}
	w.mu.Lock() // watchID is set under mu, possibly while the connection closes
	if c.watchID != 0 {
		delete(w.conns, c.watchID)
	}
	w.mu.Unlock()
}

// close ends the loop and releases the epoll set.
func (w *goneWatcher) close() {
	if w == nil {
		return
	}
	_, _ = syscall.Write(w.wake[1], []byte{1})
	<-w.done
	syscall.Close(w.epfd)
	syscall.Close(w.wake[0])
	syscall.Close(w.wake[1])
}

// loop waits in epoll_wait (one OS thread) until the wake pipe is written.
func (w *goneWatcher) loop() {
	defer close(w.done)
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 && ev.Pad == 0 {
				return
			}
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			w.mu.Lock()
			c := w.conns[id]
			w.mu.Unlock()
			switch {
			case c == nil:
			case c.ws != nil:
				c.ws.kick() // a WebSocket client sent something, or hung up: its reader finds out which
			case ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0:
				c.abort(ReasonGone) // an SSE client sends nothing: only its leaving matters
			}
		}
	}
}
