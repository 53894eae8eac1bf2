package load

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Transport is how a client subscribes.
type Transport string

// Transports.
const (
	SSE       Transport = "sse" // text/event-stream over HTTP/1.1
	WebSocket Transport = "ws"  // RFC 6455 text messages
)

// Endpoint is where and how clients subscribe.
type Endpoint struct {
	// URL is the subscribe URL (http:// or ws://). {i} is replaced with the
	// client's index and {client} with its clientId (ClientID).
	URL string
	// URLs, when set, spread clients over several servers: client i uses
	// URLs[i % len(URLs)] instead of URL.
	URLs []string
	// Transport is SSE (default) or WebSocket.
	Transport Transport
	// Header is sent with every subscribe request.
	Header http.Header
	// OpenEvent is the event that marks a stream as open, e.g. "pode.open".
	// Empty: the stream is open when the response head arrives.
	OpenEvent string
	// Resume is how a reconnecting client presents the last event id it
	// saw: "header" (Last-Event-ID, the default), "query" (lastEventId=)
	// or "none".
	Resume string
	// WSProtocol is the WebSocket subprotocol to ask for (e.g. "herald.v1").
	WSProtocol string
}

// ClientID is the clientId of client i: c000042. Every part of a fleet
// names clients the same way, so publishers can target them.
func ClientID(i int) string { return fmt.Sprintf("c%06d", i) }

// Event types with a meaning for the accounting.
const (
	eventPing  = "pode.ping"
	eventClose = "pode.close"
	eventGap   = "herald.gap"
)

// client is one subscriber. Its fields are owned by the goroutine that
// connects it and then by its read loop; the counters behind mu are read
// by reports.
type client struct {
	p     *Pool
	index int // global index
	shard int
	busy  atomic.Bool // a churn operation holds the client

	nc       net.Conn
	round    *round        // the Connect call this connection belongs to
	done     chan struct{} // closed when the read loop ends
	dialAt   time.Time
	openedAt time.Time

	mu           sync.Mutex
	step         int64    // guarded by mu; the phase the counters belong to
	seen         []uint64 // guarded by mu; bitset of sequence numbers
	maxSeq       int64    // guarded by mu
	delivered    int64    // guarded by mu
	dups         int64    // guarded by mu
	ooo          int64    // guarded by mu
	stale        int64    // guarded by mu; payloads of another phase
	unparsed     int64    // guarded by mu
	beyond       int64    // guarded by mu; sequence outside 0..Expect-1
	lastRecv     int64    // guarded by mu; unix ns
	lastID       []byte   // guarded by mu; last event id seen (for resume)
	gaps         int64    // guarded by mu; herald.gap events (whole life)
	serverClosed bool     // guarded by mu; pode.close or WS close frame received
	live         bool     // guarded by mu
	err          error    // guarded by mu; why the last stream ended
}

// subscribeURL expands the endpoint URL for this client and adds the
// resume parameter when asked.
func (c *client) subscribeURL(lastID string) (*url.URL, error) {
	raw := c.p.cfg.Endpoint.URL
	if urls := c.p.cfg.Endpoint.URLs; len(urls) > 0 {
		raw = urls[c.index%len(urls)]
	}
	raw = strings.ReplaceAll(raw, "{i}", strconv.Itoa(c.index))
	raw = strings.ReplaceAll(raw, "{client}", ClientID(c.index))
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if lastID != "" && c.p.cfg.Endpoint.Resume == "query" {
		q := u.Query()
		q.Set("lastEventId", lastID)
		u.RawQuery = q.Encode()
	}
	return u, nil
}

// dialer returns the dialer for this client: from the pool's source
// address for its index, with the port picked at connect time so that one
// source address serves every destination (IP_BIND_ADDRESS_NO_PORT).
func (c *client) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: c.p.cfg.DialTimeout}
	if ip := c.p.sourceIP(c.index); ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			return errors.Join(err, serr)
		}
	}
	return d
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h).
const ipBindAddressNoPort = 24

// connect dials and subscribes; on success the read loop runs until the
// stream ends. resumeID, when not empty, is presented as the last event id.
func (c *client) connect(resumeID string) error {
	ep := &c.p.cfg.Endpoint
	u, err := c.subscribeURL(resumeID)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	c.dialAt = time.Now()
	nc, err := c.dialer().Dial("tcp", host)
	if err != nil {
		return err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = nc.SetDeadline(time.Now().Add(c.p.cfg.HeadTimeout))

	var req strings.Builder
	req.WriteString("GET ")
	req.WriteString(u.RequestURI())
	req.WriteString(" HTTP/1.1\r\nHost: ")
	req.WriteString(u.Host)
	req.WriteString("\r\nUser-Agent: herald-bench\r\n")
	wsKey := ""
	if ep.Transport == WebSocket {
		var k [16]byte
		_, _ = rand.Read(k[:])
		wsKey = base64.StdEncoding.EncodeToString(k[:])
		req.WriteString("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ")
		req.WriteString(wsKey)
		req.WriteString("\r\n")
		if ep.WSProtocol != "" {
			req.WriteString("Sec-WebSocket-Protocol: " + ep.WSProtocol + "\r\n")
		}
	} else {
		req.WriteString("Accept: text/event-stream\r\nCache-Control: no-cache\r\n")
	}
	if resumeID != "" && (ep.Resume == "" || ep.Resume == "header") {
		req.WriteString("Last-Event-ID: " + resumeID + "\r\n")
	}
	for k, vs := range ep.Header {
		for _, v := range vs {
			req.WriteString(k + ": " + v + "\r\n")
		}
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(nc, req.String()); err != nil {
		nc.Close()
		return err
	}

	// The response head is parsed in the SSE reader's own buffer: no
	// bufio.Reader or header map per connection.
	r := NewReader(nc, c.p.cfg.ReadBuffer)
	head, err := r.head(64 << 10)
	if err != nil {
		nc.Close()
		return fmt.Errorf("response head: %w", err)
	}
	h, err := parseHead(head)
	if err != nil {
		nc.Close()
		return err
	}
	want := http.StatusOK
	if ep.Transport == WebSocket {
		want = http.StatusSwitchingProtocols
	}
	rest := r.buf[r.start:r.end]
	if h.status != want {
		nc.Close()
		return fmt.Errorf("status %d: %s", h.status, strings.TrimSpace(string(rest[:min(len(rest), 256)])))
	}
	_ = nc.SetDeadline(time.Time{})
	c.nc = nc
	c.done = make(chan struct{})
	c.mu.Lock()
	c.live, c.err, c.serverClosed = true, nil, false
	c.mu.Unlock()

	// The body: straight from the socket when the server streams until
	// close (Herald hijacks the socket after the head), through a
	// de-chunker otherwise. Bytes already read are handed over.
	switch {
	case ep.Transport == WebSocket:
		go c.readWS(nc, append([]byte(nil), rest...))
	case h.chunked:
		br := bufio.NewReader(io.MultiReader(bytes.NewReader(append([]byte(nil), rest...)), nc))
		go c.readSSE(NewReader(httputil.NewChunkedReader(br), c.p.cfg.ReadBuffer))
	case h.length >= 0:
		body := io.LimitReader(io.MultiReader(bytes.NewReader(append([]byte(nil), rest...)), nc), h.length)
		go c.readSSE(NewReader(body, c.p.cfg.ReadBuffer))
	default:
		go c.readSSE(r)
	}
	return nil
}

func (c *client) readSSE(r *Reader) {
	open := c.p.cfg.Endpoint.OpenEvent == ""
	if open {
		c.opened(time.Now())
	}
	for {
		ev, err := r.Next()
		if err != nil {
			c.ended(err)
			return
		}
		now := time.Now()
		if !open {
			if ev.TypeIs(c.p.cfg.Endpoint.OpenEvent) {
				open = true
				c.opened(now)
			}
			continue
		}
		switch {
		case ev.TypeIs(eventPing):
			continue
		case ev.TypeIs(eventClose):
			c.mu.Lock()
			c.serverClosed = true
			c.mu.Unlock()
			continue
		case ev.TypeIs(eventGap):
			c.mu.Lock()
			c.gaps++
			c.mu.Unlock()
			continue
		}
		c.receive(ev.ID, ev.Data, now)
	}
}

// opened records that the stream is open.
func (c *client) opened(now time.Time) {
	c.openedAt = now
	c.round.open(now, now.Sub(c.dialAt), c.shard)
}

// ended records why the stream ended.
func (c *client) ended(err error) {
	_ = c.nc.Close()
	c.mu.Lock()
	c.live = false
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	c.err = err
	c.mu.Unlock()
	if c.openedAt.IsZero() {
		c.round.fail(err)
	}
	c.p.live.Add(-1)
	close(c.done)
}

// receive accounts one application event.
func (c *client) receive(id, data []byte, now time.Time) {
	ph := c.p.phase.Load()
	m, ok := ParseMarker(data)
	c.mu.Lock()
	if len(id) > 0 {
		c.lastID = append(c.lastID[:0], id...)
	}
	if ph != nil && c.step != ph.Step {
		c.resetLocked(ph)
	}
	switch {
	case !ok:
		c.unparsed++
	case ph == nil || m.Step != ph.Step:
		c.stale++
	default:
		c.lastRecv = now.UnixNano()
		if m.Seq < 0 || m.Seq >= ph.Expect {
			c.beyond++
			break
		}
		w, bit := m.Seq/64, uint64(1)<<(m.Seq%64)
		if c.seen[w]&bit != 0 {
			c.dups++
			break
		}
		c.seen[w] |= bit
		c.delivered++
		if m.Seq < c.maxSeq {
			c.ooo++
		} else {
			c.maxSeq = m.Seq
		}
		ph.hist.Record(now.Sub(time.Unix(0, m.TS)), c.shard)
		c.p.delivered.add(c.shard, 1)
	}
	c.mu.Unlock()
}

func (c *client) resetLocked(ph *phase) {
	c.step = ph.Step
	words := int((ph.Expect + 63) / 64)
	if cap(c.seen) >= words {
		c.seen = c.seen[:words]
		clear(c.seen)
	} else {
		c.seen = make([]uint64, words)
	}
	c.maxSeq, c.delivered, c.dups, c.ooo, c.stale, c.unparsed, c.beyond, c.lastRecv = -1, 0, 0, 0, 0, 0, 0, 0
}

// close closes the socket and waits for the read loop.
func (c *client) close() {
	if c.nc == nil || c.done == nil {
		return
	}
	_ = c.nc.Close()
	<-c.done
}

// responseHead is what a subscriber needs from an HTTP response head.
type responseHead struct {
	status  int
	chunked bool
	length  int64 // -1: none (the body lasts until the connection closes)
}

// parseHead parses a response head: the status line and the framing headers.
func parseHead(head []byte) (responseHead, error) {
	h := responseHead{length: -1}
	lines := bytes.Split(bytes.TrimRight(head, "\r\n"), []byte{'\n'})
	status := bytes.TrimRight(lines[0], "\r")
	f := bytes.Fields(status)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return h, fmt.Errorf("malformed status line %q", status)
	}
	n, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return h, fmt.Errorf("malformed status line %q", status)
	}
	h.status = n
	for _, l := range lines[1:] {
		k, v, ok := bytes.Cut(bytes.TrimRight(l, "\r"), []byte{':'})
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			h.chunked = bytes.Contains(bytes.ToLower(v), []byte("chunked"))
		case bytes.EqualFold(k, []byte("Content-Length")):
			if l, err := strconv.ParseInt(string(v), 10, 64); err == nil && l >= 0 {
				h.length = l
			}
		}
	}
	if h.chunked {
		h.length = -1
	}
	return h, nil
}
