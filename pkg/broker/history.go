package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// History is the event history: a JetStream stream that stores every event
// subject (<prefix>.ev.>) and republishes each stored message to the live
// subjects (<prefix>.live.>) with its stream sequence. Edges subscribe to the
// live subjects, so every event they deliver has a position, and they replay
// from the stream to fill gaps and to resume clients.
//
// Republished messages carry the headers Nats-Sequence (the position) and
// Nats-Last-Sequence (the position of the previous message on the same
// exact subject). An edge that sees a Nats-Last-Sequence it has not
// delivered to a connection knows that connection missed a message.
type History struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string
	epoch  string
	// mode is how Replay reads (a readMode), chosen when the stream is
	// opened from its replicas and the server's version, and lowered when
	// a server turns out older than it said (a batch answered unbatched,
	// a consumer refused several filters).
	mode atomic.Uint32
}

// HistoryConfig configures the history stream. Zero values mean the
// documented defaults.
type HistoryConfig struct {
	// Stream is the stream name. Default: the subject prefix in upper case
	// with dots as underscores, plus "_EVENTS" ("HERALD_EVENTS").
	Stream string
	// MaxAge is how long events are kept. Default 5 minutes.
	MaxAge time.Duration
	// MaxMsgs caps the number of stored events. Default 1,000,000; -1 unlimited.
	MaxMsgs int64
	// MaxBytes caps the stored bytes. Default 1 GiB; -1 unlimited.
	MaxBytes int64
	// Replicas is the stream's replication factor: 1 for a single node,
	// 3 in a cluster. Default 1.
	Replicas int
	// Memory keeps the stream in memory instead of files. Default false.
	Memory bool
	// DuplicateWindow is the window in which a repeated Nats-Msg-Id is
	// dropped. Default 2 minutes (capped at MaxAge).
	DuplicateWindow time.Duration
}

// Defaults of HistoryConfig.
const (
	DefaultHistoryMaxAge   = 5 * time.Minute
	DefaultHistoryMaxMsgs  = 1_000_000
	DefaultHistoryMaxBytes = 1 << 30
)

// ErrNoHistory is returned when the history stream cannot be reached.
var ErrNoHistory = errors.New("broker: history stream unavailable")

func (c HistoryConfig) withDefaults(s Subjects) HistoryConfig {
	if c.Stream == "" {
		c.Stream = strings.ToUpper(strings.ReplaceAll(s.Prefix(), ".", "_")) + "_EVENTS"
	}
	c.MaxAge = cmp.Or(c.MaxAge, DefaultHistoryMaxAge)
	c.MaxMsgs = cmp.Or(c.MaxMsgs, DefaultHistoryMaxMsgs)
	c.MaxBytes = cmp.Or(c.MaxBytes, DefaultHistoryMaxBytes)
	c.Replicas = cmp.Or(c.Replicas, 1)
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.DuplicateWindow > c.MaxAge {
		c.DuplicateWindow = c.MaxAge
	}
	return c
}

// Validate reports the first bad field.
func (c HistoryConfig) Validate() error {
	switch {
	case c.MaxAge < 0:
		return errors.New("broker: history MaxAge must not be negative")
	case c.Replicas < 0 || c.Replicas > 5:
		return errors.New("broker: history Replicas must be 1 to 5")
	case c.MaxMsgs < -1 || c.MaxBytes < -1:
		return errors.New("broker: history MaxMsgs and MaxBytes must be -1 (unlimited) or positive")
	case strings.ContainsAny(c.Stream, ". *>"):
		return fmt.Errorf("broker: history Stream %q must not contain '.', '*', '>' or spaces", c.Stream)
	}
	return nil
}

// StreamConfig returns the JetStream configuration of the history stream.
func (c HistoryConfig) StreamConfig(s Subjects) jetstream.StreamConfig {
	c = c.withDefaults(s)
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "Herald event history",
		Subjects:    []string{s.EventWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		MaxMsgs:     c.MaxMsgs,
		MaxBytes:    c.MaxBytes,
		Replicas:    c.Replicas,
		Storage:     storage,
		Duplicates:  c.DuplicateWindow,
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: s.EventWildcard(), Destination: s.Live().EventWildcard()},
	}
}

// OpenHistory opens the history stream, creating it when it does not
// exist. An existing stream is used as it is (whoever created it owns its
// limits), but it must store the event subjects and republish them to the
// live subjects, or OpenHistory fails saying what is wrong.
func OpenHistory(ctx context.Context, nc *nats.Conn, s Subjects, cfg HistoryConfig) (*History, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The server's version is known only while connected: an edge that
	// started before NATS was reachable must not take "" for current and
	// open (or create) the stream on a server too old for it.
	if !nc.IsConnected() {
		return nil, fmt.Errorf("%w: NATS is not connected", ErrNoHistory)
	}
	version := nc.ConnectedServerVersion()
	if _, err := chooseReadMode(version, false, 1); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoHistory, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	sc := cfg.StreamConfig(s)
	st, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, sc.Name) // another edge created it first
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", ErrNoHistory, sc.Name, err)
	}
	got := st.CachedInfo().Config
	if rp := got.RePublish; rp == nil || rp.Source != sc.RePublish.Source || rp.Destination != sc.RePublish.Destination {
		return nil, fmt.Errorf("%w: stream %s exists but does not republish %s to %s", ErrNoHistory, sc.Name, sc.RePublish.Source, sc.RePublish.Destination)
	}
	if len(got.Subjects) != 1 || got.Subjects[0] != sc.Subjects[0] {
		return nil, fmt.Errorf("%w: stream %s exists with subjects %v, want [%s]", ErrNoHistory, sc.Name, got.Subjects, sc.Subjects[0])
	}
	// Direct gets may be answered by any replica, and a lagging follower
	// would leave a replay short; with one replica there is only the leader.
	mode, err := chooseReadMode(version, got.AllowDirect, got.Replicas)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoHistory, err)
	}
	h := &History{nc: nc, js: js, stream: st, name: sc.Name}
	h.mode.Store(uint32(mode))
	h.epoch = epochOf(st.CachedInfo())
	return h, nil
}

// epochOf identifies one incarnation of the stream: a stream deleted and
// created again starts a new epoch, and positions of the old one are void.
func epochOf(info *jetstream.StreamInfo) string {
	if info == nil {
		return "0"
	}
	return strconv.FormatInt(info.Created.UnixMilli(), 36)
}

// Name returns the stream name.
func (h *History) Name() string { return h.name }

// HistoryState is where the stream stands.
type HistoryState struct {
	Epoch    string
	FirstSeq uint64 // oldest stored position (LastSeq+1 when empty)
	LastSeq  uint64 // newest stored position
}

// State asks the server for the stream's current positions.
func (h *History) State(ctx context.Context) (HistoryState, error) {
	info, err := h.stream.Info(ctx)
	if err != nil {
		return HistoryState{}, fmt.Errorf("%w: %w", ErrNoHistory, err)
	}
	if info.Cluster != nil && info.Cluster.Leader == "" {
		// A replica answers for a group that lost its leader (no quorum):
		// nothing can be stored or replayed until one is elected.
		return HistoryState{}, fmt.Errorf("%w: stream %s has no leader", ErrNoHistory, h.name)
	}
	first := info.State.FirstSeq
	if info.State.Msgs == 0 {
		first = info.State.LastSeq + 1
	}
	return HistoryState{Epoch: epochOf(info), FirstSeq: first, LastSeq: info.State.LastSeq}, nil
}

// Stored is one message read back from history.
type Stored struct {
	Seq     uint64
	Subject string // the event subject (<prefix>.ev....)
	Msg     *nats.Msg
}

// Replay calls fn, in order, for every stored message on any of subjects
// (event subjects, wildcards allowed) from position from (inclusive) up to
// at least position upTo, the newest the caller knows of; it may go on to
// the newest message at the time it gets there. It stops early when fn
// returns an error or ctx ends.
//
// On a stream with one replica it reads with batched direct gets, which
// cost the server far less than a consumer per replay (a reconnect storm
// replays thousands of clients at once); otherwise through an ordered
// consumer, which always reads the stream leader. Servers older than
// those features (see MinServerVersion) are read one message per request:
// direct gets with one replica, leader reads with several.
func (h *History) Replay(ctx context.Context, from, upTo uint64, subjects []string, fn func(Stored) error) error {
	if from == 0 {
		from = 1
	}
	if readMode(h.mode.Load()) == readConsumer {
		err := h.replayConsumer(ctx, from, subjects, fn)
		if !errors.Is(err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported) {
			return err
		}
		// A 2.9 server leads the stream: it takes one filter per consumer.
		h.mode.CompareAndSwap(uint32(readConsumer), uint32(readMsgGet))
	}
	return h.replayDirect(ctx, from, upTo, subjects, fn)
}

// ReadMode names how Replay reads the stream ("batched direct gets",
// "direct gets", "ordered consumer" or "message gets"), for logs.
func (h *History) ReadMode() string { return readMode(h.mode.Load()).String() }

// replayConsumer replays through an ordered consumer, to the newest message.
func (h *History) replayConsumer(ctx context.Context, from uint64, subjects []string, fn func(Stored) error) error {
	cons, err := h.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: 5 * time.Second, // a backstop: the consumer is deleted when Replay returns
	})
	if err != nil {
		return fmt.Errorf("%w: replay consumer: %w", ErrNoHistory, err)
	}
	// Each replay's consumer is deleted as soon as it is done: a stream
	// allows a limited number of consumers, and a reconnect storm must not
	// leave thousands of idle ones behind.
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = h.js.DeleteConsumer(dctx, h.name, info.Name) // the inactivity threshold removes it otherwise
			cancel()
		}
	}()
	info := cons.CachedInfo()
	if info != nil && info.NumPending == 0 {
		return nil
	}
	for {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		batch, err := cons.Fetch(256, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			return fmt.Errorf("%w: replay fetch: %v", ErrNoHistory, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				cancel()
				return fmt.Errorf("%w: replay metadata: %v", ErrNoHistory, err)
			}
			nm := &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
			if err := fn(Stored{Seq: meta.Sequence.Stream, Subject: m.Subject(), Msg: nm}); err != nil {
				cancel()
				return err
			}
			if meta.NumPending == 0 {
				cancel()
				return nil
			}
		}
		cancel()
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w: replay fetch: %v", ErrNoHistory, err)
		}
		if got == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			// The consumer still counts messages pending (the last message
			// said so, or its creation did), yet none came: never take that
			// for the end. The caller retries; a replay that ends early
			// would lose events silently.
			return fmt.Errorf("%w: replay consumer stalled with messages pending", ErrNoHistory)
		}
	}
}

// Position is where a client stands in the history: the stream's epoch
// and the sequence of the last event it received.
type Position struct {
	Epoch string
	Seq   uint64
}

// FormatEventID is the SSE id of an event at seq: "<epoch>:<seq>", followed
// by ":<producer id>" when the producer gave one, so that the producer's id
// still reaches the client.
func FormatEventID(epoch string, seq uint64, producerID string) string {
	b := make([]byte, 0, len(epoch)+len(producerID)+22)
	b = append(b, epoch...)
	b = append(b, ':')
	b = strconv.AppendUint(b, seq, 10)
	if producerID != "" {
		b = append(b, ':')
		b = append(b, producerID...)
	}
	return string(b)
}

// ErrBadPosition reports a Last-Event-ID that is not a Herald position.
var ErrBadPosition = errors.New("broker: not a herald event id")

// ParsePosition reads "<epoch>:<seq>[:<producer id>]". The epoch is 1 to 16
// lowercase base-36 characters; seq is a decimal uint64 without sign or
// leading zeros.
func ParsePosition(id string) (Position, error) {
	ep, rest, ok := strings.Cut(id, ":")
	if !ok || len(ep) == 0 || len(ep) > 16 {
		return Position{}, ErrBadPosition
	}
	for i := 0; i < len(ep); i++ {
		if c := ep[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return Position{}, ErrBadPosition
		}
	}
	seqStr, _, _ := strings.Cut(rest, ":")
	if seqStr == "" || len(seqStr) > 20 || (len(seqStr) > 1 && seqStr[0] == '0') {
		return Position{}, ErrBadPosition
	}
	for i := 0; i < len(seqStr); i++ {
		if seqStr[i] < '0' || seqStr[i] > '9' {
			return Position{}, ErrBadPosition
		}
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return Position{}, ErrBadPosition
	}
	return Position{Epoch: ep, Seq: seq}, nil
}
