package scale

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/pkg/broker"
)

// Phases, in the order they run.
var allPhases = []string{"interest", "fanout", "republish", "replay"}

// Config is every knob of a scale run. Zero values mean the defaults
// stated on each field (applied by withDefaults).
type Config struct {
	// Phases to run. Default all: interest, fanout, republish, replay.
	Phases []string `json:"phases"`
	// Out is the directory for report.json, summary.md and heap profiles.
	// Default: none (the summary goes to the output writer only).
	Out string `json:"-"`
	// NATSServer is a built nats-server. Default: built from the module.
	NATSServer string `json:"-"`
	// Edges is the number of edge workers, spread round robin over the
	// nodes. Default 3 (one per node).
	Edges int `json:"edges"`
	// Name and Groups shape the clients: one name, Groups groups (client
	// i in group i mod Groups). Defaults "scale", 100; Groups < 0 means
	// clients without a group (one per-client subject each, not two).
	Name   string `json:"name"`
	Groups int    `json:"groups"`
	// Seed makes the clientIds. Default 1.
	Seed uint64 `json:"seed"`

	// Steps are the client counts of the memory curve. Default 5k, 25k,
	// 50k, 100k (10k to 200k per-client subscriptions with groups).
	Steps []int `json:"steps"`
	// Storms are the reconnect storms, in clients. Default 10k, 100k.
	Storms []int `json:"storms"`
	// Repeat is how many times the literal design's interest run is
	// repeated (fresh cluster each). Default 2.
	Repeat int `json:"repeat"`
	// Shards are the sharded designs measured. Default 256, 1024.
	Shards []int `json:"shards"`

	// FanoutEdges is the edge count of the fan-out phase. Default 6 (two
	// per node: a sharded message then reaches more edges than routes).
	FanoutEdges int `json:"fanout_edges"`
	// FanoutClients are held over those edges. Default 30k.
	FanoutClients int `json:"fanout_clients"`
	// FanoutMessages per design, at FanoutRate per second. Defaults 30k,
	// 10k/s.
	FanoutMessages int     `json:"fanout_messages"`
	FanoutRate     float64 `json:"fanout_rate"`
	// FanoutRepeat runs every design this many times, in turns. Default 2.
	FanoutRepeat int `json:"fanout_repeat"`

	// RepublishClients are held by the edges. Default 30k.
	RepublishClients int `json:"republish_clients"`
	// RepublishConcurrency are the acked publishes in flight, per level.
	// Default 4, 16, 64.
	RepublishConcurrency []int `json:"republish_concurrency"`
	// RepublishTime is each level's publishing time. Default 5 s.
	RepublishTime time.Duration `json:"republish_time_ns"`
	// Payload is the event data size. Default 200 bytes.
	Payload int `json:"payload"`

	// Replays are the resume storms, in clients. Default 1k, 5k.
	Replays []int `json:"replays"`
	// ReplayMessages is what each resuming client missed. Default 20.
	ReplayMessages int `json:"replay_messages"`
	// ReplayFilters are the filter sets each storm runs with. Default
	// edge (pkg/edge's), literal.
	ReplayFilters []string `json:"replay_filters"`
	// ReplayDirectR3 also replays the R3 stream with batched direct gets
	// answered by any replica (not what pkg/broker does there). Default
	// true; NoReplayDirectR3 turns it off.
	NoReplayDirectR3 bool `json:"no_replay_direct_r3"`
	// ReplayConcurrency bounds the replays one edge runs at once.
	// Default 64 (pkg/edge's DefaultMaxReplays).
	ReplayConcurrency int `json:"replay_concurrency"`

	// Target is the deployment the model extrapolates to.
	Target Target `json:"target"`

	// Restart kills the last node at the end of each literal interest run
	// and starts it again: an edge's failover to another node and the
	// node's rejoin. Default true; NoRestart turns it off.
	NoRestart bool `json:"no_restart"`
	// Quiet is how long the subscription tables must stay unchanged for
	// the cluster to count as settled. Default 500 ms.
	Quiet time.Duration `json:"quiet_ns"`

	// Timeout bounds the whole run. Default 40 minutes.
	Timeout time.Duration `json:"timeout_ns"`
}

func (c Config) withDefaults() Config {
	if len(c.Phases) == 0 {
		c.Phases = allPhases
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Edges, 3)
	def(&c.Groups, 100)
	def(&c.Repeat, 2)
	def(&c.FanoutEdges, 6)
	def(&c.FanoutClients, 30_000)
	def(&c.FanoutMessages, 30_000)
	def(&c.FanoutRepeat, 2)
	def(&c.RepublishClients, 30_000)
	def(&c.Payload, 200)
	def(&c.ReplayMessages, 20)
	def(&c.ReplayConcurrency, 64)
	if c.Name == "" {
		c.Name = "scale"
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if len(c.Steps) == 0 {
		c.Steps = []int{5_000, 25_000, 50_000, 100_000}
	}
	if c.Storms == nil {
		c.Storms = []int{10_000, 100_000}
	}
	if c.Shards == nil {
		c.Shards = []int{256, 1024}
	}
	if c.FanoutRate == 0 {
		c.FanoutRate = 10_000
	}
	if len(c.RepublishConcurrency) == 0 {
		c.RepublishConcurrency = []int{4, 16, 64}
	}
	if c.RepublishTime == 0 {
		c.RepublishTime = 5 * time.Second
	}
	if len(c.Replays) == 0 {
		c.Replays = []int{1_000, 5_000}
	}
	if len(c.ReplayFilters) == 0 {
		c.ReplayFilters = []string{filtersEdge, filtersLiteral}
	}
	if c.Timeout == 0 {
		c.Timeout = 40 * time.Minute
	}
	if c.Quiet == 0 {
		c.Quiet = 500 * time.Millisecond
	}
	c.Target = c.Target.withDefaults()
	return c
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	for _, p := range c.Phases {
		if !slices.Contains(allPhases, p) {
			return fmt.Errorf("scale: unknown phase %q (have %s)", p, strings.Join(allPhases, ", "))
		}
	}
	if !slices.IsSorted(c.Steps) || c.Steps[0] <= 0 {
		return errors.New("scale: Steps must be positive and increasing")
	}
	for _, s := range c.Storms {
		if s <= 0 || s > c.Steps[len(c.Steps)-1] {
			return fmt.Errorf("scale: storm of %d clients: must be 1 to the last step (%d)", s, c.Steps[len(c.Steps)-1])
		}
	}
	for _, s := range c.Shards {
		if s <= 0 {
			return errors.New("scale: Shards must be positive")
		}
	}
	for _, f := range c.ReplayFilters {
		if f != filtersEdge && f != filtersLiteral {
			return fmt.Errorf("scale: replay filters %q: want edge or literal", f)
		}
	}
	switch {
	case c.Edges < 1 || c.FanoutEdges < 1:
		return errors.New("scale: Edges and FanoutEdges must be at least 1")
	case c.FanoutRate <= 0:
		return errors.New("scale: FanoutRate must be positive")
	case c.ReplayConcurrency < 1:
		return errors.New("scale: ReplayConcurrency must be at least 1")
	}
	return nil
}

func (c Config) has(phase string) bool { return slices.Contains(c.Phases, phase) }

// Report is a whole run.
type Report struct {
	Started time.Time `json:"started"`
	Host    Host      `json:"host"`
	Config  Config    `json:"config"`
	// Interest holds the literal runs (Repeat of them), then one run per
	// shard count.
	Interest  []*InterestRun `json:"interest,omitempty"`
	Fanout    []FanoutRun    `json:"fanout,omitempty"`
	Republish []RepublishRun `json:"republish,omitempty"`
	Replay    []ReplayRun    `json:"replay,omitempty"`
	Model     *Model         `json:"model,omitempty"`
	Elapsed   time.Duration  `json:"elapsed_ns"`
}

// Host describes the machine.
type Host struct {
	CPUs       int              `json:"cpus"`
	Go         string           `json:"go"`
	NATSServer string           `json:"nats_server"`
	Before     load.MachineLoad `json:"busy_before"` // over one second before the run
}

// runner holds what every phase shares.
type runner struct {
	cfg  Config
	bin  string
	dir  string // scratch: configs, stores, logs
	log  io.Writer
	pop  Population
	subj broker.Subjects
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Run runs the configured phases and returns the report.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := load.RaiseFileLimit(); err != nil {
		fmt.Fprintln(log, "warning: could not raise the open-file limit:", err)
	}
	dir, err := os.MkdirTemp("", "herald-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &runner{cfg: cfg, dir: dir, log: log, subj: broker.MustSubjects(""),
		pop: Population{Seed: cfg.Seed, Name: cfg.Name, Groups: max(cfg.Groups, 0)}}
	r.bin = cfg.NATSServer
	if r.bin == "" {
		if r.bin, err = BuildNATS(ctx, dir); err != nil {
			return nil, err
		}
	}
	rep := &Report{Started: time.Now(), Config: cfg}
	rep.Host = Host{CPUs: runtime.NumCPU(), Go: runtime.Version(), NATSServer: natsVersion(r.bin)}
	if a, err := load.ReadCPUStat(); err == nil {
		time.Sleep(time.Second)
		if b, err := load.ReadCPUStat(); err == nil {
			rep.Host.Before = b.Since(a)
		}
	}
	if cfg.Out != "" {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, err
		}
	}
	err = r.run(ctx, rep)
	rep.Elapsed = time.Since(rep.Started)
	rep.Model = BuildModel(rep)
	return rep, err
}

func (r *runner) run(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	if cfg.has("interest") {
		for i := range cfg.Repeat {
			tag := fmt.Sprintf("interest-literal-%d", i+1)
			ic := InterestConfig{Steps: cfg.Steps, Storms: cfg.Storms}
			if i == 0 && cfg.Out != "" {
				ic.HeapProfile = heapProfilePath(cfg.Out, tag)
			}
			run, err := r.runInterest(ctx, ic, tag)
			if err != nil {
				return fmt.Errorf("%s: %w", tag, err)
			}
			rep.Interest = append(rep.Interest, run)
		}
		for _, s := range cfg.Shards {
			tag := fmt.Sprintf("interest-sharded-%d", s)
			run, err := r.runInterest(ctx, InterestConfig{Design: Design{Shards: s}, Steps: cfg.Steps, Storms: cfg.Storms}, tag)
			if err != nil {
				return fmt.Errorf("%s: %w", tag, err)
			}
			rep.Interest = append(rep.Interest, run)
		}
	}
	if cfg.has("fanout") {
		runs, err := r.runFanout(ctx)
		rep.Fanout = runs
		if err != nil {
			return fmt.Errorf("fanout: %w", err)
		}
	}
	if cfg.has("republish") {
		runs, err := r.runRepublish(ctx)
		rep.Republish = runs
		if err != nil {
			return fmt.Errorf("republish: %w", err)
		}
	}
	if cfg.has("replay") {
		runs, err := r.runReplay(ctx)
		rep.Replay = runs
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
	return nil
}

// bench is a running cluster with its edge workers and, when asked, one
// producer connection to every node.
type bench struct {
	c     *Cluster
	edges []*edgeProc
	pubs  []*nats.Conn
}

// start starts a cluster and the edge workers (edge i on node i mod
// nodes) and, with producers, connects once to every node.
func (r *runner) start(ctx context.Context, tag string, countRoutes bool, edges int, producers bool) (*bench, error) {
	dir := filepath.Join(r.dir, tag)
	c, err := StartCluster(ctx, ClusterConfig{Binary: r.bin, CountRoutes: countRoutes, Dir: dir})
	if err != nil {
		return nil, err
	}
	b := &bench{c: c}
	for i := range edges {
		e, err := startEdge(ctx, dir, fmt.Sprintf("edge%d", i), c.Nodes[i%len(c.Nodes)].URL(), r.subj.Prefix(), r.pop)
		if err != nil {
			b.stop()
			return nil, err
		}
		b.edges = append(b.edges, e)
	}
	for _, n := range c.Nodes {
		if !producers {
			break
		}
		nc, err := nats.Connect(n.URL(), nats.Name("herald-scale-producer"))
		if err != nil {
			b.stop()
			return nil, err
		}
		b.pubs = append(b.pubs, nc)
	}
	return b, nil
}

// stop closes everything and removes the nodes' stores (they can be large).
func (b *bench) stop() {
	for _, nc := range b.pubs {
		nc.Close()
	}
	for _, e := range b.edges {
		e.close()
	}
	b.c.Stop()
	_ = os.RemoveAll(b.c.dir)
}

func natsVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// Main is `herald-bench scale`: flags, the run, the summary on stdout and,
// with -out, report.json and summary.md. It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if IsWorker() {
		if err := ServeWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(stderr, "scale worker:", err)
			return 1
		}
		return 0
	}
	cfg, from, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "herald-bench scale:", err)
		return 2
	}
	if from != "" {
		return rebuild(from, cfg.Out, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg, stderr)
	if rep != nil {
		sum := Summary(rep)
		fmt.Fprint(stdout, sum)
		if cfg.Out != "" {
			if werr := writeOutputs(cfg.Out, rep, sum); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "herald-bench scale:", err)
		return 1
	}
	return 0
}

// rebuild reads a saved report, derives the model again (with this
// version's model) and writes the summary; with out, report.json and
// summary.md there.
func rebuild(path, out string, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err == nil {
		var rep Report
		if err = json.Unmarshal(b, &rep); err == nil {
			rep.Config.Target = rep.Config.Target.withDefaults()
			rep.Model = BuildModel(&rep)
			sum := Summary(&rep)
			fmt.Fprint(stdout, sum)
			if out != "" {
				err = writeOutputs(out, &rep, sum)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "herald-bench scale:", err)
		return 1
	}
	return 0
}

func writeOutputs(dir string, rep *Report, sum string) error {
	b, err := json.Marshal(rep) // compact: the latency histograms' buckets are long
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "summary.md"), []byte(sum), 0o644)
}

// intList is a comma-separated list of counts with k and M suffixes.
type intList struct{ v *[]int }

func (l intList) String() string {
	if l.v == nil {
		return ""
	}
	var s []string
	for _, n := range *l.v {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

func (l intList) Set(s string) error {
	*l.v = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := parseCount(part)
		if err != nil {
			return err
		}
		*l.v = append(*l.v, n)
	}
	return nil
}

// countFlag is one count with k and M suffixes.
type countFlag struct{ v *int }

func (c countFlag) String() string {
	if c.v == nil {
		return ""
	}
	return strconv.Itoa(*c.v)
}

func (c countFlag) Set(s string) error {
	n, err := parseCount(s)
	*c.v = n
	return err
}

func parseCount(s string) (int, error) {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad count %q", s)
	}
	return int(math.Round(v * mult)), nil
}

// smokeConfig is a run of every phase small enough for CI: seconds.
func smokeConfig() Config {
	return Config{
		Edges: 3, Groups: 4, Steps: []int{150, 300}, Storms: []int{120}, Repeat: 1, Shards: []int{16},
		FanoutEdges: 3, FanoutClients: 300, FanoutMessages: 600, FanoutRate: 2000, FanoutRepeat: 1,
		RepublishClients: 300, RepublishConcurrency: []int{4}, RepublishTime: 500 * time.Millisecond,
		Replays: []int{10, 30}, ReplayMessages: 3, ReplayConcurrency: 8,
		Quiet: 150 * time.Millisecond, Timeout: 3 * time.Minute,
	}
}

// parseFlags returns the configuration and, with -from, a saved report
// to summarise instead of running.
func parseFlags(args []string, stderr io.Writer) (Config, string, error) {
	fs := flag.NewFlagSet("herald-bench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: herald-bench scale [flags]\n\nMeasures NATS interest, republish and replay costs on a 3-node\nnats-server cluster on loopback and extrapolates them (bench/README.md, \"Scale model\").\n\nFlags:")
		fs.PrintDefaults()
	}
	var cfg Config
	var phases string
	from := fs.String("from", "", "summarise a saved report.json (the model derived again) instead of running")
	smoke := fs.Bool("smoke", false, "every phase at a tiny size (seconds); only -phases, -out, -nats-server and -timeout still apply")
	fs.StringVar(&phases, "phases", strings.Join(allPhases, ","), "phases to run")
	fs.StringVar(&cfg.Out, "out", "", "directory for report.json, summary.md and heap profiles")
	fs.StringVar(&cfg.NATSServer, "nats-server", "", "a built nats-server (default: build the version in go.mod)")
	fs.IntVar(&cfg.Edges, "edges", 0, "edge workers (interest, republish, replay; default 3)")
	fs.IntVar(&cfg.Groups, "groups", 0, "groups per name (default 100; -1: clients without a group)")
	fs.Var(intList{&cfg.Steps}, "steps", "client counts of the memory curve (default 5k,25k,50k,100k)")
	fs.Var(intList{&cfg.Storms}, "storms", "reconnect storms in clients (default 10k,100k)")
	fs.IntVar(&cfg.Repeat, "repeat", 0, "literal interest runs (default 2)")
	fs.Var(intList{&cfg.Shards}, "shards", "sharded designs to measure (default 256,1024)")
	fs.IntVar(&cfg.FanoutEdges, "fanout-edges", 0, "edge workers of the fan-out phase (default 6)")
	fs.Var(countFlag{&cfg.FanoutClients}, "fanout-clients", "clients held in the fan-out phase (default 30k)")
	fs.Var(countFlag{&cfg.FanoutMessages}, "fanout-messages", "targeted messages per design (default 30k)")
	fs.Float64Var(&cfg.FanoutRate, "fanout-rate", 0, "targeted messages per second (default 10000)")
	fs.IntVar(&cfg.FanoutRepeat, "fanout-repeat", 0, "runs of every design, in turns (default 2)")
	fs.Var(countFlag{&cfg.RepublishClients}, "republish-clients", "clients held in the republish phase (default 30k)")
	fs.Var(intList{&cfg.RepublishConcurrency}, "republish-concurrency", "acked publishes in flight, per level (default 4,16,64)")
	fs.DurationVar(&cfg.RepublishTime, "republish-time", 0, "publishing time per level (default 5s)")
	fs.IntVar(&cfg.Payload, "payload", 0, "event data bytes (default 200)")
	fs.Var(intList{&cfg.Replays}, "replays", "resume storms in clients (default 1k,5k)")
	fs.IntVar(&cfg.ReplayMessages, "replay-messages", 0, "events each resuming client missed (default 20)")
	fs.Func("replay-filters", "replay filter sets: edge (pkg/edge's), literal (default both)", func(v string) error {
		cfg.ReplayFilters = strings.Split(v, ",")
		return nil
	})
	fs.BoolVar(&cfg.NoReplayDirectR3, "no-replay-direct-r3", false, "skip replays of the R3 stream with direct gets from any replica")
	fs.IntVar(&cfg.ReplayConcurrency, "replay-concurrency", 0, "replays per edge at once (default 64, as pkg/edge)")
	fs.Var(countFlag{&cfg.Target.Connections}, "target-connections", "model: connections (default 1M)")
	fs.IntVar(&cfg.Target.Edges, "target-edges", 0, "model: edges (default 50)")
	fs.Var(countFlag{&cfg.Target.Storm}, "target-storm", "model: reconnect storm in clients (default 100k)")
	fs.BoolVar(&cfg.NoRestart, "no-restart", false, "skip the node kill and restart at the end of literal interest runs")
	fs.DurationVar(&cfg.Quiet, "quiet", 0, "unchanged subscription tables for this long count as settled (default 500ms)")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "bound of the whole run (default 40m)")
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if *smoke {
		s := smokeConfig()
		s.Out, s.NATSServer = cfg.Out, cfg.NATSServer
		if cfg.Timeout != 0 {
			s.Timeout = cfg.Timeout
		}
		cfg = s
	}
	cfg.Phases = nil
	for _, p := range strings.Split(phases, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Phases = append(cfg.Phases, p)
		}
	}
	return cfg, *from, nil
}
