package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herald-push/herald/bench/load"
)

// Scenarios.
var scenarios = []string{"idle", "fanout", "sweep", "targeted", "storm", "multi-edge", "connect-auth", "tasks", "presence"}

// config is every flag.
type config struct {
	Scenario string
	Subs     []int // subscribers; sweep runs each
	Messages int
	Rate     float64 // messages per second (targeted: in total)
	Size     int
	Name     string
	Hold     time.Duration

	Rates       []float64 // sweep: offered deliveries per second
	StepTime    time.Duration
	MinMessages int
	SLO         time.Duration
	StopAfter   int

	Churn     float64
	ChurnTime time.Duration

	Resume    bool
	ResumeVia string

	Rounds int // connect-auth: A/B rounds

	Edges      []int
	EdgeCPU    []string
	EdgeBudget float64 // multi-edge: CPUs each edge is limited to (cgroup)
	EdgeEnv    []string

	Transport   string
	Concurrency int
	PerProcess  int
	Publish     string
	Timeout     time.Duration
	Drain       time.Duration
	Settle      time.Duration

	Binary     string
	EdgeBinary string
	ServerArgs []string
	ServerLog  string
	PprofDir   string
	PprofTime  time.Duration

	// Attach to a running Herald, or drive any SSE server.
	URL       string
	NATS      string
	Token     string
	PID       int
	SubURL    string
	PubURL    string
	PubBody   string
	PubHeader http.Header
	SubHeader http.Header
	OpenEvent string
	generic   bool

	JSON    bool
	JSONOut string
	PlotDir string
	Check   bool
	Verbose bool
	SelfCPU string
}

// listFlag is a comma-separated list of numbers with k/M suffixes.
type listFlag struct {
	set func(string) error
	cur string
}

func (l *listFlag) String() string     { return l.cur }
func (l *listFlag) Set(s string) error { l.cur = s; return l.set(s) }

// parseCount reads 10000, 10k, 1.5M.
func parseCount(s string) (float64, error) {
	s = strings.TrimSpace(s)
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1e6, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return v * mult, nil
}

func parseCounts(s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		v, err := parseCount(part)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// headerFlag collects repeated "Key: value" flags.
type headerFlag struct{ h *http.Header }

func (f headerFlag) String() string { return "" }
func (f headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want \"Key: value\", got %q", s)
	}
	if *f.h == nil {
		*f.h = http.Header{}
	}
	f.h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	return nil
}

// stringsFlag collects repeated values.
type stringsFlag struct{ v *[]string }

func (f stringsFlag) String() string     { return "" }
func (f stringsFlag) Set(s string) error { *f.v = append(*f.v, s); return nil }

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("herald-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herald-bench -scenario %s [flags]\n\n", strings.Join(scenarios, "|"))
		fmt.Fprintln(stderr, "Numbers take k and M suffixes (10k, 1.5M). See bench/README.md.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Scenario, "scenario", "fanout", "scenario: "+strings.Join(scenarios, ", "))
	subs := "1000"
	fs.Var(&listFlag{cur: subs, set: func(s string) error {
		v, err := parseCounts(s)
		if err != nil {
			return err
		}
		c.Subs = c.Subs[:0]
		for _, x := range v {
			c.Subs = append(c.Subs, int(x))
		}
		return nil
	}}, "subs", "subscribers (a list for sweep, e.g. 1k,10k: one sweep each)")
	fs.IntVar(&c.Messages, "messages", 20, "messages per run (fanout: to all; targeted: per client)")
	fs.Float64Var(&c.Rate, "rate", 10, "messages per second (targeted: in total); 0 = as fast as possible")
	fs.IntVar(&c.Size, "size", 0, "payload size in bytes (0: the bare ~60-byte payload)")
	fs.StringVar(&c.Name, "name", "bench", "Herald name (channel) subscribers use")
	fs.DurationVar(&c.Hold, "hold", 5*time.Second, "idle: how long connections are held after they settle")
	fs.Var(&listFlag{cur: "", set: func(s string) (err error) { c.Rates, err = parseCounts(s); return err }},
		"rates", "sweep: offered deliveries/s, e.g. 50k,100k,200k (default: 10k up to 1M)")
	fs.DurationVar(&c.StepTime, "step", 4*time.Second, "sweep: publishing time per rate")
	fs.IntVar(&c.MinMessages, "min-messages", 10, "sweep: at least this many messages per rate")
	fs.DurationVar(&c.SLO, "slo-p99", 100*time.Millisecond, "sweep: p99 bound of a sustainable rate")
	fs.IntVar(&c.StopAfter, "stop-after", 2, "sweep: stop after this many failed rates in a row")
	fs.Float64Var(&c.Churn, "churn", 200, "targeted: reconnects per second in the churn phase (0: none)")
	fs.DurationVar(&c.ChurnTime, "churn-time", 3*time.Second, "targeted: length of the churn phase")
	fs.BoolVar(&c.Resume, "resume", false, "storm: after the connect storm, drop every client mid-run and reconnect all at once with Last-Event-ID; the edge must replay what they missed")
	fs.StringVar(&c.ResumeVia, "resume-via", "header", "storm -resume: present the last id as the Last-Event-ID header or the lastEventId query parameter (header|query)")
	fs.IntVar(&c.Rounds, "rounds", 3, "connect-auth: rounds of the A/B (each connects -subs clients once per mode)")
	edges := "1,2"
	fs.Var(&listFlag{cur: edges, set: func(s string) error {
		v, err := parseCounts(s)
		c.Edges = c.Edges[:0]
		for _, x := range v {
			c.Edges = append(c.Edges, int(x))
		}
		return err
	}}, "edges", "multi-edge: edge counts to compare, e.g. 1,2; presence: the number of simulated edges (default 3)")
	fs.Var(stringsFlag{&c.EdgeCPU}, "edge-cpus", "multi-edge: taskset CPU list for the i-th edge (repeat the flag: -edge-cpus 0 -edge-cpus 1)")
	fs.Float64Var(&c.EdgeBudget, "edge-cpu-budget", 0, "multi-edge: limit each edge to this many CPUs with a cgroup (e.g. 0.25), so that each edge has its own CPU budget as on separate machines; needs write access to the cgroup file system (root)")
	fs.Var(stringsFlag{&c.EdgeEnv}, "edge-env", "multi-edge: KEY=VALUE added to every edge's environment (repeat), e.g. GOMAXPROCS=1 so edges sharing a small machine do not each size their runtime for all of it")
	fs.StringVar(&c.Transport, "transport", "sse", "subscriber transport: sse or ws")
	fs.IntVar(&c.Concurrency, "concurrency", 512, "connections dialled at once per process (storm: all at once)")
	fs.IntVar(&c.PerProcess, "per-process", load.DefaultPerProcess, "most subscribers per process; larger runs spawn worker processes")
	fs.StringVar(&c.Publish, "publish", "nats", "how Herald runs publish: nats (straight to the bus) or http (POST /publish)")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Minute, "the whole run stops after this long")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "wait this long after the last publish for deliveries")
	fs.DurationVar(&c.Settle, "settle", 2*time.Second, "idle: wait after connecting before reading RSS")
	fs.StringVar(&c.Binary, "binary", "", "a built cmd/embedded (default: built from this module)")
	fs.StringVar(&c.EdgeBinary, "edge-binary", "", "multi-edge: a built cmd/edge (default: built from this module)")
	fs.Var(stringsFlag{&c.ServerArgs}, "server-arg", "extra flag for the Herald processes (repeat: -server-arg=-queue-messages=4096)")
	fs.StringVar(&c.ServerLog, "server-log", "", "write the Herald processes' logs to this file")
	fs.StringVar(&c.PprofDir, "pprof", "", "profile the edge during the run: serve Herald from this tool with net/http/pprof and save CPU, heap and allocation profiles in this directory")
	fs.DurationVar(&c.PprofTime, "pprof-seconds", 10*time.Second, "length of the CPU profile")
	fs.StringVar(&c.URL, "url", "", "attach to a running Herald at this base URL instead of starting one")
	fs.StringVar(&c.NATS, "nats", "", "with -url: publish through this NATS server (default: POST /publish)")
	fs.StringVar(&c.Token, "token", "", "with -url: publish token")
	fs.IntVar(&c.PID, "pid", 0, "process id of the server under test, for RSS and CPU (attached and generic runs)")
	fs.StringVar(&c.SubURL, "sub-url", "", "generic mode: subscribe URL of any SSE server ({i} and {client} are replaced per client)")
	fs.StringVar(&c.PubURL, "pub-url", "", "generic mode: URL to POST each message to")
	fs.StringVar(&c.PubBody, "pub-body", `{{payload}}`, "generic mode: body template ({{payload}}, {{payload_json}}, {{seq}}, {{ts}}, {{step}}, {{client}}, {{name}})")
	fs.Var(headerFlag{&c.PubHeader}, "pub-header", "generic mode: header of publish requests (repeat), e.g. \"Authorization: Bearer x\"")
	fs.Var(headerFlag{&c.SubHeader}, "sub-header", "header of subscribe requests (repeat)")
	fs.StringVar(&c.OpenEvent, "open-event", "", "generic mode: event that marks a stream open (default: the response head)")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&c.JSONOut, "json-out", "", "also write the JSON report to this file")
	fs.StringVar(&c.PlotDir, "plot", "", "write PNG plots (latency CDF; rate and p99 against load) to this directory")
	fs.BoolVar(&c.Check, "check", false, "exit with status 3 unless every run delivered everything, in order, exactly once")
	fs.BoolVar(&c.Verbose, "v", false, "more progress on stderr")
	fs.StringVar(&c.SelfCPU, "cpuprofile", "", "write a CPU profile of this load process to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(c.Subs) == 0 {
		c.Subs = []int{1000}
	}
	if len(c.Edges) == 0 {
		c.Edges = []int{1, 2}
	}
	if len(c.Rates) == 0 {
		c.Rates = []float64{10e3, 25e3, 50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 350e3, 400e3, 500e3, 600e3, 800e3, 1e6}
	}
	c.generic = c.SubURL != ""
	switch {
	case !slices.Contains(scenarios, c.Scenario):
		return nil, fmt.Errorf("-scenario %q: want one of %s", c.Scenario, strings.Join(scenarios, ", "))
	case c.Transport != "sse" && c.Transport != "ws":
		return nil, fmt.Errorf("-transport %q: want sse or ws", c.Transport)
	case c.Publish != "nats" && c.Publish != "http":
		return nil, fmt.Errorf("-publish %q: want nats or http", c.Publish)
	case c.ResumeVia != "header" && c.ResumeVia != "query":
		return nil, fmt.Errorf("-resume-via %q: want header or query", c.ResumeVia)
	case c.generic && c.URL != "":
		return nil, errors.New("-sub-url (generic mode) and -url (attached Herald) exclude each other")
	case c.generic && c.PubURL == "" && c.Scenario != "idle" && c.Scenario != "storm":
		return nil, errors.New("generic mode needs -pub-url for scenario " + c.Scenario)
	case c.generic && c.Scenario == "multi-edge":
		return nil, errors.New("multi-edge starts Herald edges itself; it has no generic mode")
	case c.URL != "" && c.Scenario == "multi-edge":
		return nil, errors.New("multi-edge starts Herald edges itself; drop -url")
	case (c.generic || c.URL != "") && c.Scenario == "connect-auth":
		return nil, errors.New("connect-auth starts Herald with its connect modes itself; drop -url and -sub-url")
	case c.Rounds <= 0:
		return nil, errors.New("-rounds must be positive")
	case (c.generic || c.URL != "") && c.Scenario == "tasks":
		return nil, errors.New("tasks starts Herald with a task route itself; drop -url and -sub-url")
	case (c.generic || c.URL != "") && c.Scenario == "presence":
		return nil, errors.New("presence starts its own NATS server and simulated edges; drop -url and -sub-url")
	case c.Messages <= 0:
		return nil, errors.New("-messages must be positive")
	case c.Timeout <= 0:
		return nil, errors.New("-timeout must be positive")
	}
	for _, n := range c.Subs {
		if n <= 0 {
			return nil, errors.New("-subs must be positive")
		}
	}
	return c, nil
}
