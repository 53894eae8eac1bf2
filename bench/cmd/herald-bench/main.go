// Command herald-bench is Herald's load suite: it builds and starts Herald
// (or attaches to any SSE server), holds thousands of subscribers,
// publishes sequenced, timestamped messages and reports delivery,
// ordering, latency, throughput, connect times and the server's memory and
// CPU. See bench/README.md for every scenario. From bench/, a module of
// its own:
//
//	go run ./cmd/herald-bench -scenario fanout -subs 10000 -rate 1 -messages 30
//	go run ./cmd/herald-bench -scenario sweep -subs 1000 -plot out/
//
// Every run is bounded by -timeout and stops by itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"syscall"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/bench/scale"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "scale" { // bench/scale: the cluster scale model
		os.Exit(scale.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	switch {
	case os.Getenv(load.WorkerEnv) == "1":
		if err := load.ServeWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "herald-bench worker:", err)
			os.Exit(1)
		}
		return
	case os.Getenv(presenceEdgeEnv) != "":
		if err := servePresenceEdge(); err != nil {
			fmt.Fprintln(os.Stderr, "herald-bench presence edge:", err)
			os.Exit(1)
		}
		return
	case os.Getenv(serveEnv) != "":
		if err := serveProfiled(); err != nil {
			fmt.Fprintln(os.Stderr, "herald-bench serve:", err)
			os.Exit(1)
		}
		return
	}
	// The load side trades memory for fewer collections: its pauses
	// would show up as latency.
	debug.SetGCPercent(400)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errTargetsMissed):
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "herald-bench:", err)
		os.Exit(1)
	}
}

// errTargetsMissed is returned when -check is on and a run did not
// deliver everything, in order, exactly once.
var errTargetsMissed = errors.New("delivery check failed")

// run parses args, runs the scenario and writes the report to stdout
// (progress goes to stderr).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := load.RaiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, "warning: could not raise the open-file limit:", err)
	}
	if cfg.SelfCPU != "" {
		f, err := os.Create(cfg.SelfCPU)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	b := &bench{cfg: cfg, log: &syncWriter{w: stderr}}
	res, err := b.run(ctx)
	if res != nil {
		if werr := b.output(res, stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if err == nil && cfg.Check && res != nil && !res.OK {
		err = errTargetsMissed
	}
	return err
}

// syncWriter serialises writes: progress lines come from several goroutines
// and worker processes.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
