package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/herald-push/herald/pkg/policy"
)

// Local streams (Pode's -Scope Local and Send-PodeSseEvent -FromEvent): a
// connection that is not addressable by name, group or clientId. Its
// events come from one backend, in answer to one request, and the
// connection lives as long as that request does.
//
//	request  <prefix>.local.<name>  JSON LocalRequest; reply: the stream's
//	                                subject, <prefix>.local-stream.<id> (a
//	                                random id); header Herald-Cancel: the
//	                                subject the edge publishes to if the stream
//	                                ends on its side, <prefix>.local-stream.<id>.cancel
//	events   to the reply subject   one message per event, the envelope of
//	                                every Herald event (Herald-Event, Herald-Id
//	                                headers; the body is the data)
//	keep-alive                      header Herald-Control: keepalive (nothing is sent on)
//	end                             an empty message with no Herald-Event, or
//	                                header Herald-Control: end
//
// The edge sends pode.open when the connection opens, each event as it
// arrives, and pode.close after the end marker; then the connection ends.
// No responder, a backend silent for longer than the edge's idle timeout,
// and a client that goes away each end the stream; in the last two cases
// the edge publishes an empty message to the Herald-Cancel subject, so
// that the backend can stop. ServeLocal is the Go helper for backends.
//
// A stream has its own subjects, not the edge's inbox: a backend sends
// many messages to it (more than the one answer a NATS server lets a
// responder send, allow_responses) and reads its cancel, and the edge's
// inbox carries what no backend may read or write (replays of every
// event). The backend role may publish to <prefix>.local-stream.* and
// subscribe to <prefix>.local-stream.*.cancel; the edge role the reverse.

// HeaderCancel carries, on a Local-stream request, the subject the edge
// publishes to when the stream ends before the backend ended it.
const HeaderCancel = "Herald-Cancel"

// Control values of HeaderControl on a Local stream's replies.
const (
	ControlKeepAlive = "keepalive" // the backend is alive; nothing is delivered
	ControlEnd       = "end"       // the stream is over
)

// LocalRequest is the body of a Local-stream request: the HTTP request
// (as an AuthRequest describes it) with the connection's identity as
// granted (Name, Group, raw ClientID) and, when the connect mode knows
// it, the app's user.
type LocalRequest struct {
	AuthRequest
	// Subject is the token's sub, or what the auth backend called the user.
	Subject string `json:"subject,omitempty"`
}

// Tokens of the Local streams' own subjects.
const (
	localStreamToken = "local-stream"
	localCancelToken = "cancel"
)

// localStream is the subject of the Local stream id's events:
// <prefix>.local-stream.<id>.
func (s Subjects) localStream(id string) string { return s.prefix + "." + localStreamToken + "." + id }

// localCancel is the subject of the Local stream id's cancel:
// <prefix>.local-stream.<id>.cancel.
func (s Subjects) localCancel(id string) string { return s.localStream(id) + "." + localCancelToken }

// Local returns the subject of Local-stream requests for name:
// <prefix>.local.<name>.
func (s Subjects) Local(name string) string { return s.prefix + ".local." + EscapeToken(name) }

// LocalAll is the wildcard over every name's Local-stream requests.
func (s Subjects) LocalAll() string { return s.prefix + ".local.*" }

// LocalKind says what a Local stream's reply is.
type LocalKind uint8

// Reply kinds.
const (
	LocalEvent     LocalKind = iota // an event to deliver
	LocalKeepAlive                  // the backend is alive
	LocalEnd                        // the backend ended the stream
)

// LocalReply is one decoded reply of a Local stream.
type LocalReply struct {
	Kind  LocalKind
	Event Event
}

// ErrLocalEnded is returned by LocalStream.Next after the end marker.
var ErrLocalEnded = errors.New("broker: local stream ended")

// LocalClient opens Local streams for an edge.
type LocalClient struct {
	nc       *nats.Conn
	subjects Subjects
}

// NewLocalClient returns a LocalClient on nc under prefix.
func NewLocalClient(nc *nats.Conn, prefix string) (*LocalClient, error) {
	if nc == nil {
		return nil, invalid("nc", errors.New("nil *nats.Conn"))
	}
	subjects, err := NewSubjects(prefix)
	if err != nil {
		return nil, invalid("prefix", err)
	}
	return &LocalClient{nc: nc, subjects: subjects}, nil
}

// LocalStream is the edge's side of one Local stream: a subscription to
// the stream's subject. Next reads it; Stop releases it.
type LocalStream struct {
	nc     *nats.Conn
	sub    *nats.Subscription
	cancel string

	mu      sync.Mutex
	ended   bool // the backend ended it, or nobody answered
	stopped bool
}

// Open subscribes to a new stream's subject and sends the request for
// req.Name. The replies are read with Next. On error nothing is held.
func (l *LocalClient) Open(req *LocalRequest) (*LocalStream, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, invalid("request", err)
	}
	id := nuid.Next()
	reply := l.subjects.localStream(id)
	sub, err := l.nc.SubscribeSync(reply)
	if err != nil {
		return nil, natsError(err)
	}
	s := &LocalStream{nc: l.nc, sub: sub, cancel: l.subjects.localCancel(id)}
	m := &nats.Msg{Subject: l.subjects.Local(req.Name), Reply: reply, Data: body,
		Header: nats.Header{HeaderCancel: []string{s.cancel}}}
	if err := l.nc.PublishMsg(m); err != nil {
		_ = sub.Unsubscribe()
		return nil, natsError(err)
	}
	return s, nil
}

// Next returns the next reply, waiting at most until ctx ends (then
// ctx.Err()). No responder for the request is an *Error with
// CodeUnavailable; after the end marker every call returns ErrLocalEnded.
func (s *LocalStream) Next(ctx context.Context) (LocalReply, error) {
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return LocalReply{}, ErrLocalEnded
	}
	m, err := s.sub.NextMsgWithContext(ctx)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			s.setEnded()
			return LocalReply{}, &Error{Code: CodeUnavailable, Err: errors.New("no backend answers the request")}
		case ctx.Err() != nil:
			return LocalReply{}, ctx.Err()
		}
		return LocalReply{}, natsError(err)
	}
	ev, control := DecodeEvent(m)
	switch {
	case control == ControlKeepAlive:
		return LocalReply{Kind: LocalKeepAlive}, nil
	case control == ControlEnd, control == "" && len(ev.Data) == 0 && ev.Type == "":
		s.setEnded()
		return LocalReply{Kind: LocalEnd}, nil
	case control != "":
		return LocalReply{}, invalid("reply", fmt.Errorf("unknown %s value %q", HeaderControl, control))
	}
	return LocalReply{Kind: LocalEvent, Event: ev}, nil
}

func (s *LocalStream) setEnded() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
}

// Stop unsubscribes. When the backend has not ended the stream, the edge
// tells it on the cancel subject, so that it stops sending. It is
// idempotent.
func (s *LocalStream) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	tell := !s.ended
	s.mu.Unlock()
	_ = s.sub.Unsubscribe()
	if tell {
		_ = s.nc.Publish(s.cancel, nil)
	}
}

// LocalWriter is a backend's side of one Local stream: it sends events to
// the requesting connection and ends the stream.
type LocalWriter struct {
	nc    *nats.Conn
	reply string
	mu    sync.Mutex
	ended bool
}

// NewLocalWriter returns a writer to a request's reply subject, for
// backends that receive requests themselves.
func NewLocalWriter(nc *nats.Conn, reply string) *LocalWriter {
	return &LocalWriter{nc: nc, reply: reply}
}

// errWriterEnded is returned by sends after End.
var errWriterEnded = errors.New("broker: local stream already ended")

// Send sends one event. Data may be empty only when the event has a type
// (an empty untyped message is the end marker).
func (w *LocalWriter) Send(ev Event) error {
	if len(ev.Data) == 0 && ev.Type == "" {
		return invalid("data", errors.New("an event without a type needs data (an empty message ends the stream)"))
	}
	if err := policy.ValidateEventID(ev.ID); err != nil {
		return invalid("id", err)
	}
	if err := policy.ValidateEventType(ev.Type); err != nil {
		return invalid("event", err)
	}
	return w.publish(NewMsg(w.reply, ev))
}

// KeepAlive tells the edge the backend is alive, resetting its idle timeout.
func (w *LocalWriter) KeepAlive() error {
	return w.publish(&nats.Msg{Subject: w.reply, Header: nats.Header{HeaderControl: []string{ControlKeepAlive}}})
}

// End ends the stream: the client receives pode.close. Later calls do nothing.
func (w *LocalWriter) End() error {
	w.mu.Lock()
	if w.ended {
		w.mu.Unlock()
		return nil
	}
	w.ended = true
	w.mu.Unlock()
	if err := w.nc.PublishMsg(&nats.Msg{Subject: w.reply, Header: nats.Header{HeaderControl: []string{ControlEnd}}}); err != nil {
		return natsError(err)
	}
	return nil
}

func (w *LocalWriter) publish(m *nats.Msg) error {
	w.mu.Lock()
	ended := w.ended
	w.mu.Unlock()
	if ended {
		return errWriterEnded
	}
	if err := w.nc.PublishMsg(m); err != nil {
		return natsError(err)
	}
	return nil
}

// ServeLocal serves Local streams for name ("*" for every name), in the
// queue group "herald-local" so that several backend processes share
// them. Each request runs serve in its own goroutine, with a context that
// ends when the edge cancels the stream (its client went away, or the
// backend was too slow); when serve returns the stream is ended. The
// returned subscription stops new requests when unsubscribed; call wait
// to wait for the streams in progress.
func ServeLocal(nc *nats.Conn, prefix, name string, serve func(ctx context.Context, req LocalRequest, w *LocalWriter)) (sub *nats.Subscription, wait func(), err error) {
	subjects, err := NewSubjects(prefix)
	if err != nil {
		return nil, nil, invalid("prefix", err)
	}
	subject := subjects.LocalAll()
	if name != "*" {
		subject = subjects.Local(name)
	}
	var running sync.WaitGroup
	sub, err = nc.QueueSubscribe(subject, "herald-local", func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		var req LocalRequest
		w := NewLocalWriter(nc, m.Reply)
		if err := json.Unmarshal(m.Data, &req); err != nil {
			_ = w.End()
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		var csub *nats.Subscription
		if c := HeaderValue(m.Header, HeaderCancel); c != "" {
			csub, _ = nc.Subscribe(c, func(*nats.Msg) { cancel() })
		}
		running.Add(1)
		go func() {
			defer running.Done()
			defer cancel()
			if csub != nil {
				defer func() { _ = csub.Unsubscribe() }()
			}
			serve(ctx, req, w)
			_ = w.End()
		}()
	})
	if err != nil {
		return nil, nil, natsError(err)
	}
	return sub, running.Wait, nil
}
