package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs every phase at a tiny size against real nats-server
// processes and checks what each phase must observe: the subscriptions on
// every node, the interest crossing the routes once per peer per change,
// every targeted event delivered exactly where its client is, every
// acknowledged event republished to its edge, every replay complete.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server clusters")
	}
	cfg := smokeConfig()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, &log)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	cfg = rep.Config
	pop := Population{Groups: cfg.Groups}
	per := pop.PerClient()

	if len(rep.Interest) != cfg.Repeat+len(cfg.Shards) {
		t.Fatalf("%d interest runs, want %d", len(rep.Interest), cfg.Repeat+len(cfg.Shards))
	}
	for _, run := range rep.Interest {
		last := run.Memory[len(run.Memory)-1]
		for i, n := range last.Nodes {
			grew := int(n.Subs) - int(run.Baseline[i].Subs)
			if run.Design.Shards == 0 && grew < last.Clients*per {
				t.Errorf("%s: %s holds %d more subscriptions, want at least %d (every per-client subject, local or remote)", run.Design, n.Node, grew, last.Clients*per)
			}
			if run.Design.Shards > 0 && grew > 3*(run.Design.Shards+1)+3*cfg.Groups {
				t.Errorf("%s: %s holds %d more subscriptions: the shard sets should bound it", run.Design, n.Node, grew)
			}
		}
		for _, s := range run.Storms {
			in := s.Route.Interest()
			switch {
			case run.Design.Shards == 0:
				// Each per-client subject is released on one node and
				// taken on another; each change goes to both peers.
				if want := int64(s.Clients * per * 2 * 2); in.Ops != want {
					t.Errorf("literal storm of %d: %d RS+/RS- on the routes, want %d", s.Clients, in.Ops, want)
				}
				if s.EdgeOps != s.Clients*per*2 {
					t.Errorf("literal storm of %d: edges sent %d SUB/UNSUB, want %d", s.Clients, s.EdgeOps, s.Clients*per*2)
				}
			case s.Clients >= 3*run.Design.Shards*8 && in.Ops != 0:
				t.Errorf("%s storm of %d: %d interest changes crossed the routes, want none", run.Design, s.Clients, in.Ops)
			}
			if s.Notices && s.Edges.Notices != uint64(s.Clients*cfg.Edges) {
				t.Errorf("storm with notices: edges received %d notices, want %d", s.Edges.Notices, s.Clients*cfg.Edges)
			}
			if s.Route.Unparsed != 0 {
				t.Errorf("the route proxy could not parse %d bytes", s.Route.Unparsed)
			}
		}
	}

	if len(rep.Fanout) != 1+len(cfg.Shards) {
		t.Fatalf("%d fan-out runs, want %d", len(rep.Fanout), 1+len(cfg.Shards))
	}
	for _, f := range rep.Fanout {
		want := uint64(f.Messages)
		if f.Edges.Delivered != want || f.Edges.Bad != 0 {
			t.Errorf("fan-out %s: delivered %d (bad %d), want %d", f.Design, f.Edges.Delivered, f.Edges.Bad, want)
		}
		if f.Design.Shards == 0 && f.Edges.Dropped != 0 {
			t.Errorf("fan-out literal: %d events reached an edge without their client", f.Edges.Dropped)
		}
		if f.Design.Shards > 0 && f.Edges.Dropped == 0 {
			t.Errorf("fan-out %s: no edge dropped a copy, yet every edge holds every shard", f.Design)
		}
	}

	if len(rep.Republish) == 0 {
		t.Fatal("no republish run")
	}
	for _, r := range rep.Republish {
		if r.Acked == 0 || r.Failed != 0 || !r.Complete {
			t.Errorf("republish %s: acked %d, failed %d (%s), all delivered %v", r.Design, r.Acked, r.Failed, r.FirstErr, r.Complete)
		}
		if r.Edges.Delivered != uint64(r.Acked) {
			t.Errorf("republish %s: edges delivered %d of %d acknowledged events", r.Design, r.Edges.Delivered, r.Acked)
		}
		if r.Leader == "" {
			t.Errorf("republish %s: no stream leader recorded", r.Design)
		}
	}

	seen := map[string]bool{}
	for _, r := range rep.Replay {
		seen[fmt.Sprintf("R%d %s %s", r.Replicas, r.Method, r.Filters)] = true
		res := r.Result
		// Failed attempts are retried, as the edge does; every replay
		// must end complete.
		if res.Replays != r.Clients || res.Short != 0 || res.Errors != 0 || res.Messages != r.Clients*cfg.ReplayMessages {
			t.Errorf("replay R%d %s, %s filters: %d replays of %d clients, %d events (want %d), %d short, %d failed (%v)",
				r.Replicas, r.Reader, r.Filters, res.Replays, r.Clients, res.Messages, r.Clients*cfg.ReplayMessages, res.Short, res.Errors, res.Failures)
		}
	}
	for _, want := range []string{"R3 history edge", "R3 history literal", "R3 direct edge", "R3 direct literal", "R1 history edge", "R1 history literal"} {
		if !seen[want] {
			t.Errorf("no replay storm on %s filters", want)
		}
	}

	m := rep.Model
	if m == nil || m.Units.HeapPerSub.N == 0 || m.Estimate.SubsPerNode != float64(m.Target.Connections*per) {
		t.Errorf("model incomplete: %+v", m)
	}
	sum := Summary(rep)
	for _, want := range []string{"## Interest: memory", "## Fan-out", "## History republish", "## Resume storms", "## Model"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("report does not encode: %v", err)
	}
	if t.Failed() {
		t.Log(log.String())
	}
}

func TestSpanEach(t *testing.T) {
	for _, tc := range []struct {
		span Span
		want []int
	}{
		{Span{From: 0, To: 5}, []int{0, 1, 2, 3, 4}},
		{Span{From: 0, To: 7, Mod: 3, Rem: 1}, []int{1, 4}},
		{Span{From: 5, To: 12, Mod: 3, Rem: 0}, []int{6, 9}},
		{Span{From: 5, To: 12, Mod: 3, Rem: 2}, []int{5, 8, 11}},
		{Span{From: 3, To: 3, Mod: 2}, nil},
	} {
		var got []int
		tc.span.Each(func(i int) { got = append(got, i) })
		if !equalInts(got, tc.want) || tc.span.Len() != len(tc.want) {
			t.Errorf("%+v: got %v, want %v", tc.span, got, tc.want)
		}
	}
}

func TestPlacementSplit(t *testing.T) {
	p := &placement{edges: 3, segs: []segment{{0, 100, 0}}}
	for _, s := range p.split(0, 40) {
		s.shift++
	}
	for _, s := range p.split(20, 100) {
		s.shift++
	}
	want := []segment{{0, 20, 1}, {20, 40, 2}, {40, 100, 1}}
	if len(p.segs) != len(want) {
		t.Fatalf("segments %v, want %v", p.segs, want)
	}
	for i := range want {
		if p.segs[i] != want[i] {
			t.Fatalf("segments %v, want %v", p.segs, want)
		}
	}
	// Client 25 has shift 2: on edge (25+2) mod 3 = 0.
	if sp := p.spanOn(&p.segs[1], 0); !containsIdx(sp, 25) {
		t.Errorf("span %+v on edge 0 lacks client 25", sp)
	}
}

func TestProtoCounter(t *testing.T) {
	p := &routeProxy{}
	pc := protoCounter{p: p}
	stream := "INFO {\"a\":1}\r\nRS+ $G herald.live.x._.id1\r\nRMSG $G foo 5\r\nhello\r\nHMSG $G bar + _INBOX.1 4 9\r\nab\r\ncdefg\r\nRS- $G herald.live.x._.id1\r\nPING\r\n"
	// Fed a byte at a time: every split point must parse the same.
	for i := 0; i < len(stream); i++ {
		pc.feed([]byte{stream[i]})
	}
	tr := p.traffic()
	for op, n := range map[string]int64{"INFO": 1, "RS+": 1, "RS-": 1, "RMSG": 1, "HMSG": 1, "PING": 1} {
		if tr.Ops[op].Ops != n {
			t.Errorf("%s: %d, want %d (%+v)", op, tr.Ops[op].Ops, n, tr.Ops)
		}
	}
	if got := tr.Ops["RMSG"].Bytes; got != int64(len("RMSG $G foo 5\r\nhello\r\n")) {
		t.Errorf("RMSG bytes %d", got)
	}
	if tr.Unparsed != 0 || tr.Ops["other"].Ops != 0 {
		t.Errorf("unparsed %d, other %d", tr.Unparsed, tr.Ops["other"].Ops)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func containsIdx(s Span, x int) bool {
	found := false
	s.Each(func(i int) { found = found || i == x })
	return found
}
