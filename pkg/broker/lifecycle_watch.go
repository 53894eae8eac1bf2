package broker

import (
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Membership and watching: who publishes the disconnects of an edge that
// died without saying goodbye.
//
// Every edge publishes a heartbeat every PresenceOptions.Heartbeat on
//
//	<prefix>.sys.edge.<edge>.hb    {"edge","inc","seq","conns","lifecycle","ack"}
//
// and, when it stops cleanly (after the disconnects of all its
// connections), <prefix>.sys.edge.<edge>.bye. Every edge listens to all of
// them (one subscription): that is the membership coordinators wait for.
//
// The edges with lifecycle events on form a ring, ordered by edge id; each
// edge is watched by the next Watchers edges of the ring. A watcher keeps
// a mirror of the watched edge's connections: a snapshot it requests on
// <prefix>.sys.snapshot.<edge> (answered in chunks, with the edge's
// lifecycle counter at the time), then the edge's lifecycle events
// (<prefix>.sys.lifecycle.*.<edge>.>, one subscription per watched edge,
// never one per connection). Events are numbered; a heartbeat carries the
// last number, and NATS keeps one publisher's messages in order, so a
// watcher that missed an event knows at the next heartbeat and takes a new
// snapshot.
//
// An edge silent for LostAfter is lost. Its first live watcher in ring
// order publishes <prefix>.sys.edge.<edge>.lost, then a disconnect event
// with reason edge_lost for every connection of its mirror; the next
// watcher waits two heartbeats more and does the same only if no lost
// notice came (so one watcher's death does not lose the events, and two
// watchers do not both publish). A restarted edge (same id, new
// incarnation) is lost at once. An edge that was only cut off from NATS
// and comes back receives the lost notice again until it acknowledges it
// in its heartbeat; it then announces its connections again (connect
// events with "restored": true), since its clients never left.

// Edge notice kinds: the last token of <prefix>.sys.edge.<edge>.<kind>.
const (
	noticeHeartbeat = "hb"
	noticeBye       = "bye"
	noticeLost      = "lost"
)

// HeaderIncarnation names the incarnation of the edge that published a
// lifecycle event: an edge restarted with the same id starts a new one,
// with its own numbering.
const HeaderIncarnation = "Herald-Incarnation"

// EdgeNotice is the subject of an edge's notices of a kind ("hb", "bye", "lost").
func (s Subjects) EdgeNotice(edge, kind string) string {
	return s.sys + "edge." + EscapeToken(edge) + "." + kind
}

// EdgeNotices matches every edge's notices.
func (s Subjects) EdgeNotices() string { return s.sys + "edge.*.*" }

func (s Subjects) snapshotSubject(edge string) string {
	return s.sys + "snapshot." + EscapeToken(edge)
}

// heartbeat is the body of an edge's heartbeat, bye and lost notices
// (By and At only in lost notices: who declared the edge lost, and when,
// in unix nanoseconds).
type heartbeat struct {
	Edge      string `json:"edge"`
	Inc       string `json:"inc"`
	Seq       uint64 `json:"seq,omitempty"`
	Conns     int    `json:"conns,omitempty"`
	Lifecycle bool   `json:"lifecycle,omitempty"`
	Ack       int64  `json:"ack,omitempty"` // the last lost notice about itself the edge answered (its At)
	By        string `json:"by,omitempty"`
	At        int64  `json:"at,omitempty"`
}

// snapshotChunk is one part of an edge's answer to a snapshot request.
type snapshotChunk struct {
	Edge  string            `json:"edge"`
	Inc   string            `json:"inc"`
	Seq   uint64            `json:"seq"`
	Part  int               `json:"part"`
	Last  bool              `json:"last"`
	Conns []json.RawMessage `json:"conns"` // connect events (LifecycleEvent)
}

// snapshotChunkBytes bounds one chunk (the server's max payload bounds it too).
const snapshotChunkBytes = 256 << 10

// snapshotWait bounds the wait for each chunk of a snapshot.
const snapshotWait = 5 * time.Second

// maxMirrorPending bounds the events a watcher holds while its snapshot
// of the edge is in flight; beyond, it takes a new snapshot.
const maxMirrorPending = 1 << 16

// onSnapshot answers a watcher's snapshot request: the lifecycle counter
// first, then every connection, so that every event numbered after the
// counter is one the watcher must apply and every earlier one is reflected
// in the list (an edge indexes a connection before it numbers its connect
// event, and unindexes it before it numbers its disconnect).
func (p *Presence) onSnapshot(m *nats.Msg) {
	if m.Reply == "" || p.life == nil {
		return
	}
	seq := p.life.current()
	limit := min(snapshotChunkBytes, int(p.nc.MaxPayload())-1024)
	chunk := snapshotChunk{Edge: p.edge, Inc: p.inc, Seq: seq, Conns: []json.RawMessage{}}
	size := 0
	send := func(last bool) bool {
		chunk.Last = last
		b, err := json.Marshal(chunk)
		if err != nil {
			return false
		}
		if err := p.nc.Publish(m.Reply, b); err != nil {
			return false
		}
		chunk.Part++
		chunk.Conns, size = chunk.Conns[:0], 0
		return true
	}
	ok := true
	p.o.Source.Range("", "", func(c ConnInfo) {
		if !ok {
			return
		}
		body := appendConnEvent(nil, EventConnect, &c, nil, false, 0)
		if size+len(body) > limit && len(chunk.Conns) > 0 {
			ok = send(false)
		}
		chunk.Conns = append(chunk.Conns, body)
		size += len(body) + 1
	})
	if ok {
		send(true)
	}
}

// watch is the membership and watching loop's state. Every field but ch,
// snaps and the atomics is owned by the loop's goroutine.
type watch struct {
	p     *Presence
	ch    chan *nats.Msg // edge notices and the watched edges' lifecycle events
	snaps chan snapResult

	members  map[string]*member
	mirrors  map[string]*mirror
	lostBy   map[string]*lostRecord // edges this one declared lost, to tell them if they come back
	seenLost map[string]seenLost    // edge → the incarnation someone declared lost
	due      []*pendingLost         // lost edges whose disconnects this one publishes when due
	nextSnap uint64
	lastBeat time.Time
	beatSoon bool

	acked     atomic.Int64 // the last lost notice about this edge it answered
	restoring atomic.Bool
	tasks     sync.WaitGroup // restorations and snapshot fetches
}

// member is another edge as its heartbeats show it.
type member struct {
	inc       string
	last      time.Time
	seq       uint64
	lifecycle bool
	ack       int64
}

// mirror is a watched edge's connections: the connect event of each, by token.
type mirror struct {
	edge, inc string
	sub       *nats.Subscription
	conns     map[string][]byte
	seq       uint64 // the last event applied
	ready     bool   // a snapshot is in: events apply directly
	pending   []mirrorEvent
	snapID    uint64
	retryAt   time.Time // a failed snapshot is retried then (zero: none pending)
}

type mirrorEvent struct {
	seq     uint64
	connect bool
	conn    string
	body    []byte
}

// pendingLost is a lost edge whose disconnects this edge publishes at when
// no other watcher did before.
type pendingLost struct {
	m    *mirror
	at   time.Time
	last time.Time // when the edge was last heard from
}

type lostRecord struct {
	inc        string
	at         int64
	lastNotice time.Time
}

type seenLost struct {
	inc string
	at  time.Time
}

// lostMemory is how long an edge remembers lost edges: a lost edge that
// comes back later than that is not told (its connections stay reported
// lost until they reconnect).
const lostMemory = time.Hour

type snapResult struct {
	edge, inc string
	id        uint64
	seq       uint64
	conns     map[string][]byte
	err       error
}

func newWatch(p *Presence) *watch {
	return &watch{
		p:        p,
		ch:       make(chan *nats.Msg, DefaultFeedBuffer),
		snaps:    make(chan snapResult, 16),
		members:  map[string]*member{},
		mirrors:  map[string]*mirror{},
		lostBy:   map[string]*lostRecord{},
		seenLost: map[string]seenLost{},
	}
}

func (w *watch) subscribe() error {
	s, err := w.p.nc.ChanSubscribe(w.p.subjects.EdgeNotices(), w.ch)
	if err != nil {
		return err
	}
	_ = s.SetPendingLimits(-1, -1)
	w.p.subs = append(w.p.subs, s)
	return nil
}

// loop runs the membership: heartbeats, expiry, watching, lost edges.
func (w *watch) loop() {
	defer close(w.p.done)
	defer w.tasks.Wait()
	tick := time.NewTicker(max(w.p.o.Heartbeat/4, time.Millisecond))
	defer tick.Stop()
	w.beat(time.Now())
	for {
		select {
		case <-w.p.stop:
			for _, mi := range w.mirrors {
				_ = mi.sub.Unsubscribe()
			}
			return
		case m := <-w.ch:
			w.onMsg(m, time.Now())
		case r := <-w.snaps:
			w.onSnapshot(r, time.Now())
		case now := <-tick.C:
			w.onTick(now)
		}
		if w.beatSoon && time.Since(w.lastBeat) > w.p.o.Heartbeat/20 {
			w.beat(time.Now())
		}
	}
}

// beat publishes this edge's heartbeat. With lifecycle events on it is
// numbered under the lifecycle lock, so that it follows every event it counts.
func (w *watch) beat(now time.Time) {
	p := w.p
	w.lastBeat, w.beatSoon = now, false
	hb := heartbeat{Edge: p.edge, Inc: p.inc, Lifecycle: p.life != nil, Ack: w.acked.Load()}
	hb.Conns = p.o.Source.Len()
	subject := p.subjects.EdgeNotice(p.edge, noticeHeartbeat)
	if p.life == nil {
		b, _ := json.Marshal(hb)
		_ = p.nc.Publish(subject, b)
		return
	}
	p.life.mu.Lock()
	hb.Seq = p.life.seq
	b, _ := json.Marshal(hb)
	_ = p.nc.Publish(subject, b)
	p.life.mu.Unlock()
}

// bye publishes this edge's goodbye, after its last lifecycle event, and
// waits (2 s at most: the edge is stopping) until NATS has it; without a
// connection to NATS it waits for nothing (the others find it lost).
func (w *watch) bye() {
	p := w.p
	b, _ := json.Marshal(heartbeat{Edge: p.edge, Inc: p.inc})
	if p.life != nil {
		p.life.mu.Lock()
	}
	_ = p.nc.Publish(p.subjects.EdgeNotice(p.edge, noticeBye), b)
	if p.life != nil {
		p.life.mu.Unlock()
	}
	if p.nc.IsConnected() {
		_ = p.nc.FlushTimeout(2 * time.Second)
	}
}

func (w *watch) onMsg(m *nats.Msg, now time.Time) {
	sys := w.p.subjects.sys
	switch {
	case strings.HasPrefix(m.Subject, sys+"edge."):
		kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		var hb heartbeat
		if json.Unmarshal(m.Data, &hb) != nil || hb.Edge == "" || hb.Inc == "" {
			return
		}
		switch kind {
		case noticeHeartbeat:
			w.onHeartbeat(&hb, now)
		case noticeBye:
			w.onBye(&hb)
		case noticeLost:
			w.onLost(&hb)
		}
	case strings.HasPrefix(m.Subject, sys+"lifecycle."):
		w.onLifecycle(m)
	}
}

func (w *watch) onHeartbeat(hb *heartbeat, now time.Time) {
	if hb.Edge == w.p.edge {
		return
	}
	mem := w.members[hb.Edge]
	if mem != nil && mem.inc != hb.Inc {
		w.gone(hb.Edge, mem, now) // restarted: the old incarnation is dead
		mem = nil
	}
	changed := false
	if mem == nil {
		mem = &member{inc: hb.Inc}
		w.members[hb.Edge] = mem
		changed, w.beatSoon = true, true // let a new edge learn this one now
	}
	changed = changed || mem.lifecycle != hb.Lifecycle
	mem.last, mem.seq, mem.lifecycle, mem.ack = now, hb.Seq, hb.Lifecycle, hb.Ack
	if rec := w.lostBy[hb.Edge]; rec != nil {
		switch {
		case rec.inc != hb.Inc || hb.Ack >= rec.at:
			delete(w.lostBy, hb.Edge)
		case now.Sub(rec.lastNotice) >= w.p.o.Heartbeat:
			// It was cut off, not dead: tell it, so that it announces its connections again.
			rec.lastNotice = now
			w.publishLost(hb.Edge, rec.inc, rec.at)
		}
	}
	if mi := w.mirrors[hb.Edge]; mi != nil && mi.ready && mi.inc == hb.Inc && mi.seq != hb.Seq {
		w.p.log.Info("missed lifecycle events of a watched edge; taking a new snapshot", "watched", hb.Edge, "have", mi.seq, "heartbeat", hb.Seq)
		w.startSnapshot(mi)
	}
	w.publishView()
	if changed {
		w.reassign()
	}
}

func (w *watch) onBye(hb *heartbeat) {
	mem := w.members[hb.Edge]
	if mem == nil || mem.inc != hb.Inc {
		return
	}
	delete(w.members, hb.Edge)
	if mi := w.mirrors[hb.Edge]; mi != nil {
		w.drop(mi)
	}
	w.publishView()
	w.reassign()
}

func (w *watch) onLost(hb *heartbeat) {
	if hb.Edge == w.p.edge {
		if hb.Inc == w.p.inc && hb.At > w.acked.Load() && w.restoring.CompareAndSwap(false, true) {
			w.tasks.Add(1)
			go w.restore(hb.At)
		}
		return
	}
	w.seenLost[hb.Edge] = seenLost{inc: hb.Inc, at: time.Now()}
	w.due = slices.DeleteFunc(w.due, func(pl *pendingLost) bool { return pl.m.edge == hb.Edge && pl.m.inc == hb.Inc })
}

// restore announces every connection of this edge again, after other edges
// reported it lost while its clients stayed connected.
func (w *watch) restore(at int64) {
	defer w.tasks.Done()
	defer w.restoring.Store(false)
	p := w.p
	var conns []ConnInfo
	p.o.Source.Range("", "", func(c ConnInfo) { conns = append(conns, c) })
	for i := range conns {
		_ = p.life.publish(&conns[i], nil, true)
	}
	p.log.Warn("other edges reported this edge lost (it was cut off from NATS); its connections were announced again",
		"connections", len(conns))
	w.acked.Store(at)
}

// onLifecycle applies an event of a watched edge to its mirror.
func (w *watch) onLifecycle(m *nats.Msg) {
	rest := strings.TrimPrefix(m.Subject, w.p.subjects.sys+"lifecycle.")
	ev, rest, _ := strings.Cut(rest, ".")
	tok, _, _ := strings.Cut(rest, ".")
	edge, err := UnescapeToken(tok)
	if err != nil {
		return
	}
	mi := w.mirrors[edge]
	if mi == nil || HeaderValue(m.Header, HeaderIncarnation) != mi.inc {
		return // not watched, another incarnation, or an edge_lost event
	}
	seq, err := strconv.ParseUint(HeaderValue(m.Header, HeaderSeq), 10, 64)
	conn := HeaderValue(m.Header, HeaderConn)
	if err != nil || seq == 0 || conn == "" {
		return
	}
	e := mirrorEvent{seq: seq, connect: ev == EventConnect, conn: conn}
	if e.connect {
		e.body = slices.Clone(m.Data)
	}
	if !mi.ready {
		if mi.retryAt.IsZero() && len(mi.pending) < maxMirrorPending {
			mi.pending = append(mi.pending, e)
		}
		return
	}
	switch {
	case seq <= mi.seq:
	case seq != mi.seq+1:
		w.p.log.Info("missed lifecycle events of a watched edge; taking a new snapshot", "watched", edge, "have", mi.seq, "got", seq)
		w.startSnapshot(mi)
	default:
		mi.apply(e)
	}
}

func (mi *mirror) apply(e mirrorEvent) {
	mi.seq = e.seq
	if e.connect {
		mi.conns[e.conn] = e.body
	} else {
		delete(mi.conns, e.conn)
	}
}

func (w *watch) onTick(now time.Time) {
	if now.Sub(w.lastBeat) >= w.p.o.Heartbeat {
		w.beat(now)
	}
	var lost []string
	for id, mem := range w.members {
		if now.Sub(mem.last) > w.p.o.LostAfter {
			lost = append(lost, id)
		}
	}
	slices.Sort(lost)
	for _, id := range lost {
		w.gone(id, w.members[id], now)
	}
	if len(lost) > 0 {
		w.reassign()
	}
	w.due = slices.DeleteFunc(w.due, func(pl *pendingLost) bool {
		if now.Before(pl.at) {
			return false
		}
		w.publishLostConns(pl, now)
		return true
	})
	for _, mi := range w.mirrors {
		if !mi.retryAt.IsZero() && !now.Before(mi.retryAt) {
			w.startSnapshot(mi)
		}
	}
	for id, s := range w.seenLost {
		if now.Sub(s.at) > lostMemory {
			delete(w.seenLost, id)
		}
	}
	for id, rec := range w.lostBy {
		if now.Sub(time.Unix(0, rec.at)) > lostMemory {
			delete(w.lostBy, id)
		}
	}
	w.publishView()
}

// gone removes a member that went silent or restarted; if this edge
// watched it, the publication of its connections' disconnects is
// scheduled by rank (the first live watcher at once, the next one two
// heartbeats later).
func (w *watch) gone(id string, mem *member, now time.Time) {
	delete(w.members, id)
	mi := w.mirrors[id]
	if mi == nil || mi.inc != mem.inc {
		return
	}
	delete(w.mirrors, id)
	_ = mi.sub.Unsubscribe()
	if !mi.ready {
		w.p.log.Warn("a watched edge was lost before its snapshot arrived; its connections' disconnects are left to its other watchers", "lost", id)
		return
	}
	if w.seenLost[id].inc == mem.inc {
		return // another watcher was faster
	}
	rank := w.rank(id)
	w.due = append(w.due, &pendingLost{m: mi, at: now.Add(time.Duration(rank) * 2 * w.p.o.Heartbeat), last: mem.last})
}

// rank is how many live watching edges come between the lost edge and
// this one in the ring: 0 means this edge publishes at once.
func (w *watch) rank(lost string) int {
	ring := append(w.ring(), lost)
	slices.Sort(ring)
	i := slices.Index(ring, lost)
	n := 0
	for k := 1; k < len(ring); k++ {
		if ring[(i+k)%len(ring)] == w.p.edge {
			return n
		}
		n++
	}
	return n
}

// ring lists the live edges with lifecycle events on, this one included
// when it has them, sorted by id.
func (w *watch) ring() []string {
	var ring []string
	for id, mem := range w.members {
		if mem.lifecycle {
			ring = append(ring, id)
		}
	}
	if w.p.life != nil {
		ring = append(ring, w.p.edge)
	}
	slices.Sort(ring)
	return ring
}

// publishLostConns declares a lost edge and publishes a disconnect event
// with reason edge_lost for each of its connections.
func (w *watch) publishLostConns(pl *pendingLost, now time.Time) {
	p, mi := w.p, pl.m
	if w.seenLost[mi.edge].inc == mi.inc {
		return
	}
	at := now.UnixNano()
	w.seenLost[mi.edge] = seenLost{inc: mi.inc, at: now}
	w.lostBy[mi.edge] = &lostRecord{inc: mi.inc, at: at, lastNotice: now}
	w.publishLost(mi.edge, mi.inc, at)
	d := &disconnect{reason: ReasonEdgeLost, at: pl.last, reportedBy: p.edge}
	n := 0
	var buf []byte
	for token, body := range mi.conns {
		var ev LifecycleEvent
		if json.Unmarshal(body, &ev) != nil {
			continue
		}
		c := ev.ConnInfo
		c.Conn = token
		buf = appendConnEvent(buf[:0], EventDisconnect, &c, d, false, 0)
		m := nats.Msg{Subject: p.subjects.LifecycleSubject(EventDisconnect, c.Edge, c.Name, c.Group, c.ClientID),
			Data: buf, Header: nats.Header{HeaderConn: {token}}}
		if p.nc.PublishMsg(&m) == nil {
			n++
		}
	}
	// No flush here: the loop must not wait on NATS (its heartbeats would
	// be late); nats.go sends what is buffered by itself.
	p.log.Warn("edge lost: published the disconnects of its connections", "lost", mi.edge, "connections", n,
		"silent_for", now.Sub(pl.last).Round(time.Millisecond))
}

func (w *watch) publishLost(edge, inc string, at int64) {
	b, _ := json.Marshal(heartbeat{Edge: edge, Inc: inc, By: w.p.edge, At: at})
	_ = w.p.nc.Publish(w.p.subjects.EdgeNotice(edge, noticeLost), b)
}

// reassign starts watching the edges this one should watch now and stops
// watching the others.
func (w *watch) reassign() {
	want := map[string]bool{}
	if w.p.life != nil {
		ring := w.ring()
		for i, id := range ring {
			if id == w.p.edge {
				continue
			}
			for k := 1; k <= w.p.o.Watchers && k < len(ring); k++ {
				if ring[(i+k)%len(ring)] == w.p.edge {
					want[id] = true
				}
			}
		}
	}
	for id, mi := range w.mirrors {
		if !want[id] {
			w.drop(mi)
		}
	}
	for id := range want {
		if w.mirrors[id] != nil {
			continue
		}
		sub, err := w.p.nc.ChanSubscribe(w.p.subjects.LifecycleOfEdge(id), w.ch)
		if err != nil {
			w.p.log.Warn("cannot watch an edge", "watched", id, "err", err)
			continue
		}
		_ = sub.SetPendingLimits(-1, -1)
		mi := &mirror{edge: id, inc: w.members[id].inc, sub: sub}
		w.mirrors[id] = mi
		w.startSnapshot(mi)
	}
}

func (w *watch) drop(mi *mirror) {
	_ = mi.sub.Unsubscribe()
	delete(w.mirrors, mi.edge)
}

// startSnapshot asks a watched edge for its connections.
func (w *watch) startSnapshot(mi *mirror) {
	w.nextSnap++
	mi.snapID, mi.ready, mi.pending, mi.conns, mi.retryAt = w.nextSnap, false, nil, nil, time.Time{}
	w.tasks.Add(1)
	go w.fetch(mi.edge, mi.inc, mi.snapID)
}

// fetch requests a snapshot and collects its chunks.
func (w *watch) fetch(edge, inc string, id uint64) {
	defer w.tasks.Done()
	p := w.p
	r := snapResult{edge: edge, inc: inc, id: id, conns: map[string][]byte{}}
	r.err = func() error {
		inbox := p.nc.NewRespInbox()
		ch := make(chan *nats.Msg, 4096)
		sub, err := p.nc.ChanSubscribe(inbox, ch)
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		_ = sub.SetPendingLimits(-1, -1)
		if err := p.nc.PublishRequest(p.subjects.snapshotSubject(edge), inbox, nil); err != nil {
			return err
		}
		part := 0
		timer := time.NewTimer(snapshotWait)
		defer timer.Stop()
		for {
			select {
			case <-p.stop:
				return errSnapshot("stopping")
			case <-timer.C:
				return errSnapshot("timed out")
			case m := <-ch:
				var c snapshotChunk
				if err := json.Unmarshal(m.Data, &c); err != nil {
					return err
				}
				if c.Inc != inc || c.Part != part {
					return errSnapshot("answer from another incarnation or out of order")
				}
				part++
				r.seq = c.Seq
				for _, body := range c.Conns {
					var ev struct {
						Conn string `json:"conn"`
					}
					if json.Unmarshal(body, &ev) == nil && ev.Conn != "" {
						r.conns[ev.Conn] = body
					}
				}
				if c.Last {
					return nil
				}
				timer.Reset(snapshotWait)
			}
		}
	}()
	select {
	case w.snaps <- r:
	case <-p.stop:
	}
}

type errSnapshot string

func (e errSnapshot) Error() string { return "snapshot " + string(e) }

func (w *watch) onSnapshot(r snapResult, now time.Time) {
	mi := w.mirrors[r.edge]
	if mi == nil || mi.inc != r.inc || mi.snapID != r.id {
		return
	}
	if r.err != nil {
		w.p.log.Info("snapshot of a watched edge failed; retrying", "watched", r.edge, "err", r.err)
		mi.retryAt = now.Add(w.p.o.Heartbeat)
		mi.pending = nil
		return
	}
	mi.conns, mi.seq = r.conns, r.seq
	pending := mi.pending
	mi.pending = nil
	slices.SortFunc(pending, func(a, b mirrorEvent) int { return cmp.Compare(a.seq, b.seq) })
	for _, e := range pending {
		switch {
		case e.seq <= mi.seq:
		case e.seq != mi.seq+1:
			w.startSnapshot(mi) // a gap in what arrived meanwhile
			return
		default:
			mi.apply(e)
		}
	}
	mi.ready = true
	w.publishView()
}

// publishView copies the members' last heard times for coordinators, and
// the edges this one watches with a complete mirror.
func (w *watch) publishView() {
	v := make(map[string]memberState, len(w.members))
	for id, mem := range w.members {
		v[id] = memberState{last: mem.last}
	}
	var watched []string
	for id, mi := range w.mirrors {
		if mi.ready {
			watched = append(watched, id)
		}
	}
	slices.Sort(watched)
	w.p.viewMu.Lock()
	w.p.view, w.p.watched = v, watched
	w.p.viewMu.Unlock()
}
