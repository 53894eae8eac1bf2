package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// Result is the whole report of one herald-bench invocation; -json
// prints it as is.
type Result struct {
	Scenario string    `json:"scenario"`
	Date     time.Time `json:"date"`
	Command  []string  `json:"command"`
	Target   string    `json:"target"`
	Machine  Machine   `json:"machine"`
	// OK is true when every message run delivered everything, in order,
	// exactly once (the -check condition).
	OK bool `json:"ok"`

	Connect *ConnectResult `json:"connect,omitempty"`
	Idle    *IdleResult    `json:"idle,omitempty"`
	Runs    []*RunResult   `json:"runs,omitempty"`
	Sweeps  []*SweepResult `json:"sweeps,omitempty"`
	Storm   *StormResult   `json:"storm,omitempty"`
	Churn   *ConnectResult `json:"churn,omitempty"`
	Edges   []*EdgesResult `json:"multi_edge,omitempty"`

	ConnectAuth []*ConnectAuthResult `json:"connect_auth,omitempty"`
	Tasks       *TasksResult         `json:"tasks,omitempty"`
	Presence    []*PresenceResult    `json:"presence,omitempty"`
	WriteCosts  []*WriteCost         `json:"presence_write_costs,omitempty"`

	Notes []string `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go"`
	// BusyBefore is the fraction of all CPUs busy in the half second
	// before the run (other work on a shared machine).
	BusyBefore float64 `json:"busy_before"`
}

func machine() Machine {
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return Machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Kernel: strings.TrimSpace(string(k)), GoVersion: runtime.Version()}
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func summarize(s load.Snapshot) Latency {
	return Latency{
		Count: s.Count, P50: ms(s.Quantile(0.5)), P90: ms(s.Quantile(0.9)), P99: ms(s.Quantile(0.99)),
		P999: ms(s.Quantile(0.999)), Max: ms(time.Duration(s.MaxNS)), Mean: ms(s.Mean()),
	}
}

// ConnectResult is one round of connections.
type ConnectResult struct {
	Attempted  int            `json:"attempted"`
	Opened     int            `json:"opened"`
	Failed     int            `json:"failed"`
	Seconds    float64        `json:"seconds"` // first dial to last open stream
	PerSecond  float64        `json:"per_second"`
	Latency    Latency        `json:"latency"` // per connection, dial to open
	Errors     map[string]int `json:"errors,omitempty"`
	Processes  int            `json:"load_processes,omitempty"`
	Concurrent int            `json:"concurrency"` // per process; -1 all at once
	LoadCPU    float64        `json:"load_cpu_seconds,omitempty"`
}

func connectResult(r load.ConnectReport, processes, concurrency int) *ConnectResult {
	c := &ConnectResult{Attempted: r.Attempted, Opened: r.Opened, Failed: r.Failed, Seconds: r.Elapsed().Seconds(),
		Latency: summarize(r.Latency), Errors: r.Errors, Processes: processes, Concurrent: concurrency}
	if c.Seconds > 0 {
		c.PerSecond = float64(r.Opened) / c.Seconds
	}
	return c
}

// IdleResult is the idle scenario's memory figures.
type IdleResult struct {
	Connections      int     `json:"connections"`
	Transport        string  `json:"transport"`
	ServerRSSBefore  int64   `json:"server_rss_before_bytes"`
	ServerRSSAfter   int64   `json:"server_rss_after_bytes"`
	ServerRSSHeld    int64   `json:"server_rss_after_hold_bytes"`
	RSSPerConn       float64 `json:"server_rss_per_conn_bytes"`
	RSSPerConnHeld   float64 `json:"server_rss_per_conn_after_hold_bytes"`
	ServerFDs        int     `json:"server_fds"`
	ServerThreads    int     `json:"server_threads"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds_during_connect"`
	LoadRSSPerConn   float64 `json:"load_rss_per_conn_bytes"`
	LiveAfterHold    int     `json:"live_after_hold"`
	HoldSeconds      float64 `json:"hold_seconds"`
}

// RunResult is one message run.
type RunResult struct {
	Label       string  `json:"label"`
	Subscribers int     `json:"subscribers"`
	Messages    int     `json:"messages"`    // published
	Rate        float64 `json:"rate_msgs_s"` // offered, messages per second
	Offered     float64 `json:"offered_deliveries_s"`
	Targeted    bool    `json:"targeted,omitempty"`

	Expected     int64 `json:"expected"`
	Delivered    int64 `json:"delivered"`
	Duplicates   int64 `json:"duplicates"`
	OutOfOrder   int64 `json:"out_of_order"`
	Incomplete   int   `json:"incomplete_clients"`
	Stale        int64 `json:"stale"`
	Unparsed     int64 `json:"unparsed"`
	ServerClosed int   `json:"server_closed_clients"`
	Live         int   `json:"live_clients"`
	Gaps         int64 `json:"gap_events"`

	PublishSeconds float64 `json:"publish_seconds"`
	Seconds        float64 `json:"seconds"` // first publish to last delivery
	Achieved       float64 `json:"achieved_deliveries_s"`
	Latency        Latency `json:"latency"`
	PublishErr     string  `json:"publish_error,omitempty"`

	ServerCPU      float64 `json:"server_cpu_seconds"`
	ServerCPUPerM  float64 `json:"server_cpu_seconds_per_million_deliveries"`
	ServerCPUShare float64 `json:"server_cpu_cores"` // CPU seconds per wall second
	LoadCPU        float64 `json:"load_cpu_seconds"`
	ServerRSS      int64   `json:"server_rss_bytes"`
	// Machine is how busy the whole machine was during the run; softirq
	// time (loopback TCP processing) is charged to no process, so process
	// CPU figures understate the cost of a delivery.
	Machine         load.MachineLoad `json:"machine"`
	Reconnected     int              `json:"reconnected_before,omitempty"`
	Complete        bool             `json:"complete"` // everything, in order, once
	Pass            bool             `json:"pass"`     // sweep: complete and p99 within the bound
	latencySnapshot load.Snapshot
}

// SweepResult is a sweep at one subscriber count.
type SweepResult struct {
	Subscribers  int            `json:"subscribers"`
	SLOms        float64        `json:"slo_p99_ms"`
	Sustainable  float64        `json:"sustainable_deliveries_s"`  // highest passing offered rate
	FullDelivery float64        `json:"max_full_delivery_offered"` // highest complete offered rate, any latency
	BestAchieved float64        `json:"max_achieved_deliveries_s"` // highest achieved rate of a complete run
	Connect      *ConnectResult `json:"connect"`
	Steps        []*RunResult   `json:"steps"`
}

// StormResult is the storm scenario.
type StormResult struct {
	Connect   *ConnectResult `json:"connect"`
	Reconnect *ConnectResult `json:"resume_reconnect,omitempty"`
	Before    *RunResult     `json:"before,omitempty"`
	Resumed   *RunResult     `json:"resumed_run,omitempty"`
	LastIDs   int            `json:"clients_with_last_id,omitempty"`
	// Server CPU seconds while every client connected, and (without
	// -resume) while every client left at once until the server had
	// closed them all, which took DisconnectSeconds.
	ServerCPUConnect    float64 `json:"server_cpu_seconds_connect,omitempty"`
	ServerCPUDisconnect float64 `json:"server_cpu_seconds_disconnect,omitempty"`
	DisconnectSeconds   float64 `json:"disconnect_seconds,omitempty"`
}

// EdgesResult is one edge count of the multi-edge scenario.
type EdgesResult struct {
	Edges           int          `json:"edges"`
	Subscribers     int          `json:"subscribers"`
	CPUBudget       float64      `json:"edge_cpu_budget,omitempty"` // CPUs each edge was limited to (cgroup), 0: none
	Sweep           *SweepResult `json:"sweep"`
	EdgeCPUPerM     float64      `json:"edge_cpu_seconds_per_million_deliveries"`
	NATSCPUPerM     float64      `json:"nats_cpu_seconds_per_million_deliveries"`
	PerCoreCapacity float64      `json:"deliveries_per_edge_cpu_second"`
	Pinned          []string     `json:"edge_cpus,omitempty"`
}

func (b *bench) output(res *Result, stdout io.Writer) error {
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if b.cfg.JSONOut != "" {
		if err := os.WriteFile(b.cfg.JSONOut, append(js, '\n'), 0o644); err != nil {
			return err
		}
	}
	if b.cfg.PlotDir != "" {
		files, err := writePlots(res, b.cfg.PlotDir)
		if err != nil {
			return fmt.Errorf("plots: %w", err)
		}
		for _, f := range files {
			b.logf("plot: %s", f)
		}
	}
	if b.cfg.JSON {
		_, err := stdout.Write(append(js, '\n'))
		return err
	}
	printTable(res, stdout)
	return nil
}

func printTable(res *Result, w io.Writer) {
	fmt.Fprintf(w, "herald-bench %s — %s — %s — %d CPUs\n", res.Scenario, res.Target, res.Date.Format("2006-01-02 15:04 MST"), res.Machine.CPUs)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	if tr := res.Tasks; tr != nil {
		printTasks(tw, tr)
	}
	if c := res.Connect; c != nil {
		fmt.Fprintln(tw, "\nconnect\topened\tfailed\tseconds\tper second\tp50 ms\tp99 ms\tmax ms\terrors")
		printConnect(tw, "all", c)
	}
	if s := res.Storm; s != nil && s.Reconnect != nil {
		printConnect(tw, "resume storm", s.Reconnect)
	}
	if s := res.Storm; s != nil && s.ServerCPUConnect > 0 {
		fmt.Fprintf(tw, "server CPU: %.2f s for the connects; %.2f s for the disconnects (all closed in %.3f s)\n", s.ServerCPUConnect, s.ServerCPUDisconnect, s.DisconnectSeconds)
	}
	if c := res.Churn; c != nil {
		printConnect(tw, "churn", c)
	}
	if len(res.ConnectAuth) > 0 {
		printConnectAuth(tw, res.ConnectAuth)
	}
	if id := res.Idle; id != nil {
		fmt.Fprintln(tw, "\nidle\tconnections\tserver RSS before\tafter\tper conn\tafter hold\tper conn\tfds\tthreads\tload RSS/conn\tlive")
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\n", id.Transport, id.Connections,
			bytesH(float64(id.ServerRSSBefore)), bytesH(float64(id.ServerRSSAfter)), bytesH(id.RSSPerConn),
			bytesH(float64(id.ServerRSSHeld)), bytesH(id.RSSPerConnHeld), id.ServerFDs, id.ServerThreads,
			bytesH(id.LoadRSSPerConn), id.LiveAfterHold)
	}
	runs := res.Runs
	if s := res.Storm; s != nil {
		for _, r := range []*RunResult{s.Before, s.Resumed} {
			if r != nil {
				runs = append(runs, r)
			}
		}
	}
	if len(runs) > 0 {
		fmt.Fprintln(tw)
		runHeader(tw, "run")
		for _, r := range runs {
			runRow(tw, r.Label, r)
		}
	}
	for _, s := range res.Sweeps {
		printSweep(tw, s, fmt.Sprintf("sweep %d subs", s.Subscribers))
	}
	printPresence(tw, res)
	var one *EdgesResult
	for _, e := range res.Edges {
		title := fmt.Sprintf("%d edge(s)", e.Edges)
		if e.CPUBudget > 0 {
			title = fmt.Sprintf("%d edge(s), %.2g CPU each", e.Edges, e.CPUBudget)
		}
		printSweep(tw, e.Sweep, title)
		fmt.Fprintf(tw, "edge CPU per 1M deliveries: %.2f s; NATS: %.2f s; deliveries per edge CPU-second: %s\n",
			e.EdgeCPUPerM, e.NATSCPUPerM, rateH(e.PerCoreCapacity))
		if e.Edges == 1 {
			one = e
			continue
		}
		if one == nil {
			continue
		}
		how := "sharing this machine's CPUs"
		if e.CPUBudget > 0 {
			how = fmt.Sprintf("each with its own budget of %.2g CPU", e.CPUBudget)
		}
		fmt.Fprintf(tw, "scaling 1→%d edges, %s: %.2f× the sustainable rate, %.2f× the best achieved rate\n",
			e.Edges, how, ratio(e.Sweep.Sustainable, one.Sweep.Sustainable), ratio(e.Sweep.BestAchieved, one.Sweep.BestAchieved))
	}
	for _, n := range res.Notes {
		fmt.Fprintf(tw, "note: %s\n", n)
	}
	status := "OK: every run delivered everything, in order, exactly once"
	if !res.OK {
		status = "NOT OK: some run lost, duplicated or reordered messages (see the table)"
	}
	fmt.Fprintf(tw, "\n%s\n", status)
}

func printConnect(tw io.Writer, label string, c *ConnectResult) {
	errs := ""
	for k, v := range c.Errors {
		errs += fmt.Sprintf("%s×%d ", k, v)
	}
	fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%.3f\t%s\t%.1f\t%.1f\t%.1f\t%s\n", label, c.Opened, c.Attempted, c.Failed, c.Seconds,
		rateH(c.PerSecond), c.Latency.P50, c.Latency.P99, c.Latency.Max, errs)
}

func runHeader(tw io.Writer, first string) {
	fmt.Fprintf(tw, "%s\tsubs\tmsgs\toffered/s\tdelivered/expected\tdup\tooo\tachieved/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tserver CPU s\tcores\tmachine busy\tpass\n", first)
}

func runRow(tw io.Writer, label string, r *RunResult) {
	pass := "ok"
	if !r.Complete {
		pass = "LOSS"
		if r.Duplicates > 0 || r.OutOfOrder > 0 {
			pass = "ORDER"
		}
	} else if !r.Pass {
		pass = "slow"
	}
	fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d/%d\t%d\t%d\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.0f%%\t%s\n", label, r.Subscribers, r.Messages,
		rateH(r.Offered), r.Delivered, r.Expected, r.Duplicates, r.OutOfOrder, rateH(r.Achieved),
		r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max, r.ServerCPU, r.ServerCPUShare, 100*r.Machine.Busy, pass)
}

func printSweep(tw io.Writer, s *SweepResult, title string) {
	fmt.Fprintln(tw)
	if s.Connect != nil {
		fmt.Fprintln(tw, "connect\topened\tfailed\tseconds\tper second\tp50 ms\tp99 ms\tmax ms\terrors")
		printConnect(tw, title, s.Connect)
		fmt.Fprintln(tw)
	}
	runHeader(tw, title)
	for _, r := range s.Steps {
		runRow(tw, rateH(r.Offered), r)
	}
	fmt.Fprintf(tw, "sustainable (100%% delivered, in order, p99 ≤ %.0f ms): %s deliveries/s; highest complete offered rate: %s/s; best achieved: %s/s\n",
		s.SLOms, rateH(s.Sustainable), rateH(s.FullDelivery), rateH(s.BestAchieved))
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func rateH(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func bytesH(v float64) string {
	switch {
	case v >= 1<<30 || v <= -(1<<30):
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20 || v <= -(1<<20):
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10 || v <= -(1<<10):
		return fmt.Sprintf("%.2f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

func printPresence(tw io.Writer, res *Result) {
	if len(res.Presence) > 0 {
		fmt.Fprintln(tw, "\npresence\tedges\tready s\tlookup p50 ms\tp99 ms\tmiss p99 ms\tlist page p50 ms\tp99 ms\tlookups/s (16 in flight)\tKV get p50 ms\tp99 ms")
		for _, p := range res.Presence {
			fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\n", p.Connections, p.Edges, p.ReadySeconds,
				p.LookupHit.P50, p.LookupHit.P99, p.LookupMiss.P99, p.ListPage.P50, p.ListPage.P99, p.LookupsPerSec, p.KVGet.P50, p.KVGet.P99)
		}
		fmt.Fprintln(tw, "\nkill -9 of one edge\tits connections\tedge_lost events\tduplicates\tfirst ms\tlast ms\tlookup p50 while waiting\tp50 after\tanswers with its connections")
		for _, p := range res.Presence {
			if k := p.Kill; k != nil {
				fmt.Fprintf(tw, "%d connections\t%d\t%d\t%d\t%.0f\t%.0f\t%.1f\t%.2f\t%d\n", p.Connections, k.Connections, k.LostEvents,
					k.Duplicates, k.FirstMS, k.LastMS, k.LookupWaiting.P50, k.LookupAfter.P50, k.StaleAnswers)
			}
		}
	}
	if len(res.WriteCosts) > 0 {
		fmt.Fprintln(tw, "\nconnect+disconnect pairs\tpairs\tseconds\tNATS CPU µs/pair\tedges' CPU µs/pair")
		for _, w := range res.WriteCosts {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\n", w.Design, w.Pairs, w.Seconds, w.NATSMicros, w.ClientsMicros)
		}
	}
}
