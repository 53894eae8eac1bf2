package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/pkg/broker"
)

// An edge worker is a child process standing in for one Herald edge: one
// NATS connection, reference-counted subscriptions as an edge takes them,
// a registry of the clients it holds, and a reader that classifies every
// message it receives as the edge would (delivered to a held client,
// dropped, a broadcast, a connection notice). The coordinator drives it
// with one JSON request per line on stdin and reads one JSON response per
// line on stdout. Its CPU time is its own process's, so the edges' share
// of a measurement is not mixed with the publishers'.

// workerEnv marks a process started as an edge worker.
const workerEnv = "HERALD_SCALE_EDGE"

// IsWorker reports whether this process was started as an edge worker;
// main (or TestMain) then calls ServeWorker and exits.
func IsWorker() bool { return os.Getenv(workerEnv) == "1" }

// workerHello is the first line a worker reads.
type workerHello struct {
	NATS   string     `json:"nats"`
	Prefix string     `json:"prefix"`
	Pop    Population `json:"population"`
	Edge   string     `json:"edge"` // this edge's id in connection notices
}

// request is one command to a worker.
type request struct {
	Op      string      `json:"op"` // sub, unsub, counters, replay, quit
	Design  Design      `json:"design"`
	Clients Span        `json:"clients"`
	Notices bool        `json:"notices,omitempty"` // sub: announce each connection, as register does
	Replay  *replayJob  `json:"replay,omitempty"`
	Pace    *paceConfig `json:"pace,omitempty"` // sub/unsub: spread the operations in time
}

// paceConfig spreads a worker's operations: Rate per second at most.
type paceConfig struct {
	Rate float64 `json:"rate"`
}

// response is a worker's answer.
type response struct {
	Err      string        `json:"err,omitempty"`
	Subs     int           `json:"subs"` // subjects the Interest holds
	Held     int           `json:"held"` // clients held
	Counters Counters      `json:"counters"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Replay   *ReplayResult `json:"replay,omitempty"`
}

// Counters are what an edge worker received, by what the edge would do
// with it.
type Counters struct {
	Received  uint64 `json:"received"`
	Delivered uint64 `json:"delivered"` // an event for a client it holds
	Dropped   uint64 `json:"dropped"`   // an event for a client it does not hold
	Broadcast uint64 `json:"broadcast"` // an event to a name or group
	Notices   uint64 `json:"notices"`   // a connection's replace notice
	Replaced  uint64 `json:"replaced"`  // a notice for a client the edge still held
	Bad       uint64 `json:"bad"`       // not a Herald subject
	// Slow is nats.go's slow-consumer count: the reader fell behind and
	// messages were lost. Every figure from a run where it is not zero is
	// suspect, and the report says so.
	Slow uint64 `json:"slow"`
	// SubOps is the SUB and UNSUB operations the edge sent: subjects
	// whose reference count left or reached zero.
	SubOps uint64 `json:"sub_ops"`
	// Reconnects counts the NATS connection's reconnects (nats.go then
	// sends every subscription again).
	Reconnects uint64 `json:"reconnects"`
}

func (c *Counters) fields() []*uint64 {
	return []*uint64{&c.Received, &c.Delivered, &c.Dropped, &c.Broadcast, &c.Notices, &c.Replaced, &c.Bad, &c.Slow, &c.SubOps, &c.Reconnects}
}

// combine applies op to every field of c and o.
func (c Counters) combine(o Counters, op func(a, b uint64) uint64) Counters {
	out := c
	of, cf := out.fields(), o.fields()
	for i := range of {
		*of[i] = op(*of[i], *cf[i])
	}
	return out
}

// Sub returns c minus an earlier reading.
func (c Counters) Sub(o Counters) Counters {
	return c.combine(o, func(a, b uint64) uint64 { return a - b })
}

// Add returns c plus o.
func (c Counters) Add(o Counters) Counters {
	return c.combine(o, func(a, b uint64) uint64 { return a + b })
}

// edgeWorker is the worker's state.
type edgeWorker struct {
	hello    workerHello
	nc       *nats.Conn
	subj     broker.Subjects
	live     broker.Subjects
	interest *interest
	ch       chan *nats.Msg

	mu   sync.RWMutex
	held map[string]struct{} // clientIds held; guarded by mu

	// Owned by the reader; read atomically by requests.
	received, delivered, dropped, broadcast, notices, replaced, bad, slow, reconnects atomic.Uint64

	// Owned by the request loop.
	subOps       uint64
	serial       uint64
	hist         *broker.History // opened by the first replay
	histReplicas int
}

// ServeWorker runs an edge worker: a hello line, then requests until
// "quit" or the end of in.
func ServeWorker(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	var hello workerHello
	if err := dec.Decode(&hello); err != nil {
		return fmt.Errorf("scale worker: hello: %w", err)
	}
	subj, err := broker.NewSubjects(hello.Prefix)
	if err != nil {
		return err
	}
	w := &edgeWorker{hello: hello, subj: subj, live: subj.Live(), held: map[string]struct{}{},
		ch: make(chan *nats.Msg, 1<<18)}
	w.nc, err = nats.Connect(hello.NATS, nats.Name("herald-scale-"+hello.Edge), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				w.slow.Add(1)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { w.reconnects.Add(1) }))
	if err != nil {
		return fmt.Errorf("scale worker: connect: %w", err)
	}
	defer w.nc.Close()
	w.interest = newInterest(w.nc, w.ch)
	readerDone := make(chan struct{})
	go w.read(readerDone)
	defer func() {
		w.interest.Close()
		close(w.ch)
		<-readerDone
	}()
	if err := enc.Encode(response{}); err != nil { // ready
		return err
	}
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if req.Op == "quit" {
			return enc.Encode(response{})
		}
		start := time.Now()
		resp, err := w.handle(req)
		resp.Elapsed = time.Since(start)
		if err != nil {
			resp.Err = err.Error()
		}
		resp.Subs = w.interest.Len()
		w.mu.RLock()
		resp.Held = len(w.held)
		w.mu.RUnlock()
		resp.Counters = w.counters()
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
}

func (w *edgeWorker) counters() Counters {
	return Counters{Received: w.received.Load(), Delivered: w.delivered.Load(), Dropped: w.dropped.Load(),
		Broadcast: w.broadcast.Load(), Notices: w.notices.Load(), Replaced: w.replaced.Load(), Bad: w.bad.Load(), Slow: w.slow.Load(),
		SubOps: w.subOps, Reconnects: w.reconnects.Load()}
}

func (w *edgeWorker) handle(req request) (response, error) {
	switch req.Op {
	case "sub":
		return response{}, w.register(req)
	case "unsub":
		return response{}, w.unregister(req)
	case "counters":
		return response{}, nil
	case "replay":
		if req.Replay == nil {
			return response{}, errors.New("replay: no job")
		}
		r, err := w.replay(*req.Replay)
		return response{Replay: r}, err
	}
	return response{}, fmt.Errorf("unknown op %q", req.Op)
}

// pacer spaces operations to a rate; nil paces nothing.
type pacer struct {
	start time.Time
	every time.Duration
	n     int
}

func newPacer(p *paceConfig) *pacer {
	if p == nil || p.Rate <= 0 {
		return nil
	}
	return &pacer{start: time.Now(), every: time.Duration(float64(time.Second) / p.Rate)}
}

func (p *pacer) wait() {
	if p == nil {
		return
	}
	p.n++
	if d := time.Until(p.start.Add(time.Duration(p.n) * p.every)); d > time.Millisecond {
		time.Sleep(d)
	}
}

// register does, for every client of the span, what pkg/edge's register
// does for a new connection: acquire its subjects and, when asked,
// announce it on its connection-notice subject. Then it waits until the
// server has processed everything (a PING round trip).
func (w *edgeWorker) register(req request) error {
	pace := newPacer(req.Pace)
	var err error
	req.Clients.Each(func(i int) {
		if err != nil {
			return
		}
		pace.wait()
		subjects := req.Design.Subjects(w.subj, w.hello.Pop, i)
		for k, s := range subjects {
			if w.interest.Refs(s) == 0 {
				w.subOps++
			}
			if err = w.interest.Acquire(s); err != nil {
				for _, done := range subjects[:k] {
					w.interest.Release(done)
				}
				return
			}
		}
		id := w.hello.Pop.ID(i)
		w.mu.Lock()
		w.held[id] = struct{}{}
		w.mu.Unlock()
		if req.Notices {
			m := broker.NewCloseMsg(w.subj.SysConn(w.hello.Pop.Name, id))
			m.Header.Set(broker.HeaderControl, "replace")
			w.serial++
			m.Header.Set("Herald-Conn", w.hello.Edge+"-"+strconv.FormatUint(w.serial, 10))
			m.Header.Set("Herald-Since", strconv.FormatInt(time.Now().UnixNano(), 10))
			err = w.nc.PublishMsg(m)
		}
	})
	if err != nil {
		return err
	}
	return w.nc.FlushTimeout(2 * time.Minute)
}

// unregister releases the span's clients, as pkg/edge's unregister does.
func (w *edgeWorker) unregister(req request) error {
	pace := newPacer(req.Pace)
	req.Clients.Each(func(i int) {
		pace.wait()
		for _, s := range req.Design.Subjects(w.subj, w.hello.Pop, i) {
			if w.interest.Refs(s) == 1 {
				w.subOps++
			}
			w.interest.Release(s)
		}
		w.mu.Lock()
		delete(w.held, w.hello.Pop.ID(i))
		w.mu.Unlock()
	})
	return w.nc.FlushTimeout(2 * time.Minute)
}

// read classifies every message as the edge's dispatcher would: parse the
// event's address (the stored subject from the republish header, else
// the live subject), look the client up, count.
func (w *edgeWorker) read(done chan<- struct{}) {
	defer close(done)
	for m := range w.ch {
		w.received.Add(1)
		if w.subj.IsSysConn(m.Subject) {
			name, id, err := w.subj.ParseSysConn(m.Subject)
			if err != nil || name != w.hello.Pop.Name || broker.HeaderValue(m.Header, broker.HeaderControl) != "replace" {
				w.bad.Add(1)
				continue
			}
			w.mu.RLock()
			_, held := w.held[id]
			w.mu.RUnlock()
			w.notices.Add(1)
			if held {
				w.replaced.Add(1) // the edge would close its older connection
			}
			continue
		}
		var a broker.Address
		var err error
		if ev := broker.HeaderValue(m.Header, "Nats-Subject"); ev != "" {
			a, err = w.subj.ParseEvent(ev)
		} else {
			a, err = w.live.ParseEvent(m.Subject)
		}
		switch {
		case err != nil:
			w.bad.Add(1)
		case a.ClientID == "":
			w.broadcast.Add(1)
		default:
			w.mu.RLock()
			_, ok := w.held[a.ClientID]
			w.mu.RUnlock()
			if ok {
				w.delivered.Add(1)
			} else {
				w.dropped.Add(1)
			}
		}
	}
}

// edgeProc is the coordinator's handle on a worker process.
type edgeProc struct {
	Name string
	cmd  *exec.Cmd
	enc  *json.Encoder
	dec  *json.Decoder
	in   io.WriteCloser
	done chan struct{}
	log  string
	mu   sync.Mutex // one request at a time
}

// startEdge starts a worker connected to natsURL and waits until it is
// connected.
func startEdge(ctx context.Context, dir, name, natsURL, prefix string, pop Population) (*edgeProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(exe, "scale")
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("scale: start edge worker: %w", err)
	}
	e := &edgeProc{Name: name, cmd: cmd, enc: json.NewEncoder(in), dec: json.NewDecoder(bufio.NewReader(out)),
		in: in, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		close(e.done)
	}()
	if err := e.enc.Encode(workerHello{NATS: natsURL, Prefix: prefix, Pop: pop, Edge: name}); err != nil {
		e.kill()
		return nil, err
	}
	var ready response
	if err := e.recv(ctx, &ready); err != nil {
		e.kill()
		return nil, err
	}
	return e, nil
}

func (e *edgeProc) pid() int { return e.cmd.Process.Pid }

// recv reads one response, giving up when ctx ends (the worker is then
// killed: a request cannot be abandoned half-way).
func (e *edgeProc) recv(ctx context.Context, r *response) error {
	errc := make(chan error, 1)
	go func() { errc <- e.dec.Decode(r) }()
	select {
	case err := <-errc:
		if err != nil {
			b, _ := os.ReadFile(e.log)
			return fmt.Errorf("scale: edge worker %s: %v\n%s", e.Name, err, tailBytes(b, 2000))
		}
		if r.Err != "" {
			return fmt.Errorf("scale: edge worker %s: %s", e.Name, r.Err)
		}
		return nil
	case <-ctx.Done():
		e.kill()
		<-errc
		return ctx.Err()
	}
}

// do sends one request and returns the response.
func (e *edgeProc) do(ctx context.Context, req request) (response, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enc.Encode(req); err != nil {
		return response{}, fmt.Errorf("scale: edge worker %s: %w", e.Name, err)
	}
	var r response
	err := e.recv(ctx, &r)
	return r, err
}

// usage is the worker's CPU time so far.
func (e *edgeProc) usage() time.Duration {
	u, err := load.ReadUsage(e.pid())
	if err != nil {
		return 0
	}
	return u.CPU
}

// close asks the worker to quit and waits; it is killed if it does not.
func (e *edgeProc) close() {
	e.mu.Lock()
	_ = e.enc.Encode(request{Op: "quit"})
	e.in.Close()
	e.mu.Unlock()
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		e.kill()
	}
}

func (e *edgeProc) kill() {
	_ = e.cmd.Process.Kill()
	<-e.done
}

func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
