// Package checker judges what subscribers received against what publishers
// were told, in the manner of Jepsen's queue checker for NATS: set algebra
// over a recorded history.
//
// Every publish carries a unique value (publisher, counter) and ends ok
// (acknowledged, with its stream position), fail (a definite error: it was
// not stored) or unknown (a timeout or a lost connection: it may have been
// stored). Every subscriber records each event it received, in order, and
// each connection it made.
//
// For each subscriber the checker reports:
//
//   - expected: acknowledged publishes to its name whose position is after
//     the subscriber's start position (the id of its first pode.open);
//   - delivered: distinct values received;
//   - lost: expected values never delivered and not covered by an explicit
//     herald.gap event; lost-middle: lost values with a value of the same
//     publisher delivered both before and after them (the worst kind: the
//     subscriber was clearly receiving that publisher's stream);
//   - explained: expected values not delivered but covered by a herald.gap
//     (the interval from the position before the gap to the gap's id);
//   - duplicated: a value delivered more than once;
//   - reordered: a value delivered at a position at or before one the
//     subscriber had already passed (not counting duplicates);
//   - unexpected: a value never attempted, aimed at another name, or whose
//     publish definitely failed;
//   - recovered: a value delivered whose publish outcome was unknown;
//   - mismatched: a value delivered with a position other than the one its
//     acknowledgement gave (a sign of diverging replicas);
//   - gaps (by reason), reconnects and the longest reconnect (from losing a
//     connection to the first event of the next one);
//   - the longest stall: the longest wait between two consecutive values
//     received, which shows how long a fault held delivery up (the
//     publishers never pause, so in a healthy run it is a few milliseconds).
//
// Positions are (epoch, sequence). A run in which the history stream was
// deleted and created again lists its epochs in History.Epochs, in the
// order they existed, and each acknowledged publish names the epoch that
// stored it; positions then compare by epoch first. A herald.gap into a
// newer epoch covers the rest of every older epoch after the subscriber's
// position and the new epoch up to the gap's id: the documented loss of a
// recreated stream is explained, never ignored. A run with one epoch
// leaves Epochs empty and compares sequences only.
package checker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/herald-push/herald/pkg/broker"
)

// Outcome is how a publish ended for its publisher.
type Outcome string

// Outcomes.
const (
	OK      Outcome = "ok"      // acknowledged: stored at Seq
	Fail    Outcome = "fail"    // a definite error: not stored
	Unknown Outcome = "unknown" // no answer: may or may not be stored
)

// Event types the checker interprets.
const (
	TypeMessage = "message"
	TypeOpen    = "pode.open"
	TypeGap     = "herald.gap"
)

// Publish is one attempted publish of a unique value.
type Publish struct {
	Publisher string  `json:"publisher"`
	N         int64   `json:"n"`
	Target    string  `json:"target"` // the connection name it was sent to
	Outcome   Outcome `json:"outcome"`
	Seq       uint64  `json:"seq,omitempty"`      // stream position from the acknowledgement (OK only)
	Epoch     string  `json:"epoch,omitempty"`    // the stream incarnation that stored it (OK only); see History.Epochs
	Attempts  int     `json:"attempts,omitempty"` // tries it took (retries reuse the message id)
}

// Value is the payload every publish carries: {"p":publisher,"n":counter}.
type Value struct {
	P string `json:"p"`
	N int64  `json:"n"`
}

func (v Value) String() string { return v.P + "/" + strconv.FormatInt(v.N, 10) }

// Payload returns the JSON payload of a value.
func Payload(publisher string, n int64) []byte {
	b, _ := json.Marshal(Value{P: publisher, N: n})
	return b
}

// Event is one event a subscriber received.
type Event struct {
	Conn int       `json:"conn"` // index into Subscriber.Connections
	Type string    `json:"type"`
	ID   string    `json:"id,omitempty"`
	Data string    `json:"data,omitempty"`
	At   time.Time `json:"at"`
}

// Connection is one stream a subscriber opened.
type Connection struct {
	Edge        string    `json:"edge"`
	LastEventID string    `json:"lastEventId,omitempty"` // what the client sent to resume
	DownSince   time.Time `json:"downSince,omitzero"`    // when the previous connection was lost; zero for the first
	Opened      time.Time `json:"opened,omitzero"`       // when its first event arrived; zero if none did
	Closed      time.Time `json:"closed,omitzero"`
	Err         string    `json:"err,omitempty"` // why it ended
	Attempts    int       `json:"attempts"`      // dials it took (refused, failed) including this one
}

// Subscriber is everything one client recorded.
type Subscriber struct {
	ID          string       `json:"id"`
	Kind        string       `json:"kind"` // "sse" or "ws"
	Name        string       `json:"name"` // the connection name it listens on
	Events      []Event      `json:"events"`
	Connections []Connection `json:"connections"`
}

// History is a whole run.
type History struct {
	Publishes   []Publish
	Subscribers []Subscriber
	// Epochs lists the history stream's epochs in the order they existed,
	// when the run recreated the stream. Empty: one epoch, whatever its
	// name, and Publish.Epoch is not read.
	Epochs []string `json:",omitempty"`
}

// SubscriberReport is the verdict on one subscriber.
type SubscriberReport struct {
	Subscriber   string         `json:"subscriber"`
	Kind         string         `json:"kind"`
	Name         string         `json:"name"`
	Start        string         `json:"start"` // the id the subscriber started at
	StartSeq     uint64         `json:"startSeq"`
	StartEpoch   int            `json:"startEpoch,omitempty"` // index into History.Epochs
	LastSeq      uint64         `json:"lastSeq"`              // the position it reached (in epoch LastEpoch)
	LastEpoch    int            `json:"lastEpoch,omitempty"`
	Expected     int            `json:"expected"`
	Delivered    int            `json:"delivered"`
	Lost         int            `json:"lost"`
	LostMiddle   int            `json:"lostMiddle"`
	Explained    int            `json:"explained"`
	Duplicated   int            `json:"duplicated"`
	Reordered    int            `json:"reordered"`
	Unexpected   int            `json:"unexpected"`
	Recovered    int            `json:"recovered"`
	Mismatched   int            `json:"mismatched"`
	SilentEpoch  int            `json:"silentEpoch"` // values from a newer epoch than any gap or pode.open moved it to
	Gaps         int            `json:"gaps"`
	GapReasons   map[string]int `json:"gapReasons,omitempty"`
	Reconnects   int            `json:"reconnects"`
	MaxReconnect time.Duration  `json:"maxReconnectNs"`
	MaxStall     time.Duration  `json:"maxStallNs"`        // longest wait between two consecutive values received
	Samples      []string       `json:"samples,omitempty"` // a few offending values, for debugging
}

// Report is the verdict on a run.
type Report struct {
	Scenario    string             `json:"scenario"`
	Attempted   int                `json:"attempted"`
	Acked       int                `json:"acked"`
	Failed      int                `json:"failed"`
	Unknown     int                `json:"unknown"`
	Retried     int                `json:"retried"` // publishes that needed more than one attempt
	Subscribers []SubscriberReport `json:"subscribers"`
}

const maxSamples = 8

// Check judges a history.
func Check(scenario string, h History) Report {
	r := Report{Scenario: scenario}
	ep := newEpochs(h.Epochs)
	byValue := make(map[Value]*Publish, len(h.Publishes))
	byName := map[string][]*Publish{}
	for i := range h.Publishes {
		p := &h.Publishes[i]
		r.Attempted++
		if p.Attempts > 1 {
			r.Retried++
		}
		switch p.Outcome {
		case OK:
			r.Acked++
			byName[p.Target] = append(byName[p.Target], p)
		case Fail:
			r.Failed++
		default:
			r.Unknown++
		}
		byValue[Value{P: p.Publisher, N: p.N}] = p
	}
	for _, s := range h.Subscribers {
		r.Subscribers = append(r.Subscribers, checkSubscriber(s, ep, byValue, byName[s.Name]))
	}
	return r
}

// position is a place in the history: an epoch (an index into
// History.Epochs, 0 when the run had one) and a sequence in it.
type position struct {
	epoch int
	seq   uint64
}

func (p position) after(q position) bool {
	return p.epoch > q.epoch || (p.epoch == q.epoch && p.seq > q.seq)
}

// epochs maps epoch names to their order; with none listed every name is
// epoch 0.
type epochs map[string]int

func newEpochs(names []string) epochs {
	if len(names) == 0 {
		return nil
	}
	e := make(epochs, len(names))
	for i, n := range names {
		e[n] = i
	}
	return e
}

// index returns the order of an epoch, false for one the run never had.
func (e epochs) index(name string) (int, bool) {
	if e == nil {
		return 0, true
	}
	i, ok := e[name]
	return i, ok
}

// of returns the position of an event id.
func (e epochs) of(id string) (position, error) {
	p, err := broker.ParsePosition(id)
	if err != nil {
		return position{}, err
	}
	i, ok := e.index(p.Epoch)
	if !ok {
		return position{}, fmt.Errorf("epoch %q is not one of the run's", p.Epoch)
	}
	return position{i, p.Seq}, nil
}

// interval is a half-open range of positions (from, to] a gap covers.
type interval struct{ from, to position }

func checkSubscriber(s Subscriber, ep epochs, byValue map[Value]*Publish, acked []*Publish) SubscriberReport {
	rep := SubscriberReport{Subscriber: s.ID, Kind: s.Kind, Name: s.Name}
	sample := func(format string, args ...any) {
		if len(rep.Samples) < maxSamples {
			rep.Samples = append(rep.Samples, fmt.Sprintf(format, args...))
		}
	}
	setStart := func(p position, text string) {
		rep.Start, rep.StartSeq, rep.StartEpoch = text, p.seq, p.epoch
	}

	var (
		started   bool
		pos       position
		start     position
		gaps      []interval
		seenPos   = map[position]bool{}
		lastAt    time.Time // when the previous value arrived
		delivered = map[Value]bool{}
		// per publisher, the counters delivered (for lost-middle)
		perPub = map[string][]int64{}
	)
	for _, ev := range s.Events {
		p, perr := ep.of(ev.ID)
		switch ev.Type {
		case TypeOpen:
			if perr != nil {
				continue // a resuming connection's pode.open carries no id
			}
			if !started {
				started, pos, start = true, p, p
				setStart(p, ev.ID)
			} else if p.epoch > pos.epoch {
				// A fresh start in a newer epoch (no id was sent): what
				// the older epoch still held after pos is given up.
				gaps = append(gaps, interval{pos, p})
				pos = p
			}
			continue
		case TypeGap:
			rep.Gaps++
			if rep.GapReasons == nil {
				rep.GapReasons = map[string]int{}
			}
			var g struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal([]byte(ev.Data), &g)
			rep.GapReasons[g.Reason]++
			if perr != nil {
				sample("gap with a bad id %q: %v", ev.ID, perr)
				continue
			}
			if !started {
				started, pos, start = true, p, p
				setStart(p, ev.ID)
				continue
			}
			if p.after(pos) {
				gaps = append(gaps, interval{pos, p})
				pos = p
			}
			continue
		case TypeMessage:
		default:
			continue // pings, pode.close and other control events
		}
		if !lastAt.IsZero() {
			rep.MaxStall = max(rep.MaxStall, ev.At.Sub(lastAt))
		}
		lastAt = ev.At
		var v Value
		if err := json.Unmarshal([]byte(ev.Data), &v); err != nil || v.P == "" {
			rep.Unexpected++
			sample("unexpected data %q", ev.Data)
			continue
		}
		if perr != nil {
			rep.Unexpected++
			sample("%s with a bad id %q: %v", v, ev.ID, perr)
			continue
		}
		if !started {
			// No position before the first event: it becomes the start.
			p0 := position{p.epoch, p.seq - 1}
			started, pos, start = true, p0, p0
			setStart(p0, "(first event) "+ev.ID)
		}
		pub := byValue[v]
		pubEpoch := 0
		if pub != nil && ep != nil {
			pubEpoch = ep[pub.Epoch]
		}
		switch {
		case pub == nil || pub.Target != s.Name:
			rep.Unexpected++
			sample("%s at %s was never sent to %q", v, ev.ID, s.Name)
		case pub.Outcome == Fail:
			rep.Unexpected++
			sample("%s at %s was delivered but its publish failed", v, ev.ID)
		case pub.Outcome == Unknown:
			if !delivered[v] {
				rep.Recovered++
			}
		case pub.Seq != p.seq || pubEpoch != p.epoch:
			rep.Mismatched++
			sample("%s delivered at %s, acknowledged at %s:%d", v, ev.ID, pub.Epoch, pub.Seq)
		}
		switch {
		case seenPos[p] || delivered[v]:
			rep.Duplicated++
			sample("%s at %s delivered again", v, ev.ID)
		case !p.after(pos):
			rep.Reordered++
			sample("%s at %s delivered after position %d:%d", v, ev.ID, pos.epoch, pos.seq)
		default:
			if p.epoch > pos.epoch {
				rep.SilentEpoch++
				sample("%s at %s: epoch %d without a herald.gap (at %d:%d)", v, ev.ID, p.epoch, pos.epoch, pos.seq)
			}
			pos = p
		}
		seenPos[p] = true
		if !delivered[v] {
			delivered[v] = true
			perPub[v.P] = append(perPub[v.P], v.N)
		}
	}
	rep.LastSeq, rep.LastEpoch = pos.seq, pos.epoch
	rep.Delivered = len(delivered)
	for _, ns := range perPub {
		sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	}

	if started {
		for _, pub := range acked {
			at := position{seq: pub.Seq}
			if ep != nil {
				i, ok := ep.index(pub.Epoch)
				if !ok {
					sample("%s/%d acknowledged in epoch %q, not one of the run's", pub.Publisher, pub.N, pub.Epoch)
					rep.Unexpected++
					continue
				}
				at.epoch = i
			}
			if !at.after(start) {
				continue
			}
			rep.Expected++
			v := Value{P: pub.Publisher, N: pub.N}
			if delivered[v] {
				continue
			}
			if covered(gaps, at) {
				rep.Explained++
				continue
			}
			rep.Lost++
			ns := perPub[v.P]
			i := sort.Search(len(ns), func(i int) bool { return ns[i] > v.N })
			middle := i > 0 && i < len(ns)
			if middle {
				rep.LostMiddle++
			}
			sample("lost %s at %d:%d (middle=%v)", v, at.epoch, at.seq, middle)
		}
	} else {
		rep.Expected, rep.Lost = len(acked), len(acked)
		if rep.Lost > 0 {
			sample("never started: no pode.open id and no event")
		}
	}

	for i, c := range s.Connections {
		if i == 0 || c.Opened.IsZero() {
			continue
		}
		rep.Reconnects++
		if !c.DownSince.IsZero() {
			rep.MaxReconnect = max(rep.MaxReconnect, c.Opened.Sub(c.DownSince))
		}
	}
	return rep
}

func covered(gaps []interval, at position) bool {
	for _, g := range gaps {
		if at.after(g.from) && !at.after(g.to) {
			return true
		}
	}
	return false
}

// Clean reports an error naming every nonzero count among lost,
// duplicated, reordered, unexpected, mismatched and silent epoch.
func (s SubscriberReport) Clean() error {
	var errs []error
	for _, c := range []struct {
		name string
		n    int
	}{{"lost", s.Lost}, {"duplicated", s.Duplicated}, {"reordered", s.Reordered}, {"unexpected", s.Unexpected}, {"mismatched", s.Mismatched}, {"silent-epoch", s.SilentEpoch}} {
		if c.n != 0 {
			errs = append(errs, fmt.Errorf("%s=%d", c.name, c.n))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("subscriber %s: %w (samples: %s)", s.Subscriber, errors.Join(errs...), strings.Join(s.Samples, "; "))
}

// Totals sums the per-subscriber counts.
func (r Report) Totals() SubscriberReport {
	var t SubscriberReport
	t.Subscriber = "TOTAL"
	for _, s := range r.Subscribers {
		t.Expected += s.Expected
		t.Delivered += s.Delivered
		t.Lost += s.Lost
		t.LostMiddle += s.LostMiddle
		t.Explained += s.Explained
		t.Duplicated += s.Duplicated
		t.Reordered += s.Reordered
		t.Unexpected += s.Unexpected
		t.Recovered += s.Recovered
		t.Mismatched += s.Mismatched
		t.SilentEpoch += s.SilentEpoch
		t.Gaps += s.Gaps
		for k, v := range s.GapReasons {
			if t.GapReasons == nil {
				t.GapReasons = map[string]int{}
			}
			t.GapReasons[k] += v
		}
		t.Reconnects += s.Reconnects
		t.MaxReconnect = max(t.MaxReconnect, s.MaxReconnect)
		t.MaxStall = max(t.MaxStall, s.MaxStall)
	}
	return t
}

// Table renders the report as an aligned text table.
func (r Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: publishes attempted=%d acked=%d failed=%d unknown=%d retried=%d\n",
		r.Scenario, r.Attempted, r.Acked, r.Failed, r.Unknown, r.Retried)
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "subscriber\tkind\tstart\texpected\tdelivered\tlost\tlost-mid\tdup\treord\tunexp\trecov\tmism\tsilent-ep\tgaps\texplained\treconn\tmax-reconn\tmax-stall\t")
	row := func(s SubscriberReport) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%s\t\n",
			s.Subscriber, s.Kind, s.StartSeq, s.Expected, s.Delivered, s.Lost, s.LostMiddle, s.Duplicated,
			s.Reordered, s.Unexpected, s.Recovered, s.Mismatched, s.SilentEpoch, gapText(s), s.Explained, s.Reconnects,
			s.MaxReconnect.Round(time.Millisecond), s.MaxStall.Round(time.Millisecond))
	}
	for _, s := range r.Subscribers {
		row(s)
	}
	t := r.Totals()
	t.Kind = "-"
	row(t)
	_ = tw.Flush()
	return b.String()
}

func gapText(s SubscriberReport) string {
	if s.Gaps == 0 {
		return "0"
	}
	keys := make([]string, 0, len(s.GapReasons))
	for k := range s.GapReasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, s.GapReasons[k])
	}
	return strconv.Itoa(s.Gaps) + "(" + strings.Join(parts, ",") + ")"
}

// WriteJSON writes the report, indented, to path.
func (r Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
