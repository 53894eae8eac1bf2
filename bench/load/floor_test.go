package load

import (
	"net"
	"syscall"
	"testing"
)

// BenchmarkLoopbackWrite measures the kernel's floor under every loopback
// figure in bench/README.md: one SSE-sized write (60 bytes) to a loopback
// TCP socket whose peer nobody reads or polls, so no wake-up is involved.
// On this project's 2-vCPU VM it is about 7 µs: an event to 10k
// subscribers costs the edge at least 10k times that before any Herald
// code runs. Compare machines with it before comparing their results.
func BenchmarkLoopbackWrite(b *testing.B) {
	const conns = 1000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	sa := &syscall.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	var peers []int    // raw client sockets: in no epoll set, never read
	var srv []net.Conn // the accepted ends, written to
	defer func() {
		for _, fd := range peers {
			syscall.Close(fd)
		}
		for _, c := range srv {
			c.Close()
		}
	}()
	for range conns {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		peers = append(peers, fd)
		if err := syscall.Connect(fd, sa); err != nil {
			b.Fatal(err)
		}
		c, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		srv = append(srv, c)
	}
	frame := []byte("data: {\"step\":1,\"seq\":1,\"ts\":1234567890123456789}\n\n")
	if b.N/conns*len(frame) > 96<<10 {
		b.Skipf("%d writes would fill the unread sockets; use a shorter -benchtime", b.N)
	}
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for i := range b.N {
		// Round robin, so each socket's queue grows by b.N/conns frames:
		// far below its buffer for any run length the benchmark picks.
		if _, err := srv[i%conns].Write(frame); err != nil {
			b.Fatal(err)
		}
	}
}
