package checker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const epoch = "m1abc"

// hist builds synthetic histories: publishes are acked at consecutive
// positions starting after base, in the order added.
type hist struct {
	t    *testing.T
	seq  uint64
	pubs []Publish
}

func (h *hist) ok(p string, n int64, target string) uint64 {
	h.seq++
	h.pubs = append(h.pubs, Publish{Publisher: p, N: n, Target: target, Outcome: OK, Seq: h.seq})
	return h.seq
}

func (h *hist) unknown(p string, n int64, target string, stored bool) uint64 {
	if stored {
		h.seq++
	}
	h.pubs = append(h.pubs, Publish{Publisher: p, N: n, Target: target, Outcome: Unknown})
	return h.seq
}

func (h *hist) fail(p string, n int64, target string) {
	h.pubs = append(h.pubs, Publish{Publisher: p, N: n, Target: target, Outcome: Fail})
}

func id(seq uint64) string { return epoch + ":" + itoa(seq) }

func itoa(u uint64) string {
	b, _ := json.Marshal(u)
	return string(b)
}

// sub records events for a subscriber of name "feed".
type sub struct {
	s    Subscriber
	now  time.Time
	conn int
}

func newSub(name string) *sub {
	return &sub{s: Subscriber{ID: "s1", Kind: "sse", Name: name}, now: time.Unix(1000, 0)}
}

func (s *sub) connect(lastID string, down time.Duration) *sub {
	c := Connection{Edge: "e", LastEventID: lastID}
	if len(s.s.Connections) > 0 {
		c.DownSince = s.now
		s.now = s.now.Add(down)
	}
	c.Opened = s.now
	s.s.Connections = append(s.s.Connections, c)
	s.conn = len(s.s.Connections) - 1
	return s
}

func (s *sub) ev(typ, id, data string) *sub {
	s.now = s.now.Add(time.Millisecond)
	s.s.Events = append(s.s.Events, Event{Conn: s.conn, Type: typ, ID: id, Data: data, At: s.now})
	return s
}

// open is the first pode.open of a subscriber, at position seq.
func (s *sub) open(seq uint64) *sub { return s.ev(TypeOpen, id(seq), `{}`) }

// resumed is pode.open on a connection that resumes: it carries no id.
func (s *sub) resumed() *sub { return s.ev(TypeOpen, "", `{}`) }

func (s *sub) msg(p string, n int64, seq uint64) *sub {
	return s.ev(TypeMessage, id(seq), string(Payload(p, n)))
}

func (s *sub) gap(reason string, seq uint64) *sub {
	return s.ev(TypeGap, id(seq), `{"reason":"`+reason+`"}`)
}

func check(t *testing.T, h *hist, s *sub) SubscriberReport {
	t.Helper()
	r := Check("test", History{Publishes: h.pubs, Subscribers: []Subscriber{s.s}})
	if len(r.Subscribers) != 1 {
		t.Fatalf("%d subscriber reports", len(r.Subscribers))
	}
	t.Log("\n" + r.Table())
	return r.Subscribers[0]
}

type want struct {
	expected, delivered, lost, lostMiddle, explained, dup, reord, unexp, recov, mism, gaps, reconn int
}

func (w want) compare(t *testing.T, got SubscriberReport) {
	t.Helper()
	g := want{got.Expected, got.Delivered, got.Lost, got.LostMiddle, got.Explained, got.Duplicated,
		got.Reordered, got.Unexpected, got.Recovered, got.Mismatched, got.Gaps, got.Reconnects}
	if g != w {
		t.Fatalf("got  %+v\nwant %+v\nsamples %v", g, w, got.Samples)
	}
}

func TestCleanRunWithResume(t *testing.T) {
	h := &hist{t: t, seq: 10}
	s := newSub("feed").connect("", 0).open(10)
	for n := range int64(5) {
		s.msg("p0", n, h.ok("p0", n, "feed"))
	}
	// Disconnected; five more published; resumed from the last id.
	var seqs []uint64
	for n := int64(5); n < 10; n++ {
		seqs = append(seqs, h.ok("p0", n, "feed"))
	}
	s.connect(id(15), 300*time.Millisecond).resumed()
	for i, seq := range seqs {
		s.msg("p0", int64(5+i), seq)
	}
	got := check(t, h, s)
	want{expected: 10, delivered: 10, reconn: 1}.compare(t, got)
	if got.MaxReconnect != 300*time.Millisecond {
		t.Fatalf("max reconnect %v", got.MaxReconnect)
	}
	// The longest wait between two values spans the reconnect: the last
	// value before it, the reconnect, pode.open, the first value after.
	if want := 300*time.Millisecond + 2*time.Millisecond; got.MaxStall != want {
		t.Fatalf("max stall %v, want %v", got.MaxStall, want)
	}
	if err := got.Clean(); err != nil {
		t.Fatal(err)
	}
}

func TestBeforeStartIsNotExpected(t *testing.T) {
	h := &hist{t: t}
	h.ok("p0", 0, "feed")
	h.ok("p0", 1, "feed")
	s := newSub("feed").connect("", 0).open(2)
	s.msg("p0", 2, h.ok("p0", 2, "feed"))
	want{expected: 1, delivered: 1}.compare(t, check(t, h, s))
}

func TestLostMiddleAndPostfix(t *testing.T) {
	h := &hist{t: t}
	s := newSub("feed").connect("", 0).open(0)
	s.msg("p0", 0, h.ok("p0", 0, "feed"))
	h.ok("p0", 1, "feed") // lost in the middle
	s.msg("p0", 2, h.ok("p0", 2, "feed"))
	h.ok("p0", 3, "feed") // lost at the end
	got := check(t, h, s)
	want{expected: 4, delivered: 2, lost: 2, lostMiddle: 1}.compare(t, got)
	if got.Clean() == nil || !strings.Contains(got.Clean().Error(), "lost=2") {
		t.Fatalf("Clean: %v", got.Clean())
	}
}

func TestOtherNamesDoNotCount(t *testing.T) {
	h := &hist{t: t}
	s := newSub("feed").connect("", 0).open(0)
	s.msg("p0", 0, h.ok("p0", 0, "feed"))
	h.ok("p1", 0, "other") // not for this subscriber
	s.msg("p0", 1, h.ok("p0", 1, "feed"))
	want{expected: 2, delivered: 2}.compare(t, check(t, h, s))
}

func TestDuplicatesAndReorders(t *testing.T) {
	h := &hist{t: t}
	a, b, c := h.ok("p0", 0, "feed"), h.ok("p0", 1, "feed"), h.ok("p0", 2, "feed")
	s := newSub("feed").connect("", 0).open(0)
	s.msg("p0", 0, a).msg("p0", 2, c).msg("p0", 1, b) // 1 after 2: reordered
	s.msg("p0", 2, c)                                 // again: duplicated
	want{expected: 3, delivered: 3, dup: 1, reord: 1}.compare(t, check(t, h, s))
}

func TestReplayedAfterResumeIsDuplicate(t *testing.T) {
	h := &hist{t: t}
	a, b := h.ok("p0", 0, "feed"), h.ok("p0", 1, "feed")
	s := newSub("feed").connect("", 0).open(0).msg("p0", 0, a).msg("p0", 1, b)
	s.connect(id(a), 10*time.Millisecond).resumed().msg("p0", 1, b) // resumed from too far back
	want{expected: 2, delivered: 2, dup: 1, reconn: 1}.compare(t, check(t, h, s))
}

func TestGapExplains(t *testing.T) {
	h := &hist{t: t}
	s := newSub("feed").connect("", 0).open(0)
	s.msg("p0", 0, h.ok("p0", 0, "feed"))
	for n := int64(1); n < 60; n++ {
		h.ok("p0", n, "feed")
	}
	last := h.seq
	// Back after retention: an explicit gap up to the newest position, then live.
	s.connect(id(1), time.Second).resumed().gap("expired", last)
	s.msg("p0", 60, h.ok("p0", 60, "feed"))
	got := check(t, h, s)
	want{expected: 61, delivered: 2, explained: 59, gaps: 1, reconn: 1}.compare(t, got)
	if got.GapReasons["expired"] != 1 {
		t.Fatalf("gap reasons %v", got.GapReasons)
	}
	if err := got.Clean(); err != nil {
		t.Fatal(err)
	}
}

func TestGapDoesNotExplainLaterLoss(t *testing.T) {
	h := &hist{t: t}
	s := newSub("feed").connect("", 0).open(0)
	h.ok("p0", 0, "feed")
	s.gap("expired", 1)   // covers position 1
	h.ok("p0", 1, "feed") // after the gap's position: must arrive
	s.msg("p0", 2, h.ok("p0", 2, "feed"))
	want{expected: 3, delivered: 1, lost: 1, explained: 1, gaps: 1}.compare(t, check(t, h, s))
}

func TestGapAtStart(t *testing.T) {
	// A malformed Last-Event-ID on the very first connection: the gap's id
	// is where the subscriber starts.
	h := &hist{t: t}
	h.ok("p0", 0, "feed")
	s := newSub("feed").connect("garbage", 0).resumed().gap("malformed", 1)
	s.msg("p0", 1, h.ok("p0", 1, "feed"))
	got := check(t, h, s)
	want{expected: 1, delivered: 1, gaps: 1}.compare(t, got)
	if got.StartSeq != 1 {
		t.Fatalf("start %d", got.StartSeq)
	}
}

func TestUnknownFailAndUnexpected(t *testing.T) {
	h := &hist{t: t}
	s := newSub("feed").connect("", 0).open(0)
	s.msg("p0", 0, h.unknown("p0", 0, "feed", true)) // stored although unanswered: recovered
	h.unknown("p0", 1, "feed", false)                // never stored: not expected
	h.fail("p0", 2, "feed")
	s.msg("p0", 2, h.seq+1)                    // a failed publish delivered: unexpected
	s.msg("p9", 0, h.seq+2)                    // never attempted
	s.ev(TypeMessage, id(h.seq+3), `not json`) // not a value
	s.ev(TypeMessage, "no-position", `{"p":"p0","n":0}`)
	s.ev("pode.ping", "", "")
	got := check(t, h, s)
	want{expected: 0, delivered: 3, unexp: 4, recov: 1}.compare(t, got)
}

func TestMismatchedPosition(t *testing.T) {
	h := &hist{t: t}
	seq := h.ok("p0", 0, "feed")
	s := newSub("feed").connect("", 0).open(0).msg("p0", 0, seq+5)
	want{expected: 1, delivered: 1, mism: 1}.compare(t, check(t, h, s))
}

func TestNoStartPosition(t *testing.T) {
	// pode.open without an id: the first event is the start.
	h := &hist{t: t}
	h.ok("p0", 0, "feed")
	s := newSub("feed").connect("", 0).resumed()
	s.msg("p0", 1, h.ok("p0", 1, "feed"))
	got := check(t, h, s)
	want{expected: 1, delivered: 1}.compare(t, got)
	// And a subscriber that never received anything has lost everything.
	empty := newSub("feed").connect("", 0)
	want{expected: 2, lost: 2}.compare(t, check(t, h, empty))
}

func TestReportOutput(t *testing.T) {
	h := &hist{t: t}
	s := newSub("feed").connect("", 0).open(0)
	s.msg("p0", 0, h.ok("p0", 0, "feed"))
	h.fail("p0", 1, "feed")
	h.unknown("p0", 2, "feed", false)
	h.pubs[0].Attempts = 3
	r := Check("demo", History{Publishes: h.pubs, Subscribers: []Subscriber{s.s, s.s}})
	if r.Attempted != 3 || r.Acked != 1 || r.Failed != 1 || r.Unknown != 1 || r.Retried != 1 {
		t.Fatalf("publish counts %+v", r)
	}
	tab := r.Table()
	for _, want := range []string{"scenario demo", "subscriber", "TOTAL", "lost"} {
		if !strings.Contains(tab, want) {
			t.Fatalf("table lacks %q:\n%s", want, tab)
		}
	}
	if tot := r.Totals(); tot.Delivered != 2 || tot.Expected != 2 {
		t.Fatalf("totals %+v", tot)
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.Scenario != "demo" || len(back.Subscribers) != 2 {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

// Epochs: the history stream deleted and created again. Positions restart
// at 1 in the new epoch.

const epoch2 = "m2xyz"

func (h *hist) okIn(ep string, p string, n int64, target string) uint64 {
	seq := h.ok(p, n, target)
	h.pubs[len(h.pubs)-1].Epoch = ep
	return seq
}

func idIn(ep string, seq uint64) string { return ep + ":" + itoa(seq) }

func (s *sub) msgIn(ep, p string, n int64, seq uint64) *sub {
	return s.ev(TypeMessage, idIn(ep, seq), string(Payload(p, n)))
}

func checkEpochs(t *testing.T, h *hist, s *sub) SubscriberReport {
	t.Helper()
	r := Check("test", History{Publishes: h.pubs, Subscribers: []Subscriber{s.s}, Epochs: []string{epoch, epoch2}})
	t.Log("\n" + r.Table())
	return r.Subscribers[0]
}

// recreated builds: epoch 1 positions 1..10 (the subscriber receives 1..5
// of them), then epoch 2 positions 1..5.
func recreated(t *testing.T) (*hist, *sub, []uint64) {
	h := &hist{t: t}
	s := newSub("feed").connect("", 0).open(0)
	for n := range int64(10) {
		seq := h.okIn(epoch, "p0", n, "feed")
		if n < 5 {
			s.msg("p0", n, seq)
		}
	}
	h.seq = 0
	var second []uint64
	for n := int64(10); n < 15; n++ {
		second = append(second, h.okIn(epoch2, "p0", n, "feed"))
	}
	return h, s, second
}

func TestEpochGapExplains(t *testing.T) {
	h, s, second := recreated(t)
	// herald.gap (epoch) to the new stream's position 3, then live.
	s.ev(TypeGap, idIn(epoch2, 3), `{"reason":"epoch"}`)
	s.msgIn(epoch2, "p0", 13, second[3]).msgIn(epoch2, "p0", 14, second[4])
	got := checkEpochs(t, h, s)
	// Expected: every value after the start (10 + 5); explained: the old
	// epoch's tail (5) and the new one up to the gap (3).
	want{expected: 15, delivered: 7, explained: 8, gaps: 1}.compare(t, got)
	if err := got.Clean(); err != nil {
		t.Fatal(err)
	}
	if got.LastEpoch != 1 || got.LastSeq != 5 {
		t.Fatalf("last position %d:%d", got.LastEpoch, got.LastSeq)
	}
}

func TestEpochChangeWithoutGap(t *testing.T) {
	h, s, second := recreated(t)
	s.msgIn(epoch2, "p0", 13, second[3]) // moved on with no herald.gap
	got := checkEpochs(t, h, s)
	// The old epoch's tail and the new one's first three are lost (in the
	// middle), and its last one was never sent.
	want{expected: 15, delivered: 6, lost: 9, lostMiddle: 8}.compare(t, got)
	if got.SilentEpoch != 1 || !strings.Contains(got.Clean().Error(), "silent-epoch=1") {
		t.Fatalf("silent epoch %d, Clean %v", got.SilentEpoch, got.Clean())
	}
}

func TestEpochStalePositions(t *testing.T) {
	h, s, second := recreated(t)
	// A new-stream event labelled with the old epoch (a stale position:
	// mismatched), then, after the gap, an event of the old epoch again
	// (reordered).
	s.msg("p0", 12, second[2]+100)
	s.ev(TypeGap, idIn(epoch2, 3), `{"reason":"epoch"}`)
	s.msg("p0", 9, 10)
	got := checkEpochs(t, h, s)
	if got.Mismatched != 1 || got.Reordered != 1 {
		t.Fatalf("mismatched %d, reordered %d (want 1, 1): %v", got.Mismatched, got.Reordered, got.Samples)
	}
	// An id of an epoch the run never had is unexpected.
	s.msgIn("zz", "p0", 14, second[4])
	if got := checkEpochs(t, h, s); got.Unexpected != 1 {
		t.Fatalf("unexpected %d: %v", got.Unexpected, got.Samples)
	}
}

func TestFreshOpenInNewEpoch(t *testing.T) {
	// A subscriber that comes back without an id (a new session) after
	// the stream was recreated starts again at the new head: what the old
	// epoch held after its position is given up explicitly, by that open.
	h, s, second := recreated(t)
	s.connect("", time.Second).ev(TypeOpen, idIn(epoch2, 4), `{}`)
	s.msgIn(epoch2, "p0", 14, second[4])
	got := checkEpochs(t, h, s)
	want{expected: 15, delivered: 6, explained: 9, reconn: 1}.compare(t, got)
}
