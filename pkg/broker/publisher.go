package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	// DefaultMaxAddresses is the default limit on the addresses one send
	// expands to.
	DefaultMaxAddresses = 1024
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
	// MaxAddresses caps how many addresses one send may expand to
	// (groups × clientIds): each is one NATS message. Default 1024
	// (DefaultMaxAddresses); negative is invalid.
	MaxAddresses int
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
	maxAddrs     int
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
	opts.MaxDataBytes = cmp.Or(opts.MaxDataBytes, DefaultMaxDataBytes)
	if opts.MaxAddresses < 0 {
		return nil, invalid("PublisherOptions.MaxAddresses", fmt.Errorf("%d is negative", opts.MaxAddresses))
	}
	opts.MaxAddresses = cmp.Or(opts.MaxAddresses, DefaultMaxAddresses)
	if opts.FlushTimeout < 0 {
		return nil, invalid("PublisherOptions.FlushTimeout", fmt.Errorf("%v is negative", opts.FlushTimeout))
	}
	opts.FlushTimeout = cmp.Or(opts.FlushTimeout, DefaultFlushTimeout)
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
		maxAddrs:     opts.MaxAddresses,
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
// reaches a name whose level forbids it. A target that expands to more than
// MaxAddresses addresses gives CodeTooLarge.
func (p *Publisher) Addresses(t Target) ([]Address, error) {
	var out []Address
	err := p.expand(t, func(a Address, _ string) { out = append(out, a) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// expand checks t and calls add once per distinct address with its subject,
// computed once.
func (p *Publisher) expand(t Target, add func(a Address, subject string)) error {
	if err := validateTarget(t); err != nil {
		return err
	}
	if err := p.checkLevels(t); err != nil {
		return err
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
	if n := len(groups) * len(ids); n > p.maxAddrs {
		return &Error{Code: CodeTooLarge, Err: fmt.Errorf("the send expands to %d addresses (%d groups × %d clientIds), limit %d", n, len(groups), len(ids), p.maxAddrs)}
	}
	seen := make(map[string]struct{}, len(groups)*len(ids))
	for _, g := range groups {
		for _, id := range ids {
			a := Address{Name: name, Group: g, ClientID: policy.RawID(id)}
			subj := p.subjects.Event(a)
			if _, dup := seen[subj]; dup {
				continue
			}
			seen[subj] = struct{}{}
			add(a, subj)
		}
	}
	return nil
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
			return invalid("group", fmt.Errorf("group %d of %d is empty", i+1, len(t.Groups)))
		}
		if err := policy.ValidateGroup(g); err != nil {
			return invalid("group", err)
		}
	}
	for i, id := range t.ClientIDs {
		if id == "" {
			// An empty clientId would widen the send to every client.
			return invalid("clientId", fmt.Errorf("clientId %d of %d is empty", i+1, len(t.ClientIDs)))
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

// Prepared is a checked send: an event (or a close) and the subjects it
// goes to, each computed once. Prepare and PrepareClose build it; Send
// sends it. A Prepared may be sent more than once.
type Prepared struct {
	subjects []string
	ev       Event
	close    bool
}

// Len returns how many NATS messages the send publishes.
func (s *Prepared) Len() int { return len(s.subjects) }

// Prepare checks a send of ev to t exactly as Publish does and returns it
// ready to Send; it publishes nothing. Errors are those of Publish's input
// checks: CodeInvalid, CodeBroadcastLevel and CodeTooLarge.
func (p *Publisher) Prepare(t Target, ev Event) (*Prepared, error) {
	if err := policy.ValidateEventID(ev.ID); err != nil {
		return nil, invalid("id", err)
	}
	if err := policy.ValidateEventType(ev.Type); err != nil {
		return nil, invalid("event", err)
	}
	if len(ev.Data) > p.maxData {
		return nil, &Error{Code: CodeTooLarge, Err: fmt.Errorf("data is %d bytes, limit %d", len(ev.Data), p.maxData)}
	}
	return p.prepare(t, ev, false)
}

// PrepareClose checks a close of the connections matching t, as Close
// does, and returns it ready to Send.
func (p *Publisher) PrepareClose(t Target) (*Prepared, error) {
	return p.prepare(t, Event{}, true)
}

func (p *Publisher) prepare(t Target, ev Event, close bool) (*Prepared, error) {
	s := &Prepared{ev: ev, close: close}
	if err := p.expand(t, func(_ Address, subject string) { s.subjects = append(s.subjects, subject) }); err != nil {
		return nil, err
	}
	return s, nil
}

// Publish sends ev to every address of t: one NATS message per address
// (NewMsg on Subjects.Event), then waits until the server has received them
// (a flush bounded by ctx, or by FlushTimeout when ctx has no deadline).
// It returns how many messages were handed to the connection.
//
// Errors are *Error values: CodeInvalid (target, "id" or "event"),
// CodeBroadcastLevel, CodeTooLarge (data over MaxDataBytes or the server's
// max payload, or a target of more than MaxAddresses addresses) and
// CodeUnavailable (connection closed, flush not confirmed before the
// deadline, ctx done). Input and level errors publish nothing. On
// CodeUnavailable the count says how many messages were handed over; the
// caller cannot tell which of those the server received.
func (p *Publisher) Publish(ctx context.Context, t Target, ev Event) (int, error) {
	s, err := p.Prepare(t, ev)
	if err != nil {
		return 0, err
	}
	return p.Send(ctx, s)
}

// Close asks the edges to close every connection matching t (each receives
// pode.close first): one NewCloseMsg per address, then a flush as in
// Publish. Targets are validated and level-checked exactly as in Publish.
func (p *Publisher) Close(ctx context.Context, t Target) (int, error) {
	s, err := p.PrepareClose(t)
	if err != nil {
		return 0, err
	}
	return p.Send(ctx, s)
}

// Send publishes prepared sends in order and waits as Publish does: for
// the server to have received them, or with Acked for the history stream
// to have stored each. It returns how many messages were handed over (with
// Acked: stored); errors are CodeTooLarge, CodeUnavailable and CodeUnknown.
func (p *Publisher) Send(ctx context.Context, sends ...*Prepared) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, &Error{Code: CodeUnavailable, Err: err}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.flushTimeout)
		defer cancel()
	}
	n := 0
	for _, s := range sends {
		for _, subject := range s.subjects {
			m := NewMsg(subject, s.ev)
			if s.close {
				m = NewCloseMsg(subject)
			}
			var err error
			if p.js != nil {
				if m.Header == nil {
					m.Header = nats.Header{}
				}
				m.Header.Set(jetstream.MsgIDHeader, nuid.Next())
				err = p.publishAcked(ctx, m)
			} else if err = p.nc.PublishMsg(m); err != nil {
				err = natsError(err)
			}
			if err != nil {
				return n, err
			}
			n++
		}
	}
	if p.js == nil {
		if err := p.nc.FlushWithContext(ctx); err != nil {
			return n, natsError(err)
		}
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

// AnnounceConn tells every edge that a connection with this name and
// clientId opened (conn is its cluster-wide token, since its connect time
// in unix nanoseconds), so that they close the one it replaces. The notice
// goes to a system subject, never into history; it is not flushed.
func (p *Publisher) AnnounceConn(name, clientID, conn string, since int64) error {
	m := &nats.Msg{Subject: p.subjects.SysConn(name, clientID), Header: nats.Header{
		HeaderControl: {ControlReplace},
		HeaderConn:    {conn},
		HeaderSince:   {strconv.FormatInt(since, 10)},
	}}
	if err := p.nc.PublishMsg(m); err != nil {
		return natsError(err)
	}
	return nil
}

// PublishInbound publishes a message a WebSocket client sent, on the
// inbound subject of the sender's verified address (group as the client
// gave it, raw clientId), with the sender's identity in the
// HeaderSender* headers. It is not flushed.
func (p *Publisher) PublishInbound(sender Address, body []byte) error {
	m := nats.NewMsg(p.subjects.Inbound(sender))
	m.Header.Set(HeaderSenderName, sender.Name)
	if sender.Group != "" {
		m.Header.Set(HeaderSenderGroup, sender.Group)
	}
	m.Header.Set(HeaderSenderClientID, sender.ClientID)
	m.Data = body
	if err := p.nc.PublishMsg(m); err != nil {
		return natsError(err)
	}
	return nil
}

func natsError(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return &Error{Code: CodeTooLarge, Err: err}
	}
	return &Error{Code: CodeUnavailable, Err: err}
}
