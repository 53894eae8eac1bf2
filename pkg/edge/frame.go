package edge

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// format is how a connection wants events encoded. The fan-out encodes
// each message at most once per format and shares the bytes.
type format uint8

const (
	formatSSE        format = iota // text/event-stream frames
	formatWSText                   // WebSocket text message holding the raw data (Pode's signals)
	formatWSEnvelope               // WebSocket text message {"id","event","data"} (subprotocol herald.v1)
	numFormats
)

// encodeEvent encodes one event for format f: an SSE event, or a whole
// WebSocket text frame (header and payload; unmasked, so the same bytes
// serve every connection of the format).
func encodeEvent(f format, id, typ string, data []byte) []byte {
	switch f {
	case formatWSText:
		return wsFrame(opText, data)
	case formatWSEnvelope:
		b := appendEnvelope(newFrameBuffer(len(data)+len(id)+len(typ)+32), id, typ, data)
		return finishFrame(b, opText)
	default:
		return encodeSSE(id, typ, data)
	}
}

// encodeEnvelope builds {"id":..,"event":..,"data":..}. Data that is valid
// JSON is embedded as a value; anything else as a JSON string. Empty id
// and event are omitted.
func encodeEnvelope(id, typ string, data []byte) []byte {
	return appendEnvelope(make([]byte, 0, len(data)+len(id)+len(typ)+32), id, typ, data)
}

// appendEnvelope appends the envelope of encodeEnvelope to b.
func appendEnvelope(b []byte, id, typ string, data []byte) []byte {
	b = append(b, '{')
	if id != "" {
		b = append(b, `"id":`...)
		b = appendJSONString(b, id)
		b = append(b, ',')
	}
	if typ != "" {
		b = append(b, `"event":`...)
		b = appendJSONString(b, typ)
		b = append(b, ',')
	}
	b = append(b, `"data":`...)
	if len(data) > 0 && json.Valid(data) {
		var c bytes.Buffer
		if json.Compact(&c, data) == nil {
			b = append(b, c.Bytes()...)
			return append(b, '}')
		}
	}
	b = appendJSONString(b, string(data))
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return append(b, bytes.TrimRight(buf.Bytes(), "\n")...)
}

// SSE framing, as Pode writes it: CRLF line ends, optional id: and event:
// lines, one data: line per line of the payload, and an empty line.
// Unlike Pode, multi-line data is split into several data: lines, so no
// payload can break the framing; CR, LF and NUL in id and event are
// replaced by spaces (producers using the SDK or /publish are rejected
// before they get here; raw NATS producers are not).

var (
	framePing  = []byte("event: pode.ping\r\ndata: \r\n\r\n")
	frameClose = []byte("event: pode.close\r\ndata: \r\n\r\n")
)

// appendSSE appends one SSE event to dst.
func appendSSE(dst []byte, id, typ string, data []byte) []byte {
	if id != "" {
		dst = append(dst, "id: "...)
		dst = appendField(dst, id)
		dst = append(dst, "\r\n"...)
	}
	if typ != "" {
		dst = append(dst, "event: "...)
		dst = appendField(dst, typ)
		dst = append(dst, "\r\n"...)
	}
	for {
		dst = append(dst, "data: "...)
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			dst = append(dst, data...)
			dst = append(dst, "\r\n"...)
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, "\r\n"...)
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(dst, "\r\n"...)
}

// appendField appends an id or event value with CR, LF and NUL replaced.
func appendField(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' || c == 0 {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

// sseFrameLen estimates the encoded size, to allocate once.
func sseFrameLen(id, typ string, data []byte) int {
	return len(id) + len(typ) + len(data) + 32 + 8*bytes.Count(data, []byte{'\n'})
}

// encodeSSE returns one event as a new frame.
func encodeSSE(id, typ string, data []byte) []byte {
	return appendSSE(make([]byte, 0, sseFrameLen(id, typ, data)), id, typ, data)
}

// openFrame returns the optional retry: line and the pode.open event. With
// history on, id is the client's starting position, so that a client that
// receives nothing before it reconnects can still resume.
func openFrame(retryMS int64, id, clientID, group, name string) []byte {
	var b []byte
	if retryMS > 0 {
		b = append(b, "retry: "...)
		b = strconv.AppendInt(b, retryMS, 10)
		b = append(b, "\r\n"...)
	}
	return appendSSE(b, id, "pode.open", openData(clientID, group, name))
}

// openData is pode.open's JSON with Pode's fixed key order, properly escaped.
func openData(clientID, group, name string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		ClientID string `json:"clientId"`
		Group    string `json:"group"`
		Name     string `json:"name"`
	}{clientID, group, name})
	return bytes.TrimRight(buf.Bytes(), "\n")
}
