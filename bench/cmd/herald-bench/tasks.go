package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker/tasks"
)

// The tasks scenario: async tasks through one edge (cmd/embedded with a
// task route whose limit is -subs, so every task runs at once).
//
//  1. Start -subs tasks with POST requests, 64 at a time: tasks started
//     per second through the edge (each start writes the task's record and
//     deadline and queues its work message, three JetStream writes).
//  2. Watch every task's stream with an SSE client (-subs streams).
//  3. A Go worker in this process runs all the tasks at once; in each of
//     -messages rounds, paced by -rate rounds per second, every task
//     reports a new progress value, each task at its own offset within
//     the round (a steady rate of -subs × -rate reports per second; -rate
//     0 sends each round as one burst). The latency of a progress event runs
//     from the worker's call (Progress.Set: the report to the edges, the
//     record's compare-and-set, the event's store in history, the
//     fan-out) to the frame read by the task's SSE client.
//  4. The tasks complete; every stream must end with pode.taskCompleted.

const taskBenchRoute = "/bench-task"

// TasksResult is the tasks scenario's report.
type TasksResult struct {
	Tasks          int     `json:"tasks"`
	StartSeconds   float64 `json:"start_seconds"`
	StartsPerSec   float64 `json:"starts_per_second"`
	StartP50MS     float64 `json:"start_p50_ms"`
	StartP99MS     float64 `json:"start_p99_ms"`
	StartFailures  int     `json:"start_failures"`
	Rounds         int     `json:"rounds"`
	ProgressSent   int     `json:"progress_sent"`
	ProgressSeen   int     `json:"progress_received"`
	ProgressP50MS  float64 `json:"progress_p50_ms"`
	ProgressP99MS  float64 `json:"progress_p99_ms"`
	ProgressMaxMS  float64 `json:"progress_max_ms"`
	ReportsPerSec  float64 `json:"progress_reports_per_second"`
	Completed      int     `json:"streams_completed"`
	WorkerFailures int     `json:"worker_report_failures"`
}

func (b *bench) tasksScenario(ctx context.Context, res *Result) error {
	n := b.cfg.Subs[0]
	s, err := b.startHerald(ctx, false, "", "", nil, "-task-routes",
		fmt.Sprintf("POST %s max=%d timeout=1h retention=10m", taskBenchRoute, n))
	if err != nil {
		return err
	}
	t := &target{label: "herald cmd/embedded (edge + NATS in one process), worker and clients in herald-bench",
		servers: []*load.Server{s}, edges: []*load.Server{s}}
	defer func() {
		if serr := t.stop(); serr != nil {
			b.logf("server stop: %v", serr)
		}
	}()
	res.Target = t.label
	tr := &TasksResult{Tasks: n, Rounds: min(b.cfg.Messages, 98)}
	res.Tasks = tr
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()

	// 1. Starts.
	type started struct{ id, url string }
	ids := make([]started, n)
	lat := make([]time.Duration, n)
	var failures atomic.Int32
	next := atomic.Int32{}
	t0 := time.Now()
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				s0 := time.Now()
				id, url, err := startBenchTask(ctx, hc, s.URL)
				lat[i] = time.Since(s0)
				if err != nil {
					failures.Add(1)
					b.vlogf("start: %v", err)
					continue
				}
				ids[i] = started{id, url}
			}
		}()
	}
	wg.Wait()
	tr.StartSeconds = time.Since(t0).Seconds()
	tr.StartFailures = int(failures.Load())
	tr.StartsPerSec = float64(n-tr.StartFailures) / tr.StartSeconds
	slices.Sort(lat)
	tr.StartP50MS, tr.StartP99MS = ms(lat[n/2]), ms(lat[n*99/100])
	b.logf("tasks: %d started in %.2fs (%.0f/s), %d failed", n, tr.StartSeconds, tr.StartsPerSec, tr.StartFailures)
	if tr.StartFailures > 0 {
		res.OK = false
	}

	// 2. Watchers.
	type seen struct {
		task  int
		value int
		at    time.Time
	}
	events := make(chan seen, 4096)
	var completed atomic.Int32
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	var watchers sync.WaitGroup
	opened := make(chan error, n)
	sc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	defer sc.CloseIdleConnections()
	for i, st := range ids {
		if st.id == "" {
			opened <- nil
			continue
		}
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			stream, err := sseclient.Dial(wctx, sc, s.URL+st.url, http.Header{"Accept": {"text/event-stream"}})
			opened <- err
			if err != nil {
				return
			}
			defer stream.Close()
			for {
				ev, err := stream.Next()
				if err != nil {
					return
				}
				switch ev.Type {
				case "pode.progress":
					var v int
					if json.Unmarshal([]byte(ev.Data), &v) == nil {
						events <- seen{i, v, time.Now()}
					}
				case "pode.taskCompleted":
					completed.Add(1)
				case "pode.close":
					return
				}
			}
		}()
	}
	for range n {
		if err := <-opened; err != nil {
			b.logf("tasks: a stream did not open: %v", err)
			res.OK = false
		}
	}
	b.logf("tasks: %d streams open", n)

	// 3. The worker: every task at once, rounds of progress.
	index := make(map[string]int, n)
	for i, st := range ids {
		index[st.id] = i
	}
	// sent[i*(Rounds+1)+r] is when the worker reported round r of task i
	// (unix nanoseconds): written by the worker, read by the collector.
	sent := make([]atomic.Int64, n*(tr.Rounds+1))
	at := func(i, r int) *atomic.Int64 { return &sent[i*(tr.Rounds+1)+r] }
	var running sync.WaitGroup
	running.Add(n - tr.StartFailures)
	rounds := make([]chan struct{}, tr.Rounds+1)
	for r := range rounds {
		rounds[r] = make(chan struct{})
	}
	var reportFailures atomic.Int32
	nc, err := nats.Connect(s.NATS)
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := tasks.NewWorker(nc, &tasks.WorkerOptions{Name: "herald-bench"})
	if err != nil {
		return err
	}
	defer w.Stop()
	spread := time.Duration(0)
	if b.cfg.Rate > 0 {
		spread = time.Duration(float64(time.Second) / b.cfg.Rate)
	}
	var seenTasks sync.Map
	if err := w.Handle("POST "+taskBenchRoute, n, func(ctx context.Context, task *tasks.Task) (any, error) {
		i, ok := index[task.ID]
		if _, dup := seenTasks.LoadOrStore(task.ID, true); !ok || dup {
			return nil, nil
		}
		running.Done()
		for r := 1; r <= tr.Rounds; r++ {
			select {
			case <-rounds[r]:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if spread > 0 { // each task at its own offset: a steady rate, not a burst per round
				sleep(ctx, time.Duration(i)*spread/time.Duration(n))
			}
			at(i, r).Store(time.Now().UnixNano())
			if err := task.Progress().Set(ctx, float64(r)); err != nil {
				reportFailures.Add(1)
			}
		}
		return nil, nil
	}); err != nil {
		return err
	}
	running.Wait()
	b.logf("tasks: all %d running on the worker", n)

	var got []time.Duration
	collect := make(chan struct{})
	go func() {
		defer close(collect)
		for ev := range events {
			if ev.value >= 1 && ev.value <= tr.Rounds {
				if t0 := at(ev.task, ev.value).Load(); t0 != 0 {
					got = append(got, ev.at.Sub(time.Unix(0, t0)))
				}
			}
		}
	}()
	r0 := time.Now()
	for r := 1; r <= tr.Rounds; r++ {
		close(rounds[r])
		sleep(ctx, spread)
	}
	natsWait := time.Now()
	watchers.Wait() // every stream ends with pode.close after its completion
	tr.ReportsPerSec = float64(n*tr.Rounds) / time.Since(r0).Seconds()
	close(events)
	<-collect
	b.vlogf("tasks: streams closed %v after the last round", time.Since(natsWait))
	tr.ProgressSent = n * tr.Rounds
	tr.ProgressSeen = len(got)
	tr.Completed = int(completed.Load())
	tr.WorkerFailures = int(reportFailures.Load())
	if len(got) > 0 {
		slices.Sort(got)
		tr.ProgressP50MS, tr.ProgressP99MS, tr.ProgressMaxMS = ms(got[len(got)/2]), ms(got[len(got)*99/100]), ms(got[len(got)-1])
	}
	if tr.ProgressSeen < tr.ProgressSent || tr.Completed != n-tr.StartFailures {
		res.OK = false
	}
	b.logf("tasks: progress p50 %.1f ms p99 %.1f ms, %d/%d events, %d streams completed",
		tr.ProgressP50MS, tr.ProgressP99MS, tr.ProgressSeen, tr.ProgressSent, tr.Completed)
	return t.crashed()
}

// startBenchTask starts one task and returns its id and stream URL.
func startBenchTask(ctx context.Context, hc *http.Client, base string) (string, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+taskBenchRoute, strings.NewReader(`{}`))
	resp, err := hc.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var info struct {
		ID  string `json:"Id"`
		Sse struct {
			URL string `json:"Url"`
		}
	}
	if err := json.Unmarshal(body, &info); err != nil || resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("%d %s", resp.StatusCode, body)
	}
	return info.ID, info.Sse.URL, nil
}

// printTasks prints the tasks scenario's table.
func printTasks(w io.Writer, tr *TasksResult) {
	fmt.Fprintln(w, "\ntasks\tstarted/s\tstart p50 ms\tp99 ms\tfailed\tprogress events\treceived\tp50 ms\tp99 ms\tmax ms\treports/s\tcompleted")
	fmt.Fprintf(w, "%d\t%.0f\t%.1f\t%.1f\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.0f\t%d\n", tr.Tasks, tr.StartsPerSec, tr.StartP50MS, tr.StartP99MS,
		tr.StartFailures, tr.ProgressSent, tr.ProgressSeen, tr.ProgressP50MS, tr.ProgressP99MS, tr.ProgressMaxMS, tr.ReportsPerSec, tr.Completed)
}
