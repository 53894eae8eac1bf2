package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/herald-push/herald/pkg/policy"
)

// Publisher defaults.
const (
	// DefaultMaxDataBytes is the default limit on an event's data.
	DefaultMaxDataBytes = 64 << 10
	// DefaultFlushTimeout bounds the wait for the server's confirmation
	// when the caller's context has no deadline.
	DefaultFlushTimeout = 10 * time.Second
)

// Target selects connections: a Name (required unless AllNames), optional
// Groups and ClientIDs.
//
// Groups and ClientIDs together mean AND (each clientId, only while in that
// group): one subject per (group, clientId) pair. Several groups or
// clientIds publish to each. ClientIDs may be raw or signed
// ("s:<id>.<sig>"); subjects use the raw id (policy.RawID).
type Target struct {
	// Name is the connection name. Required unless AllNames is set, and
	// must then be empty.
	Name string
	// AllNames targets every name. Allowed only when neither the "*" level
	// nor any explicitly configured name's level forbids the send.
	AllNames bool
	// Groups narrows the send to these groups (compared case-insensitively).
	Groups []string
	// ClientIDs narrows the send to these clients (raw or signed).
	ClientIDs []string
}

// PublisherOptions configures a Publisher. A nil *PublisherOptions means
// every default.
type PublisherOptions struct {
	// Prefix is the first subject token(s). Default "herald" (DefaultPrefix).
	Prefix string
	// Levels are the broadcast levels every send is checked against.
	// Default: the zero Levels, which allows every send.
	Levels policy.Levels
	// MaxDataBytes limits an event's data. Default 64 KiB
	// (DefaultMaxDataBytes); negative is invalid. The NATS server's
	// max_payload (1 MiB by default, headers included) applies as well.
	MaxDataBytes int
	// FlushTimeout bounds the wait for the server's confirmation when the
	// context passed to Publish or Close has no deadline. Default 10 s
	// (DefaultFlushTimeout).
	FlushTimeout time.Duration
	// Acked publishes through JetStream: Publish and Close return only when
	// the history stream has stored every message (a PubAck), so success
	// means the event can be replayed. Each message gets a unique
	// Nats-Msg-Id, reused when the Publisher retries (for example while the
	// stream elects a leader), so a retry is stored once. A wait that ends
	// without an answer is CodeUnknown. Use it when history is on. Default
	// false: core NATS publish and a flush.
	Acked bool
}

// Publisher sends events and close commands to Herald connections through
// NATS. It is safe for concurrent use. It does not own the connection:
// closing the *nats.Conn is the caller's job.
type Publisher struct {
	nc           *nats.Conn
	js           jetstream.JetStream // non-nil when acked
	subjects     Subjects
	levels       policy.Levels
	levelNames   []string // explicitly configured names (and "*"), sorted
	maxData      int
	flushTimeout time.Duration
}

// NewPublisher returns a Publisher on nc. nil options mean defaults.
// It returns an *Error with CodeInvalid for a nil connection or bad options.
func NewPublisher(nc *nats.Conn, o *PublisherOptions) (*Publisher, error) {
	if nc == nil {
		return nil, invalid("nc", errors.New("nil *nats.Conn"))
	}
	var opts PublisherOptions
	if o != nil {
		opts = *o
	}
	subjects, err := NewSubjects(opts.Prefix)
	if err != nil {
		return nil, invalid("PublisherOptions.Prefix", err)
	}
	if opts.MaxDataBytes < 0 {
		return nil, invalid("PublisherOptions.MaxDataBytes", fmt.Errorf("%d is negative", opts.MaxDataBytes))
	}
	if opts.MaxDataBytes == 0 {
		opts.MaxDataBytes = DefaultMaxDataBytes
	}
	if opts.FlushTimeout < 0 {
		return nil, invalid("PublisherOptions.FlushTimeout", fmt.Errorf("%v is negative", opts.FlushTimeout))
	}
	if opts.FlushTimeout == 0 {
		opts.FlushTimeout = DefaultFlushTimeout
	}
	var names []string
	for n := range opts.Levels.Map() {
		names = append(names, n)
	}
	slices.Sort(names)
	var js jetstream.JetStream
	if opts.Acked {
		if js, err = jetstream.New(nc); err != nil {
			return nil, invalid("nc", err)
		}
	}
	return &Publisher{
		js:           js,
		nc:           nc,
		subjects:     subjects,
		levels:       opts.Levels,
		levelNames:   names,
		maxData:      opts.MaxDataBytes,
		flushTimeout: opts.FlushTimeout,
	}, nil
}

// Subjects returns the subject scheme the publisher uses.
func (p *Publisher) Subjects() Subjects { return p.subjects }

// Addresses validates t, checks it against the broadcast levels and expands
// it into the addresses it publishes to, in order (groups outer, clientIds
// inner), without duplicates (groups compare case-insensitively, clientIds
// by raw id). Address.ClientID is always the raw id.
//
// Invalid input gives an *Error with CodeInvalid whose Field is "name",
// "group" or "clientId" and which wraps the *policy.FieldError. A
// broadcast-level violation gives an *Error with CodeBroadcastLevel wrapping
// the *policy.LevelError. For AllNames the "*" level and every explicitly
// configured name's level must allow the send, so an all-names send never
// reaches a name whose level forbids it.
func (p *Publisher) Addresses(t Target) ([]Address, error) {
	if err := validateTarget(t); err != nil {
		return nil, err
	}
	if err := p.checkLevels(t); err != nil {
		return nil, err
	}
	name := t.Name
	if t.AllNames {
		name = ""
	}
	groups := t.Groups
	if len(groups) == 0 {
		groups = []string{""}
	}
	ids := t.ClientIDs
	if len(ids) == 0 {
		ids = []string{""}
	}
	out := make([]Address, 0, len(groups)*len(ids))
	seen := make(map[string]struct{}, len(groups)*len(ids))
	for _, g := range groups {
		for _, id := range ids {
			a := Address{Name: name, Group: g, ClientID: policy.RawID(id)}
			subj := p.subjects.Event(a)
			if _, dup := seen[subj]; dup {
				continue
			}
			seen[subj] = struct{}{}
			out = append(out, a)
		}
	}
	return out, nil
}

func validateTarget(t Target) error {
	if t.AllNames {
		if t.Name != "" {
			return invalid("name", errors.New("must be empty when AllNames is set"))
		}
	} else if err := policy.ValidateName(t.Name); err != nil {
		return invalid("name", err)
	}
	for i, g := range t.Groups {
		if g == "" {
			// An empty group would widen the send to every group.
			return invalid("group", fmt.Errorf("Groups[%d] is empty", i))
		}
		if err := policy.ValidateGroup(g); err != nil {
			return invalid("group", err)
		}
	}
	for i, id := range t.ClientIDs {
		if id == "" {
			// An empty clientId would widen the send to every client.
			return invalid("clientId", fmt.Errorf("ClientIDs[%d] is empty", i))
		}
		if err := policy.ValidateClientID(id); err != nil {
			return invalid("clientId", err)
		}
	}
	return nil
}

func (p *Publisher) checkLevels(t Target) error {
	hasGroup, hasClient := len(t.Groups) > 0, len(t.ClientIDs) > 0
	if !t.AllNames {
		return levelErr(p.levels.Check(t.Name, hasGroup, hasClient))
	}
	if err := p.levels.Check(policy.AnyName, hasGroup, hasClient); err != nil {
		return levelErr(err)
	}
	for _, n := range p.levelNames {
		if err := p.levels.Check(n, hasGroup, hasClient); err != nil {
			return levelErr(err)
		}
	}
	return nil
}

func levelErr(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: CodeBroadcastLevel, Err: err}
}

// Publish sends ev to every address of t: one NATS message per address
// (NewMsg on Subjects.Event), then waits until the server has received them
// (a flush bounded by ctx, or by FlushTimeout when ctx has no deadline).
// It returns how many messages were handed to the connection.
//
// Errors are *Error values: CodeInvalid (target, "id" or "event"),
// CodeBroadcastLevel, CodeTooLarge (data over MaxDataBytes or the server's
// max payload) and CodeUnavailable (connection closed, flush not confirmed
// before the deadline, ctx done). Input and level errors publish nothing. On
// CodeUnavailable the count says how many messages were handed over; the
// caller cannot tell which of those the server received.
func (p *Publisher) Publish(ctx context.Context, t Target, ev Event) (int, error) {
	if err := policy.ValidateEventID(ev.ID); err != nil {
		return 0, invalid("id", err)
	}
	if err := policy.ValidateEventType(ev.Type); err != nil {
		return 0, invalid("event", err)
	}
	if len(ev.Data) > p.maxData {
		return 0, &Error{Code: CodeTooLarge, Err: fmt.Errorf("data is %d bytes, limit %d", len(ev.Data), p.maxData)}
	}
	addrs, err := p.Addresses(t)
	if err != nil {
		return 0, err
	}
	return p.send(ctx, addrs, func(subject string) *nats.Msg { return NewMsg(subject, ev) })
}

// Close asks the edges to close every connection matching t (each receives
// pode.close first): one NewCloseMsg per address, then a flush as in
// Publish. Targets are validated and level-checked exactly as in Publish.
func (p *Publisher) Close(ctx context.Context, t Target) (int, error) {
	addrs, err := p.Addresses(t)
	if err != nil {
		return 0, err
	}
	return p.send(ctx, addrs, NewCloseMsg)
}

func (p *Publisher) send(ctx context.Context, addrs []Address, msg func(subject string) *nats.Msg) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, &Error{Code: CodeUnavailable, Err: err}
	}
	if p.js != nil {
		return p.sendAcked(ctx, addrs, msg)
	}
	n := 0
	for _, a := range addrs {
		if err := p.nc.PublishMsg(msg(p.subjects.Event(a))); err != nil {
			return n, natsError(err)
		}
		n++
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.flushTimeout)
		defer cancel()
	}
	if err := p.nc.FlushWithContext(ctx); err != nil {
		return n, natsError(err)
	}
	return n, nil
}

// sendAcked publishes each message through JetStream and waits for the
// stream's acknowledgement, retrying with the same Nats-Msg-Id while the
// stream has no leader to answer.
func (p *Publisher) sendAcked(ctx context.Context, addrs []Address, msg func(subject string) *nats.Msg) (int, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.flushTimeout)
		defer cancel()
	}
	n := 0
	for _, a := range addrs {
		m := msg(p.subjects.Event(a))
		if m.Header == nil {
			m.Header = nats.Header{}
		}
		m.Header.Set(jetstream.MsgIDHeader, nuid.Next())
		if err := p.publishAcked(ctx, m); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// publishAcked publishes m until the stream acknowledges it or ctx ends.
// While nobody answers (no stream leader during an election) it retries
// with the same Nats-Msg-Id; once an attempt timed out it may have been
// stored, so giving up then is CodeUnknown rather than CodeUnavailable.
func (p *Publisher) publishAcked(ctx context.Context, m *nats.Msg) error {
	backoff := 25 * time.Millisecond
	maybeStored := false
	for {
		_, err := p.js.PublishMsg(ctx, m, jetstream.WithRetryAttempts(0)) // this loop retries, knowing what was tried
		switch {
		case err == nil:
			return nil
		case errors.Is(err, nats.ErrMaxPayload):
			return &Error{Code: CodeTooLarge, Err: err}
		case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
			// Not stored: no stream leader right now.
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, nats.ErrTimeout):
			maybeStored = true
		default:
			return &Error{Code: CodeUnavailable, Err: err}
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			backoff = min(2*backoff, 500*time.Millisecond)
			continue
		}
		if maybeStored {
			return &Error{Code: CodeUnknown, Err: fmt.Errorf("no acknowledgement from the history stream: %w", err)}
		}
		return &Error{Code: CodeUnavailable, Err: fmt.Errorf("history stream did not answer: %w", err)}
	}
}

func natsError(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return &Error{Code: CodeTooLarge, Err: err}
	}
	return &Error{Code: CodeUnavailable, Err: err}
}
