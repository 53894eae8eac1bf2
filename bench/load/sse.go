package load

import (
	"bytes"
	"errors"
	"io"
	"strconv"
)

// Event is one dispatched SSE event. Its slices point into the Reader and
// are valid until the next call to Next.
type Event struct {
	ID    []byte // the last event ID in force at dispatch
	Type  []byte // empty when the stream gave no event: field ("message")
	Data  []byte // data lines joined by '\n'
	Retry int    // reconnection time in force (ms), 0 when never set
}

// TypeIs reports whether the event's type is t ("message" matches an
// event without an event: field).
func (e *Event) TypeIs(t string) bool {
	if len(e.Type) == 0 {
		return t == "message"
	}
	return string(e.Type) == t
}

// ErrLineTooLong is returned by Reader.Next when one line exceeds the
// reader's maximum size.
var ErrLineTooLong = errors.New("load: SSE line too long")

// Reader parses an event stream with the WHATWG interpretation rules
// (lines end in CRLF, LF or CR; comments; id without NUL; digits-only
// retry; an event without its blank line at EOF is discarded). It reads
// into one buffer and copies only field values, so the receive loop of
// thousands of clients costs one read system call per burst of events and
// no allocation per event. internal/sseclient is the reference parser;
// the tests check that both agree.
type Reader struct {
	r       io.Reader
	buf     []byte
	start   int  // first unparsed byte in buf
	end     int  // end of valid data in buf
	skipLF  bool // the last line ended in CR: a leading LF belongs to it
	max     int
	err     error
	lastID  []byte
	typ     []byte
	data    []byte
	retry   int
	hasData bool
}

// NewReader returns a Reader on r with an initial buffer of size bytes
// (4 KiB when size <= 0); lines up to 1 MiB are accepted.
func NewReader(r io.Reader, size int) *Reader {
	if size <= 0 {
		size = 4 << 10
	}
	return &Reader{r: r, buf: make([]byte, size), max: 1 << 20}
}

// Buffered returns the bytes read from the underlying reader but not yet parsed.
func (p *Reader) Buffered() int { return p.end - p.start }

// Next returns the next event. It returns io.EOF, or the read error, when
// the stream ends.
func (p *Reader) Next() (Event, error) {
	for {
		line, err := p.line()
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			if !p.hasData {
				p.typ = p.typ[:0]
				continue
			}
			data := p.data
			if n := len(data); n > 0 && data[n-1] == '\n' {
				data = data[:n-1]
			}
			ev := Event{ID: p.lastID, Type: p.typ, Data: data, Retry: p.retry}
			// Only the lengths are reset: the bytes the event points to
			// stay in place until the next call appends to these buffers.
			p.typ, p.data, p.hasData = p.typ[:0], p.data[:0], false
			return ev, nil
		}
		p.field(line)
	}
}

func (p *Reader) field(line []byte) {
	if line[0] == ':' {
		return
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
		p.hasData = true
	case "event":
		p.typ = append(p.typ[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = append(p.lastID[:0], value...)
		}
	case "retry":
		if n, ok := digits(value); ok {
			p.retry = n
		}
	}
}

// digits parses a retry value: ASCII digits only, within int range.
func digits(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(string(b))
	return n, err == nil
}

// line returns the next line without its terminator. The slice points
// into buf and is valid until the next call.
func (p *Reader) line() ([]byte, error) {
	for {
		if p.skipLF && p.start < p.end {
			if p.buf[p.start] == '\n' {
				p.start++
			}
			p.skipLF = false
		}
		b := p.buf[p.start:p.end]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line := b[:i]
			next := p.start + i + 1
			if j := bytes.IndexByte(line, '\r'); j >= 0 {
				line = line[:j]
				next = p.start + j + 1
				if j == i-1 {
					next = p.start + i + 1 // CRLF
				}
			}
			p.start = next
			return line, nil
		}
		if j := bytes.IndexByte(b, '\r'); j >= 0 {
			// A bare CR ends the line; an LF right after it (maybe not
			// read yet) belongs to it.
			p.start += j + 1
			p.skipLF = true
			return b[:j], nil
		}
		if p.err != nil {
			return nil, p.err
		}
		if err := p.fill(); err != nil {
			p.err = err
		}
	}
}

// fill reads more input, moving the unparsed tail to the front of buf
// and growing buf when a line does not fit.
func (p *Reader) fill() error {
	if p.start > 0 {
		n := copy(p.buf, p.buf[p.start:p.end])
		p.start, p.end = 0, n
	}
	if p.end == len(p.buf) {
		if len(p.buf) >= p.max {
			return ErrLineTooLong
		}
		nb := make([]byte, min(2*len(p.buf), p.max))
		copy(nb, p.buf[:p.end])
		p.buf = nb
	}
	n, err := p.r.Read(p.buf[p.end:])
	p.end += n
	if err == nil && n == 0 {
		return nil
	}
	if n > 0 && err != nil {
		// Parse what arrived; report the error on the next fill.
		p.err = err
		return nil
	}
	return err
}

// head reads an HTTP response head (up to and including the blank line)
// and returns it; what follows stays buffered for Next. The slice is valid
// until the next read.
func (p *Reader) head(limit int) ([]byte, error) {
	for {
		b := p.buf[p.start:p.end]
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			p.start += i + 4
			return b[:i+4], nil
		}
		if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
			p.start += i + 2
			return b[:i+2], nil
		}
		if p.err != nil {
			return nil, p.err
		}
		if p.end-p.start >= limit {
			return nil, errors.New("load: response head too large")
		}
		if err := p.fill(); err != nil {
			p.err = err
		}
	}
}
