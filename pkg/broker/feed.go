package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// Feed is an edge's one way in from NATS. It holds NATS interest for
// exactly the connections the edge serves (reference-counted: the first
// connection of an address subscribes, the last one unsubscribes), reads
// every message in the order the server sent it, decodes each once into a
// Message and hands runs of them to its handler on one goroutine. It also
// tells the handler when messages may have been lost (a slow consumer, a
// reconnect), so that it can repair from history.
//
// Every subscription delivers into one channel, so the handler sees
// messages in server order across all subjects: an event to a name and a
// later close of one of its clients stay in order. nats.go re-establishes
// subscriptions after a reconnect by itself.
type Feed struct {
	nc       *nats.Conn
	events   Subjects // the subjects the edge receives events on (ev, or live with history)
	live     bool     // messages carry stream positions (history on)
	h        FeedHandler
	maxBatch int
	maxBytes int

	ch   chan *nats.Msg
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	subs map[string]*interestSub // guarded by mu
}

type interestSub struct {
	sub  *nats.Subscription
	refs int
}

// FeedHandler receives what a Feed reads.
type FeedHandler interface {
	// Deliver handles a run of decoded messages that were waiting
	// together, in server order, on the feed's goroutine. The slice and
	// the messages' bytes are valid only until Deliver returns. A run of
	// more than one message means the handler is behind: it may queue the
	// whole run before writing anything.
	Deliver(run []Message)
	// Resync reports that messages for the edge's connections may have
	// been lost, and why (ResyncSlowConsumer, ResyncReconnect). It is
	// called on a NATS callback goroutine and must not block.
	Resync(cause string)
}

// Resync causes a Feed reports.
const (
	// ResyncSlowConsumer: the feed's buffer overflowed and NATS dropped messages.
	ResyncSlowConsumer = "slow_consumer"
	// ResyncReconnect: the NATS connection came back; whatever was
	// published while it was away was not received.
	ResyncReconnect = "reconnect"
)

// FeedOptions configures a Feed. Zero values mean the defaults.
type FeedOptions struct {
	// Prefix is the first subject token(s). Default "herald".
	Prefix string
	// Live receives events from the history stream's live subjects, with
	// their stream positions (history on). Default false: events come
	// straight from the event subjects, without positions.
	Live bool
	// Buffer is how many messages may wait between NATS and the handler
	// before NATS drops them (a slow consumer). Default 65536.
	Buffer int
	// MaxRun and MaxRunBytes bound one run handed to Deliver: at most
	// MaxRun messages, and no more once MaxRunBytes of data are in it.
	// Defaults 256 and 256 KiB.
	MaxRun      int
	MaxRunBytes int
}

// Defaults of FeedOptions.
const (
	DefaultFeedBuffer      = 1 << 16
	DefaultFeedMaxRun      = 256
	DefaultFeedMaxRunBytes = 256 << 10
)

// NewFeed starts a feed on nc that hands what it reads to h. It takes
// interest in the sends to every name at once; connections add theirs
// with Join. Stop ends it.
func NewFeed(nc *nats.Conn, o FeedOptions, h FeedHandler) (*Feed, error) {
	if nc == nil || h == nil {
		return nil, errors.New("broker: NewFeed needs a connection and a handler")
	}
	subjects, err := NewSubjects(o.Prefix)
	if err != nil {
		return nil, err
	}
	o.Buffer = cmpOrInt(o.Buffer, DefaultFeedBuffer)
	f := &Feed{
		nc:       nc,
		events:   subjects,
		live:     o.Live,
		h:        h,
		maxBatch: cmpOrInt(o.MaxRun, DefaultFeedMaxRun),
		maxBytes: cmpOrInt(o.MaxRunBytes, DefaultFeedMaxRunBytes),
		ch:       make(chan *nats.Msg, o.Buffer),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		subs:     map[string]*interestSub{},
	}
	if o.Live {
		f.events = subjects.Live()
	}
	f.watch()
	if err := f.acquire(f.events.EventAllNames()); err != nil {
		return nil, err
	}
	go f.loop()
	return f, nil
}

func cmpOrInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Join takes interest in everything a connection with address a receives
// (group lowercased, raw clientId): its name, its group, its clientId, and
// the notices of connections that replace it. Each call must be matched by
// one Leave with the same address. On error nothing is held.
func (f *Feed) Join(a Address) error {
	subjects := f.interest(a)
	for i, s := range subjects {
		if err := f.acquire(s); err != nil {
			for _, done := range subjects[:i] {
				f.release(done)
			}
			return err
		}
	}
	return nil
}

// Leave drops the interest one Join took.
func (f *Feed) Leave(a Address) {
	for _, s := range f.interest(a) {
		f.release(s)
	}
}

// interest lists the subjects Join takes for a. Connection notices use one
// wildcard per name, shared by every connection of the name, rather than
// a subscription per connection: the edge hears the notices for every
// clientId of the names it holds and ignores those it has no connection for.
func (f *Feed) interest(a Address) []string {
	return append(f.events.appendInterest(make([]string, 0, 5), a), f.events.SysConnName(a.Name))
}

func (f *Feed) acquire(subject string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.subs[subject]; ok {
		s.refs++
		return nil
	}
	sub, err := f.nc.ChanSubscribe(subject, f.ch)
	if err != nil {
		return fmt.Errorf("broker: subscribe %q: %w", subject, err)
	}
	// The channel bounds pending messages; disable the per-subscription
	// limits so that overflow shows up in one place.
	_ = sub.SetPendingLimits(-1, -1)
	f.subs[subject] = &interestSub{sub: sub, refs: 1}
	return nil
}

func (f *Feed) release(subject string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.subs[subject]
	if !ok {
		return
	}
	if s.refs--; s.refs > 0 {
		return
	}
	delete(f.subs, subject)
	_ = s.sub.Unsubscribe() // fails only when the connection is closed, which drops it anyway
}

// Subscriptions returns the number of subjects the feed is subscribed to.
func (f *Feed) Subscriptions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *Feed) owns(sub *nats.Subscription) bool {
	if sub == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.subs[sub.Subject]
	return ok && s.sub == sub
}

// Confirm waits until the NATS server has processed every subscription
// taken before the call (a round trip on the connection), bounded by ctx.
func (f *Feed) Confirm(ctx context.Context) error {
	return f.nc.FlushWithContext(ctx)
}

// Connected returns nil while the NATS connection is up, otherwise an
// error with its status.
func (f *Feed) Connected() error {
	if f.nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("NATS not connected (%s)", f.nc.Status())
}

// Stop unsubscribes everything and ends the feed's goroutine; the handler
// is not called after Stop returns. It is idempotent.
func (f *Feed) Stop() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, s := range f.subs {
		_ = s.sub.Unsubscribe()
		delete(f.subs, k)
	}
}

// Closed is closed once the feed's goroutine has ended.
func (f *Feed) Closed() <-chan struct{} { return f.done }

// loop reads the channel and hands runs of decoded messages to the
// handler. With nothing else waiting a message goes alone, so that its
// connections are written at once; with a backlog, the waiting messages
// go together, so that each connection is written once for the run.
func (f *Feed) loop() {
	defer close(f.done)
	run := make([]Message, 0, f.maxBatch)
	for {
		select {
		case <-f.stop:
			return
		case m := <-f.ch:
			run = append(run, f.decode(m))
			size := len(m.Data)
		more:
			for len(run) < f.maxBatch && size < f.maxBytes {
				select {
				case m := <-f.ch:
					run = append(run, f.decode(m))
					size += len(m.Data)
				default:
					break more
				}
			}
			f.h.Deliver(run)
			clear(run)
			run = run[:0]
		}
	}
}

// decode turns a NATS message into a Message, once.
func (f *Feed) decode(m *nats.Msg) Message { return f.events.Decode(m, f.live) }

// watch reports the connection's slow-consumer errors on the feed's
// subscriptions and its reconnects to the handler, keeping any handlers
// already installed on the connection.
func (f *Feed) watch() {
	prevErr := f.nc.Opts.AsyncErrorCB
	f.nc.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) && f.owns(sub) {
			f.h.Resync(ResyncSlowConsumer)
		}
		if prevErr != nil {
			prevErr(nc, sub, err)
		}
	})
	prevReconnect := f.nc.Opts.ReconnectedCB
	f.nc.SetReconnectHandler(func(nc *nats.Conn) {
		select {
		case <-f.stop:
		default:
			f.h.Resync(ResyncReconnect)
		}
		if prevReconnect != nil {
			prevReconnect(nc)
		}
	})
}
