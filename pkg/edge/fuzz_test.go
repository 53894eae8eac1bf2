package edge

import (
	"context"
	"encoding/json"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/pkg/broker"
)

// countTransport counts the frames written to one connection.
type countTransport struct{ frames atomic.Int64 }

func (t *countTransport) write(bufs [][]byte) error { t.frames.Add(int64(len(bufs))); return nil }
func (t *countTransport) end(CloseReason) error     { return nil }
func (t *countTransport) close()                    {}

// FuzzReceivePath sends arbitrary NATS messages (subject, headers, body),
// decoded as the feed decodes them, through a real edge's fan-out with
// history on: nothing panics, nothing stalls, and a connection of another
// name keeps receiving. Plain `go test` runs the seeds; `go test -fuzz
// FuzzReceivePath ./pkg/edge` explores.
func FuzzReceivePath(f *testing.F) {
	seeds := []struct {
		subject, k1, v1, k2, v2 string
		data                    string
	}{
		{"herald.live.Fuzz._._", "Nats-Sequence", "7", "Nats-Last-Sequence", "3", "x"},
		{"herald.live.Fuzz.a.f1", "Nats-Sequence", "9", "Herald-Control", "close", ""},
		{"herald.live._._._", "Nats-Sequence", "18446744073709551615", "Herald-Event", "e\r\nid: 1", "a\nb"},
		{"herald.live.Fuzz._._", "Nats-Sequence", "12", "Nats-Last-Sequence", "11", "\xff\xfe"},
		{"herald.sys.conn.Fuzz._", "Herald-Control", "replace", "Herald-Since", "9999999999999999999", ""},
		{"herald.sys.conn.Other.o1", "Herald-Control", "replace", "Herald-Conn", "x", ""},
		{"herald.live.%ZZ._._", "Nats-Sequence", "1", "", "", ""},
		{"herald.live.Fuzz._._", "Nats-Sequence", "20", "Herald-Control", "drain", "x"},
		{"herald.live.Fuzz._._", "Nats-Sequence", "30", "Nats-Last-Sequence", "29", string(make([]byte, 600<<10))},
	}
	for _, s := range seeds {
		f.Add(s.subject, s.k1, s.v1, s.k2, s.v2, []byte(s.data))
	}
	e := fuzzEdge(f, Config{EdgeID: "fuzz", PingInterval: time.Hour, QueueBytes: 256 << 10, History: &broker.HistoryConfig{}})
	open := func(name, group, id string, t transport) *conn {
		c := benchConn(e, name, group, id, t)
		replay, ok := e.start(c, func(string) []byte { return nil })
		if !ok {
			f.Fatalf("%s did not register", name)
		}
		e.begin(c, replay)
		return c
	}
	for _, id := range []string{"f1", "f2"} {
		open("Fuzz", "a", id, &countTransport{})
	}
	probeT := &countTransport{}
	other := open("Other", "g", "o1", probeT)
	live := broker.MustSubjects("").Live()
	probe := uint64(1 << 40) // above any position the stream reaches here
	// A fan-out of the test's own: the edge's feed goroutine owns e.fan
	// (and delivers the edge's connection notices meanwhile).
	fan := newFanout(e)

	f.Fuzz(func(t *testing.T, subject, k1, v1, k2, v2 string, data []byte) {
		m := live.Decode(&nats.Msg{Subject: subject, Header: nats.Header{k1: {v1}, k2: {v2}}, Data: data}, true)
		if m.Seq >= math.MaxUint64-1 {
			return // a position no stream reaches: the probe cannot go after it
		}
		probe = max(probe, m.Seq+1)
		fan.Deliver([]broker.Message{m}) // returns: the fuzzer's deadline catches a stall
		if !other.isOpen() {
			// A close or replace addressed to Other (or every name) is
			// legitimate; Other connects again.
			other = open("Other", "g", "o1", probeT)
		}
		before := probeT.frames.Load()
		fan.Deliver([]broker.Message{{Kind: broker.KindEvent, Addr: broker.Address{Name: "Other"}, Event: broker.Event{Data: []byte("probe")}, Seq: probe}})
		probe++
		deadline := time.Now().Add(10 * time.Second)
		for probeT.frames.Load() == before {
			if time.Now().After(deadline) {
				t.Fatalf("after %q (kind %d seq %d), another name stopped receiving", subject, m.Kind, m.Seq)
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// FuzzPublishBody: whatever a producer POSTs to /publish, the edge answers
// with a prepared send or a broker error that maps to a 4xx; it never
// panics, and a prepared send never exceeds the address cap.
func FuzzPublishBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"N","data":"x"}`,
		`[{"name":"N","group":["a","b"],"clientId":"c","id":"1","event":"e","data":{"a":1}},{"name":"N","close":true}]`,
		`{"name":"N","clientId":"","data":1}`,
		`{"allNames":true,"group":"g","data":null}`,
		`{"name":"N","group":[null],"data":[]}`,
		`{"name":"N","data":"x"} trailing`,
		`[]`, `{}`, `"x"`, `{"name":"\u0000","data":1}`,
	} {
		f.Add([]byte(s))
	}
	e := fuzzEdge(f, Config{EdgeID: "fuzz"})
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := decodePublish(body)
		if err != nil {
			return
		}
		for _, it := range items {
			s, err := e.prepare(it)
			if err != nil {
				if status, _ := publishStatus(err); status < 400 || status >= 500 {
					t.Fatalf("input error answered %d: %v", status, err)
				}
				continue
			}
			if s.Len() == 0 || s.Len() > broker.DefaultMaxAddresses {
				t.Fatalf("prepared %d messages for %s", s.Len(), mustJSON(it))
			}
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// fuzzEdge starts an edge on its own NATS server for a fuzz target.
func fuzzEdge(f *testing.F, cfg Config) *Edge {
	srv := natstest.StartServer(f)
	e, err := New(natstest.Connect(f, srv.ClientURL()), cfg, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return e
}
