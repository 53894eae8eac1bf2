package load

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// WebSocket opcodes (RFC 6455 §5.2).
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xA
)

// errWSClosed ends a WebSocket read loop after the server's close frame.
var errWSClosed = errors.New("load: websocket closed by server")

// readWS is the read loop of a WebSocket client: server frames are not
// masked; pings are answered; each text or binary message is one event.
// Herald's default format carries the raw data; the herald.v1 envelope
// ({"id","event","data"}) is read for its event type only.
func (c *client) readWS(body io.Reader, buffered []byte) {
	var src io.Reader = body
	if len(buffered) > 0 {
		src = io.MultiReader(bytes.NewReader(buffered), body)
	}
	br := bufio.NewReaderSize(src, max(c.p.cfg.ReadBuffer, 512))
	c.opened(time.Now())
	var msg []byte
	var hdr [14]byte
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			c.ended(err)
			return
		}
		fin, op := hdr[0]&0x80 != 0, hdr[0]&0x0F
		masked, n := hdr[1]&0x80 != 0, uint64(hdr[1]&0x7F)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[2:4]); err != nil {
				c.ended(err)
				return
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(br, hdr[2:10]); err != nil {
				c.ended(err)
				return
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
		if masked || n > 16<<20 {
			c.ended(fmt.Errorf("load: bad websocket frame (masked %v, %d bytes)", masked, n))
			return
		}
		start := len(msg)
		if op >= wsClose {
			start = 0 // control frames may interleave a fragmented message
		}
		buf := msg
		if op >= wsClose {
			buf = make([]byte, 0, n)
		}
		buf = slices.Grow(buf, int(n))[:len(buf)+int(n)]
		if _, err := io.ReadFull(br, buf[start:]); err != nil {
			c.ended(err)
			return
		}
		switch op {
		case wsPing:
			if err := c.writeWS(wsPong, buf); err != nil {
				c.ended(err)
				return
			}
			continue
		case wsPong:
			continue
		case wsClose:
			c.mu.Lock()
			c.serverClosed = true
			c.mu.Unlock()
			_ = c.writeWS(wsClose, buf[:min(len(buf), 2)])
			c.ended(errWSClosed)
			return
		}
		msg = buf
		if !fin {
			continue
		}
		now := time.Now()
		switch {
		case bytes.Contains(msg, []byte(`"event":"pode.`)):
			if bytes.Contains(msg, []byte(`"event":"`+eventClose+`"`)) {
				c.mu.Lock()
				c.serverClosed = true
				c.mu.Unlock()
			}
		case bytes.Contains(msg, []byte(`"event":"`+eventGap+`"`)):
			c.mu.Lock()
			c.gaps++
			c.mu.Unlock()
		default:
			c.receive(wsEnvelopeID(msg), msg, now)
		}
		msg = msg[:0]
	}
}

// wsEnvelopeID returns the "id" of a herald.v1 envelope, if any.
func wsEnvelopeID(msg []byte) []byte {
	const key = `{"id":"`
	if !bytes.HasPrefix(msg, []byte(key)) {
		return nil
	}
	rest := msg[len(key):]
	if i := bytes.IndexByte(rest, '"'); i >= 0 {
		return rest[:i]
	}
	return nil
}

// writeWS writes one masked frame (clients must mask).
func (c *client) writeWS(op byte, payload []byte) error {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	f := make([]byte, 0, 6+len(payload))
	f = append(f, 0x80|op, 0x80|byte(len(payload)))
	var key [4]byte
	_, _ = rand.Read(key[:])
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(f)
	return err
}
