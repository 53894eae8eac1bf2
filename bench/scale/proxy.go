package scale

import (
	"bytes"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// routeOps are the route protocol operations counted by name; everything
// else is "other".
var routeOps = []string{"RS+", "RS-", "RMSG", "HMSG", "PING", "PONG", "INFO", "CONNECT", "other"}

const opOther = 8 // index of "other" in routeOps

// OpCount is how many operations of one kind crossed, and their bytes
// (control line and payload).
type OpCount struct {
	Ops   int64 `json:"ops"`
	Bytes int64 `json:"bytes"`
}

// RouteTraffic is what crossed the route proxies: bytes on the wire in
// both directions, by protocol operation.
type RouteTraffic struct {
	Bytes int64              `json:"bytes"`
	Ops   map[string]OpCount `json:"ops,omitempty"`
	// Unparsed counts bytes the parser could not attribute (a control line
	// over its limit); zero in every run so far.
	Unparsed int64 `json:"unparsed,omitempty"`
}

func (t RouteTraffic) add(o RouteTraffic) RouteTraffic {
	out := RouteTraffic{Bytes: t.Bytes + o.Bytes, Unparsed: t.Unparsed + o.Unparsed, Ops: map[string]OpCount{}}
	for k, v := range t.Ops {
		out.Ops[k] = v
	}
	for k, v := range o.Ops {
		c := out.Ops[k]
		out.Ops[k] = OpCount{Ops: c.Ops + v.Ops, Bytes: c.Bytes + v.Bytes}
	}
	return out
}

// Sub returns t minus an earlier reading.
func (t RouteTraffic) Sub(before RouteTraffic) RouteTraffic {
	out := RouteTraffic{Bytes: t.Bytes - before.Bytes, Unparsed: t.Unparsed - before.Unparsed, Ops: map[string]OpCount{}}
	for k, v := range t.Ops {
		b := before.Ops[k]
		if d := (OpCount{Ops: v.Ops - b.Ops, Bytes: v.Bytes - b.Bytes}); d.Ops != 0 || d.Bytes != 0 {
			out.Ops[k] = d
		}
	}
	return out
}

// Interest is the subscription interest operations (RS+ and RS-).
func (t RouteTraffic) Interest() OpCount {
	a, b := t.Ops["RS+"], t.Ops["RS-"]
	return OpCount{Ops: a.Ops + b.Ops, Bytes: a.Bytes + b.Bytes}
}

// routeProxy forwards the route connections into one node and counts
// what crosses, in both directions.
type routeProxy struct {
	ln     net.Listener
	target string

	bytes    atomic.Int64
	unparsed atomic.Int64
	ops      [9]struct{ n, b atomic.Int64 }

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu
	wg    sync.WaitGroup
}

func startRouteProxy(target string) (*routeProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &routeProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *routeProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *routeProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// track registers a connection pair; false when the proxy is closing.
func (p *routeProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst, parsing the protocol as it passes; when either
// side fails both are closed (the servers reconnect their routes).
func (p *routeProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	defer src.Close()
	defer dst.Close()
	var pc protoCounter
	pc.p = p
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.bytes.Add(int64(n))
			pc.feed(buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *routeProxy) traffic() RouteTraffic {
	t := RouteTraffic{Bytes: p.bytes.Load(), Unparsed: p.unparsed.Load(), Ops: map[string]OpCount{}}
	for i, name := range routeOps {
		if n := p.ops[i].n.Load(); n > 0 {
			t.Ops[name] = OpCount{Ops: n, Bytes: p.ops[i].b.Load()}
		}
	}
	return t
}

func (p *routeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// maxControlLine bounds a buffered control line (INFO lines are the
// longest: a few KiB).
const maxControlLine = 1 << 20

// protoCounter parses one direction of a route connection: control lines
// end with CRLF; RMSG and HMSG lines give the size of a payload that
// follows (plus CRLF), which is skipped.
type protoCounter struct {
	p    *routeProxy
	line []byte // a control line split across reads
	skip int    // payload bytes still to skip
}

func (pc *protoCounter) feed(b []byte) {
	for len(b) > 0 {
		if pc.skip > 0 {
			n := min(pc.skip, len(b))
			pc.skip -= n
			b = b[n:]
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			pc.line = append(pc.line, b...)
			if len(pc.line) > maxControlLine {
				pc.p.unparsed.Add(int64(len(pc.line)))
				pc.line = pc.line[:0]
			}
			return
		}
		line := b[:i+1]
		if len(pc.line) > 0 {
			pc.line = append(pc.line, line...)
			line = pc.line
		}
		pc.count(line)
		pc.line = pc.line[:0]
		b = b[i+1:]
	}
}

// count attributes one control line (and its payload) to its operation.
func (pc *protoCounter) count(line []byte) {
	fields := bytes.Fields(line)
	if len(fields) == 0 {
		pc.p.unparsed.Add(int64(len(line)))
		return
	}
	op := opOther
	name := string(bytes.ToUpper(fields[0]))
	for i, o := range routeOps[:opOther] {
		if name == o {
			op = i
			break
		}
	}
	n := int64(len(line))
	if name == "RMSG" || name == "HMSG" || name == "LMSG" {
		// The last argument is the payload size (HMSG: headers and
		// payload together).
		size, err := strconv.Atoi(string(fields[len(fields)-1]))
		if err == nil && size >= 0 {
			pc.skip = size + 2
			n += int64(size + 2)
		}
	}
	pc.p.ops[op].n.Add(1)
	pc.p.ops[op].b.Add(n)
}
