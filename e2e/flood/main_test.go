package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/edge"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The flood reads a real edge's answers: admissions up to the burst of
// its connection rate, then coded refusals (herald.refused for SSE, close
// 1013 for WebSocket), and nothing it cannot classify.
func TestFloodReadsEdgeAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		ws   float64
	}{{"sse", 0}, {"websocket", 1}, {"mixed", 0.3}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.StartServer(t)
			nc := natstest.Connect(t, srv.ClientURL())
			e, err := edge.New(nc, edge.Config{ConnectRate: 1, ConnectBurst: 10}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(e.Handler())
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = e.Shutdown(ctx)
				hs.CloseClientConnections()
				hs.Close()
			}()
			u, _ := url.Parse(hs.URL)
			rep := flood(config{base: u, name: "/flood", rate: 200, duration: 250 * time.Millisecond, ws: tc.ws,
				inflight: 100, timeout: 3 * time.Second, id: "t"})
			if len(rep.Errors) > 0 || rep.Skipped > 0 {
				t.Fatalf("errors %v, skipped %d: %v", rep.Errors, rep.Skipped, rep.Samples)
			}
			if rep.Admitted < 10 || rep.Admitted > 11 || rep.Refused["rate"] == 0 ||
				rep.Admitted+rep.Refused["rate"] != rep.Attempted || rep.Attempted != rep.Planned || rep.HeldMax != rep.Admitted {
				t.Fatalf("report %+v: want the burst (10, maybe 11) admitted and held, every other attempt refused for rate", rep)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{{}, {"-url", "ftp://x"}, {"-url", "http://127.0.0.1:1", "-ws", "2"}, {"-url", "http://127.0.0.1:1", "-sources", "nope"}} {
		if err := run(args, &out); err == nil {
			t.Errorf("run %v: no error", args)
		}
	}
	// Nothing listens: every attempt fails to dial, and the report says so.
	if err := run([]string{"-url", "http://127.0.0.1:1", "-rate", "100", "-duration", "100ms", "-sources", "127.0.0.1"}, &out); err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Attempted == 0 || rep.Errors["dial_refused"] != rep.Attempted {
		t.Fatalf("report %+v: want every attempt refused at dial", rep)
	}
}
