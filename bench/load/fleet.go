package load

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// WorkerEnv is the environment variable that turns a herald-bench process
// (or a test binary) into a worker serving one Part over stdin/stdout.
const WorkerEnv = "HERALD_BENCH_WORKER"

// DefaultPerProcess is the most clients one process holds: one process
// may keep about 20k files open here, and a few are needed besides sockets.
const DefaultPerProcess = 18000

// Part is a share of a fleet's clients: a Pool in this process or one in
// a worker process.
type Part interface {
	Size() int
	Connect(ctx context.Context, concurrency int, resume bool) (ConnectReport, error)
	Begin(ctx context.Context, step, expect int64) error
	Delivered(ctx context.Context) (int64, error)
	Report(ctx context.Context) (PhaseReport, error)
	Drop(ctx context.Context) error
	Churn(ctx context.Context, rate float64, d time.Duration) (ConnectReport, error)
	Usage(ctx context.Context) (Usage, error)
	Close() error
}

// localPart is a Pool in this process.
type localPart struct{ p *Pool }

var _ Part = localPart{}

func (l localPart) Size() int { return l.p.Size() }
func (l localPart) Connect(ctx context.Context, concurrency int, resume bool) (ConnectReport, error) {
	return l.p.Connect(ctx, concurrency, resume), nil
}
func (l localPart) Begin(_ context.Context, step, expect int64) error {
	l.p.Begin(step, expect)
	return nil
}
func (l localPart) Delivered(context.Context) (int64, error)    { return l.p.Delivered(), nil }
func (l localPart) Report(context.Context) (PhaseReport, error) { return l.p.Report(), nil }
func (l localPart) Drop(context.Context) error                  { l.p.Drop(); return nil }
func (l localPart) Usage(context.Context) (Usage, error)        { return ReadUsage(0) }
func (l localPart) Churn(ctx context.Context, rate float64, d time.Duration) (ConnectReport, error) {
	return l.p.Churn(ctx, rate, d), nil
}
func (l localPart) Close() error { l.p.Close(); return nil }

// FleetConfig configures a Fleet.
type FleetConfig struct {
	// Pool describes all clients; Pool.N is the fleet's size.
	Pool PoolConfig
	// PerProcess is the most clients per process. Default
	// DefaultPerProcess. Larger fleets run in worker processes.
	PerProcess int
	// Worker is the command line of a worker process. Default: this
	// executable, with WorkerEnv=1 in its environment.
	Worker []string
	// Stderr receives the workers' error output. Default os.Stderr.
	Stderr io.Writer
}

// Fleet is every client of a run, spread over parts.
type Fleet struct {
	parts []Part
	n     int
}

// NewFleet builds the parts: one local Pool when the fleet fits in one
// process, otherwise worker processes of PerProcess clients each. When the
// fleet is larger than one source address can serve and the server is on
// loopback, clients are spread over 127.0.0.1, 127.0.0.2, ...
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	if cfg.PerProcess <= 0 {
		cfg.PerProcess = DefaultPerProcess
	}
	pc := cfg.Pool
	if pc.PerSource <= 0 {
		pc.PerSource = 25000
	}
	if len(pc.SourceIPs) == 0 && pc.N > pc.PerSource && loopbackURL(pc.Endpoint.URL) {
		for i := range (pc.N + pc.PerSource - 1) / pc.PerSource {
			pc.SourceIPs = append(pc.SourceIPs, net.IPv4(127, 0, 0, byte(1+i)))
		}
	}
	f := &Fleet{n: pc.N}
	if pc.N <= cfg.PerProcess {
		f.parts = []Part{localPart{NewPool(pc)}}
		return f, nil
	}
	for first := pc.First; first < pc.First+pc.N; first += cfg.PerProcess {
		sub := pc
		sub.First, sub.N = first, min(cfg.PerProcess, pc.First+pc.N-first)
		w, err := startWorker(cfg, sub)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.parts = append(f.parts, w)
	}
	return f, nil
}

func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return u.Hostname() == "localhost" || (ip != nil && ip.IsLoopback())
}

// Size returns the number of clients.
func (f *Fleet) Size() int { return f.n }

// Processes returns how many processes hold clients.
func (f *Fleet) Processes() int { return len(f.parts) }

// each runs fn on every part at once and joins the errors.
func (f *Fleet) each(fn func(i int, p Part) error) error {
	errs := make([]error, len(f.parts))
	var wg sync.WaitGroup
	for i, p := range f.parts {
		wg.Go(func() { errs[i] = fn(i, p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Connect opens every client that is not live; concurrency is per process.
func (f *Fleet) Connect(ctx context.Context, concurrency int, resume bool) (ConnectReport, error) {
	reps := make([]ConnectReport, len(f.parts))
	err := f.each(func(i int, p Part) (err error) {
		reps[i], err = p.Connect(ctx, concurrency, resume)
		return err
	})
	var out ConnectReport
	for _, r := range reps {
		out = out.Merge(r)
	}
	return out, err
}

// Begin starts accounting for a message run on every part.
func (f *Fleet) Begin(ctx context.Context, step, expect int64) error {
	return f.each(func(_ int, p Part) error { return p.Begin(ctx, step, expect) })
}

// Delivered returns the deliveries accepted since Begin.
func (f *Fleet) Delivered(ctx context.Context) (int64, error) {
	ns := make([]int64, len(f.parts))
	err := f.each(func(i int, p Part) (err error) {
		ns[i], err = p.Delivered(ctx)
		return err
	})
	var t int64
	for _, n := range ns {
		t += n
	}
	return t, err
}

// Report returns the merged accounting of the current run.
func (f *Fleet) Report(ctx context.Context) (PhaseReport, error) {
	reps := make([]PhaseReport, len(f.parts))
	err := f.each(func(i int, p Part) (err error) {
		reps[i], err = p.Report(ctx)
		return err
	})
	var out PhaseReport
	for _, r := range reps {
		out = out.Merge(r)
	}
	return out, err
}

// Drop closes every stream from the client side.
func (f *Fleet) Drop(ctx context.Context) error {
	return f.each(func(_ int, p Part) error { return p.Drop(ctx) })
}

// Churn closes and reopens clients for d at rate per second in total.
func (f *Fleet) Churn(ctx context.Context, rate float64, d time.Duration) (ConnectReport, error) {
	reps := make([]ConnectReport, len(f.parts))
	err := f.each(func(i int, p Part) (err error) {
		reps[i], err = p.Churn(ctx, rate*float64(p.Size())/float64(f.n), d)
		return err
	})
	var out ConnectReport
	for _, r := range reps {
		out = out.Merge(r)
	}
	return out, err
}

// Usage returns the summed resource use of the processes holding clients.
func (f *Fleet) Usage(ctx context.Context) (Usage, error) {
	us := make([]Usage, len(f.parts))
	err := f.each(func(i int, p Part) (err error) {
		us[i], err = p.Usage(ctx)
		return err
	})
	var t Usage
	for _, u := range us {
		t.RSS += u.RSS
		t.CPU += u.CPU
		t.Threads += u.Threads
		t.FDs += u.FDs
	}
	return t, err
}

// Close closes every client and stops the workers.
func (f *Fleet) Close() error {
	return f.each(func(_ int, p Part) error { return p.Close() })
}

// The worker protocol: one JSON request per line on the worker's stdin,
// one JSON response per line on its stdout.
type workerRequest struct {
	Op          string      `json:"op"`
	Pool        *PoolConfig `json:"pool,omitempty"`
	Concurrency int         `json:"concurrency,omitempty"`
	Resume      bool        `json:"resume,omitempty"`
	Step        int64       `json:"step,omitempty"`
	Expect      int64       `json:"expect,omitempty"`
	Rate        float64     `json:"rate,omitempty"`
	Duration    int64       `json:"duration_ns,omitempty"`
	Timeout     int64       `json:"timeout_ns,omitempty"`
}

type workerResponse struct {
	Err       string         `json:"err,omitempty"`
	Connect   *ConnectReport `json:"connect,omitempty"`
	Report    *PhaseReport   `json:"report,omitempty"`
	Delivered int64          `json:"delivered,omitempty"`
	Usage     *Usage         `json:"usage,omitempty"`
}

// ServeWorker serves one Part over in and out until "close" or the end of
// in. A worker raises its file limit first.
func ServeWorker(in io.Reader, out io.Writer) error {
	if _, err := RaiseFileLimit(); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	var pool *Pool
	defer func() {
		if pool != nil {
			pool.Close()
		}
	}()
	for {
		var req workerRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var resp workerResponse
		if pool == nil && req.Op != "init" && req.Op != "close" {
			resp.Err = "load: worker not initialised"
		} else {
			switch req.Op {
			case "init":
				pool = NewPool(*req.Pool)
			case "connect":
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.Timeout))
				rep := pool.Connect(ctx, req.Concurrency, req.Resume)
				cancel()
				resp.Connect = &rep
			case "begin":
				pool.Begin(req.Step, req.Expect)
			case "delivered":
				resp.Delivered = pool.Delivered()
			case "report":
				rep := pool.Report()
				resp.Report = &rep
			case "drop":
				pool.Drop()
			case "churn":
				rep := pool.Churn(context.Background(), req.Rate, time.Duration(req.Duration))
				resp.Connect = &rep
			case "usage":
				u, err := ReadUsage(0)
				if err != nil {
					resp.Err = err.Error()
				}
				resp.Usage = &u
			case "close":
				return enc.Encode(resp)
			default:
				resp.Err = "load: unknown worker op " + req.Op
			}
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
}

// remotePart is a worker process.
type remotePart struct {
	n    int
	cmd  *exec.Cmd
	in   io.WriteCloser
	enc  *json.Encoder
	dec  *json.Decoder
	mu   sync.Mutex
	dead chan struct{}
}

func startWorker(cfg FleetConfig, pc PoolConfig) (*remotePart, error) {
	argv := cfg.Worker
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		argv = []string{exe}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), WorkerEnv+"=1")
	cmd.Stderr = cfg.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
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
		return nil, fmt.Errorf("load: start worker: %w", err)
	}
	w := &remotePart{n: pc.N, cmd: cmd, in: in, enc: json.NewEncoder(in), dec: json.NewDecoder(bufio.NewReader(out)), dead: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(w.dead)
	}()
	if _, err := w.call(context.Background(), workerRequest{Op: "init", Pool: &pc}); err != nil {
		_ = w.Close()
		return nil, err
	}
	return w, nil
}

// call sends one request and waits for its answer. When ctx ends first
// the worker is killed: its state is unknown.
func (w *remotePart) call(ctx context.Context, req workerRequest) (workerResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		req.Timeout = int64(time.Until(dl))
	} else {
		req.Timeout = int64(time.Hour)
	}
	type result struct {
		resp workerResponse
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		if r.err = w.enc.Encode(req); r.err == nil {
			r.err = w.dec.Decode(&r.resp)
		}
		ch <- r
	}()
	grace := time.NewTimer(time.Duration(req.Timeout) + 10*time.Second)
	defer grace.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return r.resp, fmt.Errorf("load: worker %s: %w", req.Op, r.err)
		}
		if r.resp.Err != "" {
			return r.resp, errors.New(r.resp.Err)
		}
		return r.resp, nil
	case <-grace.C:
		_ = w.cmd.Process.Kill()
		return workerResponse{}, fmt.Errorf("load: worker %s did not answer in time; killed", req.Op)
	}
}

func (w *remotePart) Size() int { return w.n }

func (w *remotePart) Connect(ctx context.Context, concurrency int, resume bool) (ConnectReport, error) {
	r, err := w.call(ctx, workerRequest{Op: "connect", Concurrency: concurrency, Resume: resume})
	if r.Connect == nil {
		return ConnectReport{}, err
	}
	return *r.Connect, err
}

func (w *remotePart) Begin(ctx context.Context, step, expect int64) error {
	_, err := w.call(ctx, workerRequest{Op: "begin", Step: step, Expect: expect})
	return err
}

func (w *remotePart) Delivered(ctx context.Context) (int64, error) {
	r, err := w.call(ctx, workerRequest{Op: "delivered"})
	return r.Delivered, err
}

func (w *remotePart) Report(ctx context.Context) (PhaseReport, error) {
	r, err := w.call(ctx, workerRequest{Op: "report"})
	if r.Report == nil {
		return PhaseReport{}, err
	}
	return *r.Report, err
}

func (w *remotePart) Drop(ctx context.Context) error {
	_, err := w.call(ctx, workerRequest{Op: "drop"})
	return err
}

func (w *remotePart) Churn(ctx context.Context, rate float64, d time.Duration) (ConnectReport, error) {
	r, err := w.call(ctx, workerRequest{Op: "churn", Rate: rate, Duration: int64(d)})
	if r.Connect == nil {
		return ConnectReport{}, err
	}
	return *r.Connect, err
}

func (w *remotePart) Usage(ctx context.Context) (Usage, error) {
	r, err := w.call(ctx, workerRequest{Op: "usage"})
	if r.Usage == nil {
		return Usage{}, err
	}
	return *r.Usage, err
}

func (w *remotePart) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := w.call(ctx, workerRequest{Op: "close"})
	_ = w.in.Close()
	select {
	case <-w.dead:
	case <-time.After(10 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.dead
	}
	return err
}
