package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// The smoke tests run every scenario at a tiny size against real Herald
// processes and check the report: everything delivered, once, in order,
// and JSON that parses. CI runs them; the full sizes are in README.md.

var embeddedBin, edgeBin string

func TestMain(m *testing.M) {
	if os.Getenv(load.WorkerEnv) == "1" { // fleets re-execute this binary as workers
		if err := load.ServeWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(presenceEdgeEnv) != "" { // the presence scenario's simulated edges
		if err := servePresenceEdge(); err != nil {
			fmt.Fprintln(os.Stderr, "presence edge:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "herald-bench-smoke-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := load.FindModuleRoot(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	embeddedBin, edgeBin = filepath.Join(dir, "embedded"), filepath.Join(dir, "edge")
	for pkg, out := range map[string]string{"./cmd/embedded": embeddedBin, "./cmd/edge": edgeBin} {
		if err := load.Build(ctx, root, pkg, out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// bench runs herald-bench with args (plus the prebuilt binaries, -json and
// -check) and returns the parsed report.
func benchRun(t *testing.T, args ...string) *Result {
	t.Helper()
	args = append([]string{"-binary", embeddedBin, "-edge-binary", edgeBin, "-json", "-check", "-timeout", "50s", "-drain", "3s"}, args...)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	if err != nil {
		t.Fatalf("herald-bench %s: %v\nstderr:\n%s\nstdout:\n%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	if !res.OK {
		t.Fatalf("report not OK:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	return &res
}

// checkRuns asserts that every run delivered everything, once, in order.
func checkRuns(t *testing.T, runs ...*RunResult) {
	t.Helper()
	if len(runs) == 0 {
		t.Fatal("no message run in the report")
	}
	for _, r := range runs {
		if r == nil {
			t.Fatal("missing run")
		}
		if r.Delivered != r.Expected || r.Expected == 0 || r.Duplicates != 0 || r.OutOfOrder != 0 || !r.Complete {
			t.Errorf("%s: delivered %d/%d, duplicates %d, out of order %d", r.Label, r.Delivered, r.Expected, r.Duplicates, r.OutOfOrder)
		}
		if r.Latency.Count != uint64(r.Delivered) || r.Latency.P99 <= 0 {
			t.Errorf("%s: latency %+v", r.Label, r.Latency)
		}
	}
}

func TestSmokeIdle(t *testing.T) {
	res := benchRun(t, "-scenario", "idle", "-subs", "20", "-settle", "200ms", "-hold", "200ms")
	if res.Idle == nil || res.Idle.Connections != 20 || res.Idle.LiveAfterHold != 20 || res.Idle.ServerRSSAfter == 0 {
		t.Fatalf("idle: %+v", res.Idle)
	}
	if res.Connect == nil || res.Connect.Opened != 20 || res.Connect.Seconds <= 0 {
		t.Fatalf("connect: %+v", res.Connect)
	}
}

func TestSmokeFanout(t *testing.T) {
	plots := t.TempDir()
	res := benchRun(t, "-scenario", "fanout", "-subs", "20", "-messages", "10", "-rate", "100", "-plot", plots)
	checkRuns(t, res.Runs...)
	if _, err := os.Stat(filepath.Join(plots, "fanout-latency-cdf.png")); err != nil {
		t.Fatal(err)
	}
}

func TestSmokeFanoutVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"http_publish", []string{"-publish", "http"}},
		{"websocket", []string{"-transport", "ws"}},
		{"worker_processes", []string{"-per-process", "10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := benchRun(t, append([]string{"-scenario", "fanout", "-subs", "20", "-messages", "5", "-rate", "100"}, tc.args...)...)
			checkRuns(t, res.Runs...)
			if tc.name == "worker_processes" && res.Connect.Processes != 2 {
				t.Fatalf("%d load processes, want 2", res.Connect.Processes)
			}
		})
	}
}

func TestSmokeSweep(t *testing.T) {
	plots := t.TempDir()
	res := benchRun(t, "-scenario", "sweep", "-subs", "10,20", "-rates", "200,1k", "-step", "300ms", "-min-messages", "5", "-plot", plots)
	if len(res.Sweeps) != 2 {
		t.Fatalf("%d sweeps, want 2", len(res.Sweeps))
	}
	for _, s := range res.Sweeps {
		checkRuns(t, s.Steps...)
		if s.Sustainable != 1000 {
			t.Errorf("sweep %d: sustainable %v, want 1000", s.Subscribers, s.Sustainable)
		}
	}
	for _, f := range []string{"sweep-latency-cdf.png", "sweep-rate-vs-subs.png", "sweep-p99-vs-rate.png"} {
		if _, err := os.Stat(filepath.Join(plots, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestSmokeTargeted(t *testing.T) {
	res := benchRun(t, "-scenario", "targeted", "-subs", "20", "-messages", "3", "-rate", "300", "-churn", "40", "-churn-time", "300ms")
	checkRuns(t, res.Runs...)
	if len(res.Runs) != 2 || res.Churn == nil || res.Churn.Opened == 0 || res.Churn.Failed != 0 {
		t.Fatalf("runs %d, churn %+v", len(res.Runs), res.Churn)
	}
}

func TestSmokeStorm(t *testing.T) {
	res := benchRun(t, "-scenario", "storm", "-subs", "20", "-resume", "-messages", "20", "-rate", "40")
	st := res.Storm
	if st == nil || st.Connect.Opened != 20 || st.Reconnect == nil || st.Reconnect.Opened != 20 {
		t.Fatalf("storm: %+v", st)
	}
	checkRuns(t, st.Before, st.Resumed)
}

func TestSmokeStormDisconnect(t *testing.T) {
	res := benchRun(t, "-scenario", "storm", "-subs", "20")
	// 20 connections may cost less CPU than /proc's 10 ms resolution:
	// only the disconnect phase's completion is certain.
	if st := res.Storm; st == nil || st.DisconnectSeconds <= 0 || st.ServerCPUConnect < 0 || st.ServerCPUDisconnect < 0 {
		t.Fatalf("storm without -resume: %+v", st)
	}
}

func TestSmokePresence(t *testing.T) {
	res := benchRun(t, "-scenario", "presence", "-subs", "30", "-messages", "20", "-rate", "200", "-step", "300ms", "-timeout", "3m")
	if len(res.Presence) != 1 {
		t.Fatalf("%d presence results, want 1", len(res.Presence))
	}
	p := res.Presence[0]
	if p.Connections != 30 || p.Edges != 3 || p.LookupHit.Count == 0 || p.LookupMiss.Count == 0 || p.ListPage.Count == 0 || p.KVGet.Count == 0 {
		t.Fatalf("presence: %+v", p)
	}
	if k := p.Kill; k == nil || k.LostEvents != k.Connections || k.Duplicates != 0 || k.StaleAnswers != 0 {
		t.Fatalf("after the kill: %+v", p.Kill)
	}
	if len(res.WriteCosts) != 2 || res.WriteCosts[0].Pairs == 0 || res.WriteCosts[1].Pairs == 0 {
		t.Fatalf("write costs: %+v", res.WriteCosts)
	}
}

func TestSmokeMultiEdge(t *testing.T) {
	res := benchRun(t, "-scenario", "multi-edge", "-subs", "20", "-edges", "1,2", "-rates", "200", "-step", "300ms", "-min-messages", "5")
	if len(res.Edges) != 2 {
		t.Fatalf("%d edge configurations, want 2", len(res.Edges))
	}
	for _, e := range res.Edges {
		checkRuns(t, e.Sweep.Steps...)
	}
}

// With -edge-cpu-budget every edge runs in its own CPU-limited cgroup.
func TestSmokeMultiEdgeBudget(t *testing.T) {
	probe := exec.Command("sleep", "5")
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	cg, err := load.LimitCPU(probe.Process.Pid, 0.5, "probe")
	_ = probe.Process.Kill()
	_ = probe.Wait()
	if err != nil {
		t.Skipf("no cgroup CPU control here: %v", err)
	}
	cg.Release()
	res := benchRun(t, "-scenario", "multi-edge", "-subs", "20", "-edges", "1,2", "-rates", "200", "-step", "300ms", "-min-messages", "5", "-edge-cpu-budget", "0.5")
	if len(res.Edges) != 2 || res.Edges[0].CPUBudget != 0.5 || res.Edges[1].CPUBudget != 0.5 {
		t.Fatalf("edge configurations: %+v", res.Edges)
	}
	for _, e := range res.Edges {
		checkRuns(t, e.Sweep.Steps...)
	}
}

// TestSmokeGeneric drives Herald as "any SSE server": subscribe URL,
// publish URL and body template, nothing Herald-specific.
func TestSmokeGeneric(t *testing.T) {
	s, err := load.StartServer(context.Background(), load.ServerConfig{Binary: embeddedBin})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	res := benchRun(t, "-scenario", "fanout", "-subs", "20", "-messages", "5", "-rate", "100",
		"-sub-url", s.URL+"/sse/bench", "-pub-url", s.URL+"/publish",
		"-pub-body", `{"name":"bench","data":{{payload_json}}}`, "-pub-header", "Authorization: Bearer "+s.Token,
		"-pid", fmt.Sprint(s.PID))
	checkRuns(t, res.Runs...)
	if res.Runs[0].ServerCPU < 0 || res.Runs[0].ServerRSS == 0 {
		t.Errorf("no server usage with -pid: %+v", res.Runs[0])
	}
}

// connect-auth connects to a name of each connect mode, every round, and
// every connection opens: a token and a backend let each client in.
func TestSmokeConnectAuth(t *testing.T) {
	res := benchRun(t, "-scenario", "connect-auth", "-subs", "50", "-rounds", "2")
	if len(res.ConnectAuth) != 2*len(connectAuthModes) {
		t.Fatalf("%d rounds reported, want %d", len(res.ConnectAuth), 2*len(connectAuthModes))
	}
	for _, r := range res.ConnectAuth {
		if r.Connect.Opened != 50 || r.Connect.Failed != 0 || r.Connect.Latency.Count != 50 {
			t.Errorf("%s round %d: %+v", r.Mode, r.Round, r.Connect)
		}
	}
}

func TestSmokeTasks(t *testing.T) {
	res := benchRun(t, "-scenario", "tasks", "-subs", "20", "-messages", "3", "-rate", "10")
	tr := res.Tasks
	if tr == nil || tr.Tasks != 20 || tr.StartFailures != 0 || tr.StartsPerSec <= 0 || tr.ProgressSent != 60 ||
		tr.ProgressSeen != 60 || tr.Completed != 20 || tr.ProgressP99MS <= 0 {
		t.Fatalf("tasks: %+v", tr)
	}
}
