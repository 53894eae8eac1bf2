package edge

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// WebSocket framing (RFC 6455 §5), the server's side of it. Frames the
// server sends are unmasked, so one encoded frame serves every connection
// of a format: the fan-out encodes an event once and queues the same bytes
// everywhere, as it does for SSE. Frames a client sends are masked and may
// be fragmented; wsParser reads them from bytes as they arrive.

// Opcodes.
const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xA
)

// wsHeadroom is the room an encoder leaves before a payload for the frame
// header (at most 10 bytes), so that a frame is built in one allocation.
const wsHeadroom = 10

// maxControlPayload bounds a control frame's payload (RFC 6455 §5.5).
const maxControlPayload = 125

// frameWSPing is the server's keep-alive ping, with an empty payload.
var frameWSPing = []byte{0x80 | opPing, 0}

// finishFrame turns b, whose payload starts at b[wsHeadroom:], into a
// final (FIN) frame of opcode op and returns it: the header is written
// into the headroom, right before the payload.
func finishFrame(b []byte, op byte) []byte {
	n := len(b) - wsHeadroom
	h := 2
	switch {
	case n > 0xFFFF:
		h = 10
	case n > maxControlPayload:
		h = 4
	}
	f := b[wsHeadroom-h:]
	f[0] = 0x80 | op
	switch h {
	case 2:
		f[1] = byte(n)
	case 4:
		f[1] = 126
		binary.BigEndian.PutUint16(f[2:], uint16(n))
	default:
		f[1] = 127
		binary.BigEndian.PutUint64(f[2:], uint64(n))
	}
	return f
}

// newFrameBuffer returns a buffer with the headroom in place and room for
// n payload bytes.
func newFrameBuffer(n int) []byte { return make([]byte, wsHeadroom, wsHeadroom+n) }

// wsFrame returns payload as one final frame of opcode op.
func wsFrame(op byte, payload []byte) []byte {
	return finishFrame(append(newFrameBuffer(len(payload)), payload...), op)
}

// wsCloseFrame returns a close frame with code and reason (cut to fit a
// control frame, on a UTF-8 boundary).
func wsCloseFrame(code int, reason string) []byte {
	for len(reason) > maxControlPayload-2 {
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	b := binary.BigEndian.AppendUint16(newFrameBuffer(2+len(reason)), uint16(code))
	return finishFrame(append(b, reason...), opClose)
}

// wsAccept is the Sec-WebSocket-Accept value of a handshake's key.
func wsAccept(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// wsError is a violation by the client, with the close code it earns.
type wsError struct {
	reason CloseReason
	msg    string
}

func (e *wsError) Error() string { return e.msg }

func protocolError(format string, args ...any) error {
	return &wsError{reason: ReasonProtocol, msg: fmt.Sprintf(format, args...)}
}

var errTooBig = &wsError{reason: ReasonTooBig, msg: "message over the read limit"}

// wsHeader is a parsed frame header.
type wsHeader struct {
	fin    bool
	op     byte
	length int
	mask   [4]byte
}

// parseHeader parses the frame header at the start of b. It returns the
// header length n, or n == 0 when b does not hold a whole header yet. A
// client's frame must be masked, use no reserved bits (no extension is
// negotiated), have a known opcode, and a control frame must be final and
// short. limit bounds the payload length of any frame.
func parseHeader(b []byte, limit int) (h wsHeader, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	if b[0]&0x70 != 0 {
		return h, 0, protocolError("reserved bits set")
	}
	h.fin, h.op = b[0]&0x80 != 0, b[0]&0x0F
	if b[1]&0x80 == 0 {
		return h, 0, protocolError("client frame not masked")
	}
	switch h.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin || b[1]&0x7F > maxControlPayload {
			return h, 0, protocolError("fragmented or long control frame")
		}
	default:
		return h, 0, protocolError("unknown opcode %#x", h.op)
	}
	n = 2
	var length uint64
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		length, n = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		length, n = binary.BigEndian.Uint64(b[2:]), 10
		if length>>63 != 0 {
			return h, 0, protocolError("frame length out of range")
		}
	default:
		length = uint64(l)
	}
	if length > uint64(limit) {
		return h, 0, errTooBig
	}
	if len(b) < n+4 {
		return h, 0, nil
	}
	copy(h.mask[:], b[n:])
	h.length = int(length)
	return h, n + 4, nil
}

// unmask unmasks p in place with the frame's key.
func unmask(p []byte, key [4]byte) {
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// wsParser assembles a client's messages from the bytes read so far. It
// is owned by the connection's active reader, and holds nothing between
// reads but an unfinished frame or message.
type wsParser struct {
	limit int    // the read limit: largest message
	in    []byte // bytes not parsed yet: an unfinished frame
	msg   []byte // the fragments of an unfinished message
	msgOp byte   // opText or opBinary while msg is being assembled
	open  bool   // a fragmented message is being assembled
}

// wsEvent is what the parser found: a whole message, or a control frame.
type wsEvent struct {
	op      byte
	payload []byte // valid until the next call to next
}

// next returns the next complete message or control frame in p.in, or
// ok == false when more bytes are needed.
func (p *wsParser) next() (ev wsEvent, ok bool, err error) {
	for {
		h, n, err := parseHeader(p.in, p.limit)
		if err != nil || n == 0 {
			return ev, false, err
		}
		if len(p.in) < n+h.length {
			return ev, false, nil
		}
		payload := p.in[n : n+h.length]
		p.in = p.in[n+h.length:]
		unmask(payload, h.mask)
		switch h.op {
		case opClose, opPing, opPong:
			return wsEvent{op: h.op, payload: payload}, true, nil
		case opText, opBinary:
			if p.open {
				return ev, false, protocolError("new message before the last one ended")
			}
			if h.fin {
				return wsEvent{op: h.op, payload: payload}, true, nil
			}
			p.open, p.msgOp, p.msg = true, h.op, append(p.msg[:0], payload...)
		case opContinuation:
			if !p.open {
				return ev, false, protocolError("continuation without a message")
			}
			if len(p.msg)+len(payload) > p.limit {
				return ev, false, errTooBig
			}
			p.msg = append(p.msg, payload...)
			if h.fin {
				p.open = false
				return wsEvent{op: p.msgOp, payload: p.msg}, true, nil
			}
		}
	}
}

// rest drops the parser's buffers when nothing is pending, so that an
// idle connection holds none.
func (p *wsParser) rest() {
	if len(p.in) == 0 {
		p.in = nil
	}
	if !p.open {
		p.msg = nil
	}
}

// closePayload reads a close frame's code (1005, none, when absent) and
// checks it is one a client may send.
func closePayload(b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return 1005, nil
	case len(b) == 1:
		return 0, protocolError("close frame of one byte")
	}
	code := int(binary.BigEndian.Uint16(b))
	if code < 1000 || code == 1004 || code == 1005 || code == 1006 || (code > 1014 && code < 3000) || code > 4999 {
		return 0, protocolError("close code %d", code)
	}
	if !utf8.Valid(b[2:]) {
		return 0, &wsError{reason: ReasonBadData, msg: "close reason not UTF-8"}
	}
	return code, nil
}
