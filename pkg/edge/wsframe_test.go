package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-push/herald/internal/natstest"
)

// clientFrame builds a masked client frame, as a browser sends it.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	unmask(b[start:], key)
	return b
}

// The server's frames are what RFC 6455 says, at each length boundary,
// and a client library reads them back.
func TestServerFrames(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 70000} {
		p := bytes.Repeat([]byte{'x'}, n)
		f := wsFrame(opText, p)
		hdr := len(f) - n
		want := map[bool]int{n < 126: 2, n >= 126 && n <= 0xFFFF: 4, n > 0xFFFF: 10}[true]
		if hdr != want || f[0] != 0x81 || !bytes.Equal(f[hdr:], p) {
			t.Fatalf("length %d: header of %d bytes %x, want %d", n, hdr, f[:min(len(f), 10)], want)
		}
	}
	c := wsCloseFrame(1008, strings.Repeat("é", 100))
	if len(c) > 2+maxControlPayload || c[0] != 0x88 || binary.BigEndian.Uint16(c[2:]) != 1008 {
		t.Fatalf("close frame %x", c[:4])
	}
	if got := wsAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" { // RFC 6455 §1.3
		t.Fatalf("accept %q", got)
	}
}

// The parser assembles fragmented messages, hands control frames over
// between fragments, and refuses what the protocol forbids with the code
// the violation earns.
func TestParser(t *testing.T) {
	var in []byte
	in = append(in, clientFrame(false, opText, []byte("hel"))...)
	in = append(in, clientFrame(true, opPing, []byte("p"))...)
	in = append(in, clientFrame(true, opContinuation, []byte("lo"))...)
	in = append(in, clientFrame(true, opBinary, []byte{1, 2})...)
	p := wsParser{limit: 100}
	var got []string
	// Byte by byte: every split point of every frame.
	for i := range in {
		p.in = append(p.in, in[i])
		for {
			ev, ok, err := p.next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got = append(got, fmt.Sprintf("%x:%s", ev.op, ev.payload))
		}
	}
	if want := "9:p 1:hello 2:\x01\x02"; strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, " "), want)
	}

	for _, tc := range []struct {
		name string
		in   []byte
		code string
	}{
		{"unmasked", []byte{0x81, 0x01, 'x'}, ReasonProtocol.Code},
		{"reserved bit", append([]byte{0xC1}, clientFrame(true, opText, []byte("x"))[1:]...), ReasonProtocol.Code},
		{"unknown opcode", clientFrame(true, 0x3, nil), ReasonProtocol.Code},
		{"fragmented ping", clientFrame(false, opPing, nil), ReasonProtocol.Code},
		{"long ping", clientFrame(true, opPing, make([]byte, 126)), ReasonProtocol.Code},
		{"lone continuation", clientFrame(true, opContinuation, []byte("x")), ReasonProtocol.Code},
		{"message inside a message", append(clientFrame(false, opText, []byte("a")), clientFrame(true, opText, []byte("b"))...), ReasonProtocol.Code},
		{"frame over the limit", clientFrame(true, opText, make([]byte, 101)), ReasonTooBig.Code},
		{"fragments over the limit", append(clientFrame(false, opText, make([]byte, 60)), clientFrame(true, opContinuation, make([]byte, 60))...), ReasonTooBig.Code},
		{"length with the top bit", []byte{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, ReasonProtocol.Code},
	} {
		p := wsParser{limit: 100, in: tc.in}
		var err error
		for err == nil {
			var ok bool
			if _, ok, err = p.next(); !ok && err == nil {
				break
			}
		}
		we, isWS := err.(*wsError)
		if !isWS || we.reason.Code != tc.code {
			t.Errorf("%s: %v, want a %s violation", tc.name, err, tc.code)
		}
	}
}

// FuzzParser: whatever a client sends, the parser never panics, never
// hands over a message over the limit, and never a control frame over 125
// bytes.
func FuzzParser(f *testing.F) {
	f.Add(clientFrame(true, opText, []byte("hi")), 64)
	f.Add(append(clientFrame(false, opText, []byte("a")), clientFrame(true, opContinuation, []byte("b"))...), 64)
	f.Add(clientFrame(true, opClose, []byte{3, 232, 'o', 'k'}), 16)
	f.Add([]byte{0x81, 0xFE, 0xFF, 0xFF, 1, 2, 3, 4}, 1<<20)
	f.Fuzz(func(t *testing.T, in []byte, limit int) {
		limit = 1 + abs(limit)%(1<<16)
		p := wsParser{limit: limit, in: in}
		for range 1000 {
			ev, ok, err := p.next()
			if err != nil || !ok {
				return
			}
			switch ev.op {
			case opText, opBinary:
				if len(ev.payload) > limit {
					t.Fatalf("message of %d bytes over the limit %d", len(ev.payload), limit)
				}
			case opClose, opPing, opPong:
				if len(ev.payload) > maxControlPayload {
					t.Fatalf("control frame of %d bytes", len(ev.payload))
				}
				_, _ = closePayload(ev.payload)
			default:
				t.Fatalf("opcode %#x handed over", ev.op)
			}
		}
	})
}

func abs(n int) int {
	if n < 0 {
		if n == -n {
			return 0
		}
		return -n
	}
	return n
}

// rawWS performs a handshake by hand and returns the socket and a reader
// positioned after the 101 response.
func rawWS(t *testing.T, base, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return c, br
}

// readServerFrame reads one server frame: opcode and payload.
func readServerFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if h[1]&0x80 != 0 {
		t.Fatal("a server frame is masked")
	}
	n := int(h[1] & 0x7F)
	switch n {
	case 126:
		var l [2]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return h[0] & 0x0F, p
}

// Protocol violations over a real socket: each closes the connection with
// the code it earns (1002, 1009), with the close frame the last thing sent.
func TestWSProtocolViolations(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{WSReadLimit: 1024})
	for _, tc := range []struct {
		name string
		send []byte
		code int
	}{
		{"unmasked frame", []byte{0x81, 0x02, 'h', 'i'}, 1002},
		{"over the read limit", clientFrame(true, opText, make([]byte, 2000)), 1009},
		{"bad close code", clientFrame(true, opClose, []byte{0x03, 0xED}), 1002},
		{"invalid UTF-8", clientFrame(true, opText, []byte("{\"message\":\"\xff\"}")), 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawWS(t, e.srv.URL, "/ws/v")
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			op, p := readServerFrame(t, br)
			if op != opClose || len(p) < 2 || int(binary.BigEndian.Uint16(p)) != tc.code {
				t.Fatalf("frame %#x %q, want close %d", op, p, tc.code)
			}
		})
	}
}

// The close handshake: a client that closes gets its code back; a server
// close waits for the client's reply before it drops the socket.
func TestWSCloseHandshake(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	c, br := rawWS(t, e.srv.URL, "/ws/h")
	if _, err := c.Write(clientFrame(true, opClose, append(binary.BigEndian.AppendUint16(nil, 4001), "bye"...))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if op, p := readServerFrame(t, br); op != opClose || binary.BigEndian.Uint16(p) != 4001 {
		t.Fatalf("reply %#x %q, want close 4001", op, p)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the close handshake: %v, want the end of the stream", err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return e.Connections() == 0 })
}

// A client that pings while events stream in gets its pongs between whole
// frames: the client library, which checks every frame, reads every event
// and every pong.
func TestWSPingsBetweenEvents(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	c := wsConnect(t, e, "/ws/p", nil)
	producer := natstest.Connect(t, srv.ClientURL())
	waitWSInterest(t, producer, "/p", c)
	const n = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			if err := producer.Publish("herald.ev./p._._", []byte(fmt.Sprintf("%d:%s", i, strings.Repeat("x", i%3000)))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	wg.Wait()
	c.waitMsg(fmt.Sprintf("%d:%s", n-1, strings.Repeat("x", (n-1)%3000)))
}

// Fragmented client messages are assembled up to the read limit.
func TestWSFragmentedMessage(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{WSEchoNames: []string{"/f"}})
	c := wsConnect(t, e, "/ws/f", nil)
	big := strings.Repeat("y", 40<<10)
	w, err := c.ws.Writer(context.Background(), websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	msg := `{"message":"` + big + `","direct":true}`
	for i := 0; i < len(msg); i += 1000 { // the library sends a frame per write once its buffer fills
		if _, err := w.Write([]byte(msg[i:min(i+1000, len(msg))])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return c.has(big) }, "the 40 KiB message did not come back whole")
}

// Over TLS the edge reads with a goroutine and writes with the writer
// goroutine; the protocol is the same.
func TestWSOverTLS(t *testing.T) {
	srv := natstest.StartServer(t)
	e, err := New(natstest.Connect(t, srv.ClientURL()), Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(e.Handler())
	defer ts.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	}()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	c, err := dialWS(t, "wss"+strings.TrimPrefix(ts.URL, "https")+"/ws/tls", &websocket.DialOptions{HTTPClient: client}, true)
	if err != nil {
		t.Fatal(err)
	}
	producer := natstest.Connect(t, srv.ClientURL())
	waitWSInterest(t, producer, "/tls", c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Ping(ctx); err != nil {
		t.Fatalf("ping over TLS: %v", err)
	}
}

// WebSocket fan-out goes through the writer pool, as SSE's does: on Linux
// over plain TCP the pool writes the frames without blocking.
func TestWSFanoutThroughPool(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the non-blocking pool writes are Linux-only")
	}
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	var clients []*wsClient
	for range 3 {
		clients = append(clients, wsConnect(t, e, "/ws/pool", v1()))
	}
	producer := natstest.Connect(t, srv.ClientURL())
	waitWSInterest(t, producer, "/pool", clients...)
	before := counter(t, e.reg, "herald_edge_pool_writes_total", "outcome", "done")
	for i := range 50 {
		if err := producer.Publish("herald.ev./pool._._", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		natstest.Eventually(t, 10*time.Second, func() bool {
			s := c.snapshot()
			return len(s) > 0 && strings.Contains(s[len(s)-1], `"data":49`)
		}, "the last event")
	}
	if got := counter(t, e.reg, "herald_edge_pool_writes_total", "outcome", "done") - before; got < 3 {
		t.Fatalf("%v pool writes for WebSocket fan-out, want at least one per client", got)
	}
}
