//go:build linux

package edge

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// maxIov bounds one writev (IOV_MAX is 1024 on Linux); the rest of a longer
// queue is left for the next write.
const maxIov = 1024

// sysWriter makes non-blocking writev calls on a raw socket. Its callback
// is bound once, so a write allocates nothing.
type sysWriter struct {
	iov   []syscall.Iovec
	bufs  [][]byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func (s *sysWriter) init() {
	s.iov = make([]syscall.Iovec, 0, 64)
	s.fn = s.writev
}

// write writes as much of bufs to t's socket as it takes now and returns
// the byte count; a full socket is no error (n is short).
func (s *sysWriter) write(t *netTransport, bufs [][]byte) (int, error) {
	s.bufs, s.n, s.errno = bufs, 0, 0
	err := t.raw.Write(s.fn)
	s.bufs = nil
	clear(s.iov) // drop the frame pointers
	if err != nil {
		return 0, err
	}
	if s.errno != 0 {
		return s.n, s.errno
	}
	return s.n, nil
}

// writev is the raw-connection callback. It always returns true: the
// runtime must never park this goroutine waiting for the socket.
func (s *sysWriter) writev(fd uintptr) bool {
	s.iov = s.iov[:0]
	for _, b := range s.bufs {
		if len(s.iov) == maxIov {
			break
		}
		if len(b) == 0 {
			continue
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		s.iov = append(s.iov, v)
	}
	if len(s.iov) == 0 {
		return true
	}
	for {
		r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iov[0])), uintptr(len(s.iov)))
		switch e {
		case 0:
			s.n = int(r)
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			// full: nothing written
		default:
			s.errno = e
		}
		return true
	}
}

// directConn returns the raw connection of a plain TCP socket, which the
// writer pool can write without blocking; nil for anything else (TLS).
func directConn(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readNow reads what raw's socket holds now, without waiting: errWouldBlock
// when it holds nothing, io.EOF when the peer has closed its side.
func readNow(raw syscall.RawConn, buf []byte) (int, error) {
	var n int
	var errno error
	err := raw.Read(func(fd uintptr) bool {
		for {
			n, errno = syscall.Read(int(fd), buf)
			if errno != syscall.EINTR {
				return true // never park: the caller reads again when the watcher says so
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno == syscall.EAGAIN:
		return 0, errWouldBlock
	case errno != nil:
		return 0, errno
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
