package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
)

// FanoutRun is targeted messages (each to one held client) delivered under
// one interest design: what the servers and the edges spend per message.
// Delta.Edges counts every message delivered once, plus (sharded) the
// copies that reached edges without the message's client.
type FanoutRun struct {
	Design    Design  `json:"design"`
	EdgeCount int     `json:"edge_count"`
	Clients   int     `json:"clients"`
	Messages  int     `json:"messages"`
	Offered   float64 `json:"offered_per_s"`
	// Publish is the publishing time; Drain from its end until the edges
	// had every message.
	Publish time.Duration `json:"publish_ns"`
	Drain   time.Duration `json:"drain_ns"`
	Delta
}

// liveMessage builds what the history stream republishes for an event to
// client i: the live subject of the design, the headers RePublish adds
// (the stored subject among them) and the data.
func liveMessage(subj broker.Subjects, d Design, p Population, i int, seq uint64, data []byte) *nats.Msg {
	id := p.ID(i)
	ev := subj.Event(broker.Address{Name: p.Name, ClientID: id})
	live := subj.Live().Event(broker.Address{Name: p.Name, ClientID: id})
	if d.Shards > 0 {
		live = subj.Prefix() + ".live." + broker.EscapeToken(p.Name) + "._." + strconv.Itoa(Shard(broker.EscapeToken(id), d.Shards))
	}
	m := nats.NewMsg(live)
	m.Header.Set("Nats-Stream", "HERALD_EVENTS")
	m.Header.Set("Nats-Subject", ev)
	m.Header.Set("Nats-Sequence", strconv.FormatUint(seq, 10))
	m.Header.Set("Nats-Time-Stamp", time.Now().UTC().Format(time.RFC3339Nano))
	m.Header.Set("Nats-Last-Sequence", strconv.FormatUint(seq/2, 10))
	m.Data = data
	return m
}

// runFanout publishes the same targeted load under each design, on one
// cluster: the literal design first, then every shard count.
func (r *runner) runFanout(ctx context.Context) ([]FanoutRun, error) {
	cfg := r.cfg
	b, err := r.start(ctx, "fanout", false, cfg.FanoutEdges, true)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	c, edges, nc := b.c, b.edges, b.pubs[0]
	designs := []Design{{}}
	for _, s := range cfg.Shards {
		designs = append(designs, Design{Shards: s})
	}
	data := payload(cfg.Payload)
	var runs []FanoutRun
	for rep := range cfg.FanoutRepeat {
		for _, d := range designs {
			run, err := r.fanout(ctx, c, edges, nc, d, data, uint64(rep))
			if err != nil {
				return runs, fmt.Errorf("%s: %w", d, err)
			}
			runs = append(runs, *run)
			r.logf("fanout %s: %d messages to %d clients on %d edges: edges received %d (delivered %d, dropped %d), node CPU %v, edge CPU %v, route msgs %d",
				d, run.Messages, run.Clients, run.EdgeCount, run.Edges.Received, run.Edges.Delivered, run.Edges.Dropped,
				sumDur(run.NodeCPU).Round(time.Millisecond), run.EdgeCPU.Round(time.Millisecond), run.RouteMsgs)
		}
	}
	return runs, nil
}

// fanout registers every client under design d, publishes the targeted
// load at the configured rate and waits until the edges delivered it all.
func (r *runner) fanout(ctx context.Context, c *Cluster, edges []*edgeProc, nc *nats.Conn, d Design, data []byte, seed uint64) (*FanoutRun, error) {
	cfg := r.cfg
	held := func(e int) Span { return Span{From: 0, To: cfg.FanoutClients, Mod: len(edges), Rem: e} }
	if err := eachEdge(ctx, edges, func(e int, ed *edgeProc) error {
		_, err := ed.do(ctx, request{Op: "sub", Design: d, Clients: held(e)})
		return err
	}); err != nil {
		return nil, err
	}
	if err := r.quiet(ctx, c); err != nil {
		return nil, err
	}
	run := &FanoutRun{Design: d, EdgeCount: len(edges), Clients: cfg.FanoutClients, Messages: cfg.FanoutMessages, Offered: cfg.FanoutRate}
	var err error
	run.Delta, err = r.measure(ctx, c, edges, func(before mark) error {
		rng := rand.New(rand.NewPCG(cfg.Seed+seed, uint64(d.Shards)))
		start := time.Now()
		every := time.Duration(float64(time.Second) / cfg.FanoutRate)
		for k := range cfg.FanoutMessages {
			if k%64 == 0 {
				if wait := time.Until(start.Add(time.Duration(k) * every)); wait > 0 {
					time.Sleep(wait)
				}
			}
			if err := nc.PublishMsg(liveMessage(r.subj, d, r.pop, rng.IntN(cfg.FanoutClients), uint64(k+1), data)); err != nil {
				return err
			}
		}
		if err := nc.FlushTimeout(time.Minute); err != nil {
			return err
		}
		run.Publish = time.Since(start)
		err := waitEdges(ctx, edges, before.edges, time.Minute, "delivered", func(got Counters) (uint64, uint64) {
			return got.Delivered, uint64(cfg.FanoutMessages)
		})
		run.Drain = time.Since(start) - run.Publish
		return err
	})
	if err != nil {
		return nil, err
	}
	return run, eachEdge(ctx, edges, func(e int, ed *edgeProc) error {
		_, err := ed.do(ctx, request{Op: "unsub", Design: d, Clients: held(e)})
		return err
	})
}

// eachEdge runs fn for every edge at once and returns the first error.
func eachEdge(ctx context.Context, edges []*edgeProc, fn func(e int, ed *edgeProc) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(edges))
	for e, ed := range edges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[e] = fn(e, ed)
		}()
	}
	wg.Wait()
	return firstErr(errs)
}
