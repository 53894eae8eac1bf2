// Package sseclient is a small Server-Sent Events client whose parser
// follows the WHATWG event-stream interpretation algorithm. Herald's tests,
// benchmarks and end-to-end suite use it as the reference reader of what
// the edge writes.
package sseclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Event is one dispatched event, as a browser's EventSource would see it.
type Event struct {
	ID    string // the last event ID in force when the event was dispatched
	Type  string // "message" when the stream gave no event: field
	Data  string
	Retry int // the reconnection time in force (ms), 0 when never set
}

// Parser reads events from an event stream.
type Parser struct {
	r       *bufio.Reader
	idMu    sync.Mutex // lastID is written by Next, read by LastEventID from any goroutine
	lastID  string
	retry   int
	typ     string
	data    strings.Builder
	hasData bool
	pending [][]byte // lines split on a bare CR, not yet processed
}

// NewParser returns a parser reading r.
func NewParser(r io.Reader) *Parser {
	return &Parser{r: bufio.NewReaderSize(r, 16<<10)}
}

// Next returns the next dispatched event. It returns io.EOF (or the read
// error) when the stream ends; an event without its terminating blank line
// is discarded, as the specification says.
func (p *Parser) Next() (Event, error) {
	for {
		line, err := p.line()
		if err != nil {
			return Event{}, err
		}
		if ev, ok := p.process(line); ok {
			return ev, nil
		}
	}
}

// LastEventID returns the stream's last event ID: what an EventSource
// would send as Last-Event-ID if it reconnected now. An id line sets it
// even when no event is dispatched (an id followed by a blank line). It is
// safe to call while another goroutine reads the stream.
func (p *Parser) LastEventID() string {
	p.idMu.Lock()
	defer p.idMu.Unlock()
	return p.lastID
}

// line returns one line without its terminator. Lines end in CRLF, LF or CR.
func (p *Parser) line() ([]byte, error) {
	if len(p.pending) > 0 {
		l := p.pending[0]
		p.pending = p.pending[1:]
		return l, nil
	}
	raw, err := p.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A very long line: accumulate it.
		buf := append([]byte(nil), raw...)
		for errors.Is(err, bufio.ErrBufferFull) {
			raw, err = p.r.ReadSlice('\n')
			buf = append(buf, raw...)
		}
		raw = buf
	}
	if err != nil {
		return nil, err
	}
	raw = raw[:len(raw)-1] // the LF
	raw = bytes.TrimSuffix(raw, []byte{'\r'})
	if bytes.IndexByte(raw, '\r') < 0 {
		return raw, nil
	}
	parts := bytes.Split(raw, []byte{'\r'})
	for _, part := range parts[1:] {
		p.pending = append(p.pending, append([]byte(nil), part...))
	}
	return parts[0], nil
}

func (p *Parser) process(line []byte) (Event, bool) {
	if len(line) == 0 {
		if !p.hasData {
			p.typ = ""
			return Event{}, false
		}
		ev := Event{ID: p.lastID, Type: p.typ, Data: strings.TrimSuffix(p.data.String(), "\n"), Retry: p.retry}
		if ev.Type == "" {
			ev.Type = "message"
		}
		p.typ, p.hasData = "", false
		p.data.Reset()
		return ev, true
	}
	if line[0] == ':' {
		return Event{}, false
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		value = bytes.TrimPrefix(value, []byte{' '})
	}
	switch string(field) {
	case "event":
		p.typ = string(value)
	case "data":
		p.data.Write(value)
		p.data.WriteByte('\n')
		p.hasData = true
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.idMu.Lock()
			p.lastID = string(value)
			p.idMu.Unlock()
		}
	case "retry":
		if n, err := strconv.Atoi(string(value)); err == nil && n >= 0 && isDigits(value) {
			p.retry = n
		}
	}
	return Event{}, false
}

func isDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Stream is an open event stream.
type Stream struct {
	Resp *http.Response
	*Parser
}

// StatusError is returned by Dial when the server does not answer 200.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("sseclient: status %d: %s", e.Code, e.Body) }

// Dial opens an event stream at url with Accept: text/event-stream and the
// extra headers given. A non-200 answer is a *StatusError.
func Dial(ctx context.Context, client *http.Client, url string, header http.Header) (*Stream, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/event-stream")
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	return &Stream{Resp: resp, Parser: NewParser(resp.Body)}, nil
}

// Close closes the stream.
func (s *Stream) Close() error { return s.Resp.Body.Close() }

// ReadAll parses a whole stream and returns its events.
func ReadAll(r io.Reader) ([]Event, error) {
	p := NewParser(r)
	var out []Event
	for {
		ev, err := p.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}
