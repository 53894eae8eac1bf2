package scale

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-push/herald/bench/load"
	"github.com/herald-push/herald/pkg/broker"
)

// RepublishRun is acknowledged publishing into the history stream (R3,
// file storage, pkg/broker's configuration) at one concurrency, delivered
// to the edges through RePublish.
type RepublishRun struct {
	Design      Design        `json:"design"`
	Concurrency int           `json:"concurrency"`
	Duration    time.Duration `json:"duration_ns"`
	Acked       int           `json:"acked"`
	Failed      int           `json:"failed"`
	FirstErr    string        `json:"first_error,omitempty"`
	Rate        float64       `json:"acked_per_s"`
	// Latency is each publish until its acknowledgement (broker.Publisher
	// with Acked: one JetStream publish and its PubAck).
	Latency load.Snapshot `json:"latency"`
	// Complete says every acknowledged event reached the edge holding its
	// client (Delta.Edges.Delivered).
	Complete bool   `json:"complete"`
	Leader   string `json:"leader"`
	Delta
}

// historyStream creates the history stream for a design: pkg/broker's
// configuration (through broker.OpenHistory, as an edge creates it) with
// the given replicas and retention (0: the default), or the same with the
// sharded RePublish.
func (r *runner) historyStream(ctx context.Context, nc *nats.Conn, d Design, replicas int, maxAge time.Duration) (jetstream.Stream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	hc := broker.HistoryConfig{Replicas: replicas, MaxAge: maxAge}
	// A cluster that has just started may not count every JetStream peer
	// online yet ("no suitable peers for placement"): retry for a while.
	err = poll(ctx, time.Minute, 250*time.Millisecond, func() error {
		if d.Shards == 0 {
			_, err := broker.OpenHistory(ctx, nc, r.subj, hc)
			return err
		}
		sc := hc.StreamConfig(r.subj)
		src, dst := ShardedRePublish(r.subj, d.Shards)
		sc.RePublish = &jetstream.RePublish{Source: src, Destination: dst}
		_, err := js.CreateStream(ctx, sc)
		return err
	})
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, hc.StreamConfig(r.subj).Name)
	if err != nil {
		return nil, err
	}
	// Wait for a leader with every replica current.
	err = poll(ctx, time.Minute, 50*time.Millisecond, func() error {
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("no stream leader yet")
		}
		for _, p := range info.Cluster.Replicas {
			if !p.Current {
				return fmt.Errorf("replica %s not current", p.Name)
			}
		}
		return nil
	})
	return st, err
}

func streamLeader(ctx context.Context, st jetstream.Stream) string {
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// runRepublish measures the literal design and the largest sharded one.
func (r *runner) runRepublish(ctx context.Context) ([]RepublishRun, error) {
	cfg := r.cfg
	b, err := r.start(ctx, "republish", false, cfg.Edges, true)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	c, edges, conns := b.c, b.edges, b.pubs
	var pubs []*broker.Publisher
	for _, nc := range conns {
		p, err := broker.NewPublisher(nc, &broker.PublisherOptions{Acked: true})
		if err != nil {
			return nil, err
		}
		pubs = append(pubs, p)
	}
	designs := []Design{{}}
	if len(cfg.Shards) > 0 {
		designs = append(designs, Design{Shards: cfg.Shards[len(cfg.Shards)-1]})
	}
	data := payload(cfg.Payload)
	var runs []RepublishRun
	for _, d := range designs {
		st, err := r.historyStream(ctx, conns[0], d, 3, 0)
		if err != nil {
			return runs, fmt.Errorf("%s: history stream: %w", d, err)
		}
		if err := eachEdge(ctx, edges, func(e int, ed *edgeProc) error {
			_, err := ed.do(ctx, request{Op: "sub", Design: d, Clients: Span{From: 0, To: cfg.RepublishClients, Mod: len(edges), Rem: e}})
			return err
		}); err != nil {
			return runs, err
		}
		if err := r.quiet(ctx, c); err != nil {
			return runs, err
		}
		for _, conc := range cfg.RepublishConcurrency {
			run, err := r.republishLevel(ctx, c, edges, pubs, d, conc, data)
			if err != nil {
				return runs, err
			}
			run.Leader = streamLeader(ctx, st)
			runs = append(runs, *run)
			r.logf("republish %s, %d in flight: %d acked (%.0f/s), p50 %v p99 %v, edges delivered %d (complete %v), node CPU %v (leader %s)",
				d, conc, run.Acked, run.Rate, run.Latency.Quantile(0.5).Round(time.Microsecond), run.Latency.Quantile(0.99).Round(time.Microsecond),
				run.Edges.Delivered, run.Complete, sumDur(run.NodeCPU).Round(time.Millisecond), run.Leader)
		}
		if err := eachEdge(ctx, edges, func(e int, ed *edgeProc) error {
			_, err := ed.do(ctx, request{Op: "unsub", Design: d, Clients: Span{From: 0, To: cfg.RepublishClients, Mod: len(edges), Rem: e}})
			return err
		}); err != nil {
			return runs, err
		}
		js, _ := jetstream.New(conns[0])
		if err := js.DeleteStream(ctx, st.CachedInfo().Config.Name); err != nil {
			return runs, err
		}
	}
	return runs, nil
}

// republishLevel runs conc publishers for the configured time.
func (r *runner) republishLevel(ctx context.Context, c *Cluster, edges []*edgeProc, pubs []*broker.Publisher, d Design, conc int, data []byte) (*RepublishRun, error) {
	cfg := r.cfg
	hist := load.NewHistogram(conc)
	var mu sync.Mutex
	run := &RepublishRun{Design: d, Concurrency: conc}
	var err error
	run.Delta, err = r.measure(ctx, c, edges, func(before mark) error {
		start := time.Now()
		deadline := start.Add(cfg.RepublishTime)
		var wg sync.WaitGroup
		for g := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pub := pubs[g%len(pubs)]
				rng := rand.New(rand.NewPCG(cfg.Seed, uint64(g)))
				acked, failed := 0, 0
				var firstErr error
				for time.Now().Before(deadline) && ctx.Err() == nil {
					id := r.pop.ID(rng.IntN(cfg.RepublishClients))
					t0 := time.Now()
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := pub.Publish(pctx, broker.Target{Name: r.pop.Name, ClientIDs: []string{id}}, broker.Event{Data: data})
					cancel()
					if err != nil {
						failed++
						if firstErr == nil {
							firstErr = err
						}
						continue
					}
					hist.Record(time.Since(t0), g)
					acked++
				}
				mu.Lock()
				defer mu.Unlock()
				run.Acked += acked
				run.Failed += failed
				if firstErr != nil && run.FirstErr == "" {
					run.FirstErr = firstErr.Error()
				}
			}()
		}
		wg.Wait()
		run.Duration = time.Since(start)
		// Every acknowledged event reaches the edge holding its client.
		run.Complete = waitEdges(ctx, edges, before.edges, time.Minute, "delivered", func(got Counters) (uint64, uint64) {
			return got.Delivered, uint64(run.Acked)
		}) == nil
		return nil
	})
	if err != nil {
		return nil, err
	}
	run.Rate = float64(run.Acked) / run.Duration.Seconds()
	run.Latency = hist.Snapshot()
	return run, nil
}
