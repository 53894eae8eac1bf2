// Command flood opens connections to a Herald edge at a fixed rate, as a
// connect flood does, and reports how the edge answered each one:
// admitted (the stream opened: pode.open), refused (herald.refused for
// SSE, close 1013 for WebSocket, counted by reason) or failed (counted by
// error class). Admitted connections are held open until the flood ends,
// so that they fill the edge's connection limit. The e2e suite runs it in
// one or more processes (one process may hold at most about 20k open
// files); it prints one JSON Report on stdout.
//
//	flood -url http://127.0.0.1:8080 -rate 5000 -duration 5s -ws 0.3 \
//	      -sources 127.0.0.10,127.0.0.11
//
// Connections come from the given loopback source addresses in turn, so
// that tens of thousands of short connections do not exhaust the
// ephemeral ports of one address. Handshakes are written and read by hand
// (HTTP/1.1, RFC 6455 framing) so that a refusal costs one goroutine for
// its few milliseconds and an admitted connection none.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/herald-push/herald/internal/sseclient"
)

// Report is what one flood process saw.
type Report struct {
	Planned   int            `json:"planned"`   // attempts the rate asked for
	Attempted int            `json:"attempted"` // attempts started
	Skipped   int            `json:"skipped"`   // not started: -inflight handshakes were waiting
	Admitted  int            `json:"admitted"`
	Refused   map[string]int `json:"refused"` // by reason (the herald.refused reason or the close text)
	Errors    map[string]int `json:"errors"`  // by class
	HeldMax   int            `json:"heldMax"` // most admitted connections held at once
	Slowest   time.Duration  `json:"slowestNs"`
	Elapsed   time.Duration  `json:"elapsedNs"`
	Samples   []string       `json:"samples,omitempty"` // a few unexpected answers
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

type config struct {
	base     *url.URL
	name     string
	rate     float64
	duration time.Duration
	ws       float64
	sources  []net.IP
	inflight int
	timeout  time.Duration
	id       string
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	rawURL := fs.String("url", "", "the edge's base URL (http://host:port)")
	name := fs.String("name", "/flood", "connection name (SSE /sse/{name}, WebSocket /ws{name})")
	rate := fs.Float64("rate", 5000, "connection attempts per second")
	duration := fs.Duration("duration", 5*time.Second, "how long to flood")
	ws := fs.Float64("ws", 0.3, "share of WebSocket attempts (0 to 1)")
	sources := fs.String("sources", "", "comma-separated source addresses, used in turn (default: the system's choice)")
	inflight := fs.Int("inflight", 2000, "most handshakes waiting at once; attempts beyond are skipped")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on one handshake")
	id := fs.String("id", "f", "clientId prefix")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("-url %q: want http://host:port", *rawURL)
	}
	cfg := config{base: u, name: *name, rate: *rate, duration: *duration, ws: *ws, inflight: *inflight, timeout: *timeout, id: *id}
	for _, s := range strings.Split(*sources, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("-sources: %q is not an IP address", s)
		}
		cfg.sources = append(cfg.sources, ip)
	}
	if cfg.rate <= 0 || cfg.duration <= 0 || cfg.inflight <= 0 || cfg.ws < 0 || cfg.ws > 1 {
		return errors.New("-rate, -duration and -inflight must be positive, -ws in [0, 1]")
	}
	rep := flood(cfg)
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// tally collects outcomes from the attempts.
type tally struct {
	mu   sync.Mutex
	rep  Report
	held []net.Conn // guarded by mu
}

func (t *tally) outcome(o outcome, took time.Duration, c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rep.Slowest = max(t.rep.Slowest, took)
	switch {
	case o.admitted:
		t.rep.Admitted++
		t.held = append(t.held, c)
		t.rep.HeldMax = max(t.rep.HeldMax, len(t.held))
		return
	case o.refused != "":
		t.rep.Refused[o.refused]++
	default:
		t.rep.Errors[o.class]++
		if o.sample != "" && len(t.rep.Samples) < 8 {
			t.rep.Samples = append(t.rep.Samples, o.sample)
		}
	}
	if c != nil {
		_ = c.Close()
	}
}

// flood paces attempts at cfg.rate for cfg.duration, waits for the
// handshakes in flight, then closes every admitted connection.
func flood(cfg config) Report {
	t := &tally{rep: Report{Refused: map[string]int{}, Errors: map[string]int{}}}
	sem := make(chan struct{}, cfg.inflight)
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	launched := 0
	for now := range tick.C {
		elapsed := now.Sub(start)
		due := int(cfg.rate * min(elapsed, cfg.duration).Seconds())
		for ; launched < due; launched++ {
			select {
			case sem <- struct{}{}:
			default:
				t.mu.Lock()
				t.rep.Skipped++
				t.mu.Unlock()
				continue
			}
			t.mu.Lock()
			t.rep.Attempted++
			t.mu.Unlock()
			wg.Add(1)
			go func(i int) {
				defer func() { <-sem; wg.Done() }()
				began := time.Now()
				o, c := attempt(cfg, i)
				t.outcome(o, time.Since(began), c)
			}(launched)
		}
		if elapsed >= cfg.duration {
			break
		}
	}
	tick.Stop()
	wg.Wait()
	t.rep.Planned = launched
	t.rep.Elapsed = time.Since(start)
	for _, c := range t.held {
		_ = c.Close()
	}
	return t.rep
}

// outcome is how one attempt ended.
type outcome struct {
	admitted bool
	refused  string // the reason, when refused
	class    string // the error class, when it failed
	sample   string
}

func failed(class, format string, args ...any) outcome {
	return outcome{class: class, sample: fmt.Sprintf(format, args...)}
}

// attempt opens connection i (WebSocket for a cfg.ws share of them) and
// reads the edge's first answer. An admitted connection is returned open,
// its deadline cleared.
func attempt(cfg config, i int) (outcome, net.Conn) {
	d := net.Dialer{Timeout: cfg.timeout}
	if len(cfg.sources) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: cfg.sources[i%len(cfg.sources)]}
	}
	c, err := d.Dial("tcp", cfg.base.Host)
	if err != nil {
		return outcome{class: "dial_" + errClass(err)}, nil
	}
	_ = c.SetDeadline(time.Now().Add(cfg.timeout))
	id := fmt.Sprintf("%s%d", cfg.id, i)
	// Spread the WebSocket share evenly over the attempts.
	ws := int(float64(i+1)*cfg.ws) > int(float64(i)*cfg.ws)
	var o outcome
	if ws {
		o = handshakeWS(c, cfg, id)
	} else {
		o = handshakeSSE(c, cfg, id)
	}
	if o.admitted {
		_ = c.SetDeadline(time.Time{})
	}
	return o, c
}

// request writes a GET request for path with the extra header lines and
// reads the response head; it fails unless the status is want.
func request(c net.Conn, cfg config, path, header string, want int) (*bufio.Reader, *http.Response, *outcome) {
	req := "GET " + path + " HTTP/1.1\r\nHost: " + cfg.base.Host + "\r\n" + header + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, nil, &outcome{class: "write_" + errClass(err)}
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, &outcome{class: "head_" + errClass(err)}
	}
	if resp.StatusCode != want {
		o := failed(fmt.Sprintf("status_%d", resp.StatusCode), "%s: %d", path, resp.StatusCode)
		return nil, nil, &o
	}
	return br, resp, nil
}

func handshakeSSE(c net.Conn, cfg config, id string) outcome {
	path := "/sse/" + url.PathEscape(cfg.name) + "?clientId=" + url.QueryEscape(id)
	_, resp, fail := request(c, cfg, path, "Accept: text/event-stream\r\n", http.StatusOK)
	if fail != nil {
		return *fail
	}
	ev, err := sseclient.NewParser(resp.Body).Next()
	if err != nil {
		return outcome{class: "event_" + errClass(err)}
	}
	switch ev.Type {
	case "pode.open":
		return outcome{admitted: true}
	case "herald.refused":
		var r struct {
			Reason string `json:"reason"`
			Retry  int    `json:"retry"`
		}
		if json.Unmarshal([]byte(ev.Data), &r) != nil || r.Reason == "" || ev.Retry <= 0 {
			return failed("refused_uncoded", "herald.refused without a reason or retry: %q retry %d", ev.Data, ev.Retry)
		}
		return outcome{refused: r.Reason}
	}
	return failed("unexpected_event", "first SSE event %q %q", ev.Type, ev.Data)
}

func handshakeWS(c net.Conn, cfg config, id string) outcome {
	var key [16]byte
	_, _ = rand.Read(key[:])
	path := "/ws/" + strings.TrimPrefix(cfg.name, "/") + "?clientId=" + url.QueryEscape(id)
	br, _, fail := request(c, cfg, path, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Protocol: herald.v1\r\nSec-WebSocket-Key: "+base64.StdEncoding.EncodeToString(key[:])+"\r\n",
		http.StatusSwitchingProtocols)
	if fail != nil {
		return *fail
	}
	op, payload, err := readFrame(br)
	if err != nil {
		return outcome{class: "frame_" + errClass(err)}
	}
	switch op {
	case 0x1: // text: pode.open
		return outcome{admitted: true}
	case 0x8: // close
		if len(payload) < 2 {
			return failed("close_uncoded", "close frame without a code")
		}
		code := binary.BigEndian.Uint16(payload)
		if code != 1013 || len(payload) == 2 {
			return failed(fmt.Sprintf("close_%d", code), "close %d %q", code, payload[2:])
		}
		return outcome{refused: string(payload[2:])}
	}
	return failed("unexpected_frame", "first frame opcode %d", op)
}

// readFrame reads one unmasked server frame (RFC 6455 §5.2), up to 64 KiB.
func readFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [8]byte
	if _, err := io.ReadFull(br, h[:2]); err != nil {
		return 0, nil, err
	}
	op = h[0] & 0x0F
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		if _, err := io.ReadFull(br, h[:2]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(br, h[:8]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(h[:8])
	}
	if h[1]&0x80 != 0 || n > 64<<10 {
		return 0, nil, errors.New("masked or oversized server frame")
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(br, payload)
	return op, payload, err
}

// errClass names an error's kind for the report.
func errClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "no_file"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}
