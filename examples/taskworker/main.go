// Command taskworker is a Herald task worker serving the two async routes
// of Pode's example: POST /process-data ticks its progress from 0 to 100
// in steps of 5 and returns {"message":"Processing completed"}; GET
// /generate-report works for a while and returns {"report":"Report
// generation completed"}. Start the edge with those routes:
//
//	go run ./cmd/embedded -task-routes 'POST /process-data max=2 group=DataProcess, GET /generate-report max=3 result'
//	go run ./examples/taskworker -nats nats://127.0.0.1:4222
//
// -step shortens the simulated work (the seed sleeps 1 s per step). With
// -log it writes one JSON line per task start and end (worker, task,
// attempt, unix nanoseconds) to a file, which the end-to-end tests read to
// check the routes' concurrency limits.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker/tasks"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "taskworker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("taskworker", flag.ContinueOnError)
	url := fs.String("nats", nats.DefaultURL, "NATS server `URLs`, comma-separated")
	name := fs.String("name", "", "worker `name` in task records (default host-pid)")
	step := fs.Duration("step", time.Second, "simulated work per progress `step`")
	prefix := fs.String("subject-prefix", "herald", "Herald's subject `prefix`")
	logPath := fs.String("log", "", "append one JSON line per task start and end to this `file`")
	concurrency := fs.Int("concurrency", 2, "tasks of each route this worker runs at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nc, err := nats.Connect(*url, nats.Name("herald-taskworker"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := tasks.NewWorker(nc, &tasks.WorkerOptions{Prefix: *prefix, Name: *name})
	if err != nil {
		return err
	}
	jl, err := newJournal(*logPath, *name)
	if err != nil {
		return err
	}
	defer jl.close()

	processData := func(ctx context.Context, t *tasks.Task) (any, error) {
		defer jl.span(t)()
		p := t.Progress()
		if err := p.Range(ctx, 0, 100, 5); err != nil {
			return nil, err
		}
		for i := 0; i <= 100; i += 5 {
			if err := p.Tick(ctx); err != nil {
				return nil, err
			}
			if err := sleep(ctx, *step); err != nil {
				return nil, err
			}
		}
		return map[string]string{"message": "Processing completed"}, nil
	}
	generateReport := func(ctx context.Context, t *tasks.Task) (any, error) {
		defer jl.span(t)()
		if err := sleep(ctx, 10**step); err != nil {
			return nil, err
		}
		return map[string]string{"report": "Report generation completed"}, nil
	}
	if err := w.Handle("POST /process-data", *concurrency, processData); err != nil {
		return err
	}
	if err := w.Handle("GET /generate-report", *concurrency, generateReport); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "taskworker: serving POST /process-data and GET /generate-report on %s\n", nc.ConnectedUrlRedacted())
	<-ctx.Done()
	w.Stop()
	return nil
}

// sleep waits d or until ctx ends (the task was stopped or timed out).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// journal records task starts and ends, one JSON line each.
type journal struct {
	mu   sync.Mutex
	f    *os.File
	name string
}

func newJournal(path, name string) (*journal, error) {
	if path == "" {
		return &journal{}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &journal{f: f, name: name}, nil
}

func (j *journal) write(ev string, t *tasks.Task) {
	if j.f == nil {
		return
	}
	b, _ := json.Marshal(map[string]any{"ev": ev, "worker": j.name, "task": t.ID, "route": t.Route, "attempt": t.Attempt, "at": time.Now().UnixNano()})
	j.mu.Lock()
	defer j.mu.Unlock()
	_, _ = j.f.Write(append(b, '\n'))
	_ = j.f.Sync() // a kill -9 must not lose the start of a task
}

// span records the start of a task and returns the recording of its end.
func (j *journal) span(t *tasks.Task) func() {
	j.write("start", t)
	return func() { j.write("end", t) }
}

func (j *journal) close() {
	if j.f != nil {
		_ = j.f.Close()
	}
}
