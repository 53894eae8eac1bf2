//go:build !linux

package edge

import (
	"errors"
	"net"
	"syscall"
)

// Non-blocking pool writes are Linux-only; elsewhere every connection's
// writes go through its writer goroutine (directConn returns nil).
type sysWriter struct{}

func (s *sysWriter) init() {}

func (s *sysWriter) write(*netTransport, [][]byte) (int, error) { return 0, errors.ErrUnsupported }

func directConn(net.Conn) syscall.RawConn { return nil }

// readNow is never called where directConn returns nil.
func readNow(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }
