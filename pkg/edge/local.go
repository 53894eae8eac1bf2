package edge

import (
	"context"
	"errors"
	"sync"

	"github.com/herald-push/herald/pkg/broker"
)

// Local connections (Pode's -Scope Local, Send-PodeSseEvent -FromEvent):
// a connection that no producer can address. It is not in the registry
// and holds no interest on the feed; instead, when it registers, the edge
// sends one request on <prefix>.local.<name> (broker.LocalClient) and a
// goroutine, pumpLocal, queues each event the backend streams back to the
// reply subject through the connection's outbox (c.push), like every
// frame of every connection. The backend's end marker closes the
// connection (pode.close, reason closed); no responder, or a backend
// silent for LocalIdleTimeout, closes it as unavailable (herald.close
// first, for SSE); a client that leaves, or any other close, cancels the
// pump, which unsubscribes and tells the backend (broker.LocalStream.Stop).
//
// Local connections have no history (their events are the backend's), get
// pode.ping like every SSE connection, and are closed by Shutdown.

// Results of the local_streams_total metric.
const (
	localEnded        = "ended"
	localNoResponders = "no_responders"
	localStalled      = "stalled"
	localInvalid      = "invalid"
	localClosed       = "closed"
)

var localResults = []string{localEnded, localNoResponders, localStalled, localInvalid, localClosed}

// localStream is a Local connection's request and, once it registered,
// its stream.
type localStream struct {
	req    broker.LocalRequest // set by bind
	stream *broker.LocalStream // set by registerLocal
	ctx    context.Context     // the stream's lifetime: cancelled when the connection leaves
	cancel context.CancelFunc
}

// localSet is the edge's Local connections, for Shutdown and the pinger.
type localSet struct {
	mu    sync.Mutex
	conns map[*conn]struct{} // guarded by mu
}

func (s *localSet) add(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
}

func (s *localSet) remove(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// all appends the Local connections to dst.
func (s *localSet) all(dst []*conn) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		dst = append(dst, c)
	}
	return dst
}

// allConns appends every open connection to dst: the registered ones and
// the Local ones.
func (e *Edge) allConns(dst []*conn) []*conn {
	return e.locals.all(e.reg.all(dst))
}

// registerLocal is register for a Local connection: it sends the stream's
// request and starts the pump. On error nothing is held.
func (e *Edge) registerLocal(c *conn) error {
	ls := c.authz.local
	s, err := e.auth.local.Open(&ls.req)
	if err != nil {
		return err
	}
	ls.stream = s
	ls.ctx, ls.cancel = context.WithCancel(context.Background())
	e.conns.Add(1)
	e.locals.add(c)
	e.armExpiry(c)
	go e.pumpLocal(c, ls)
	return nil
}

// leaveLocal is unregister for a Local connection: the pump stops.
func (e *Edge) leaveLocal(c *conn) {
	ls := c.authz.local
	if ls.cancel != nil {
		ls.cancel()
	}
	e.locals.remove(c)
}

// pumpLocal queues what the backend streams to c until the stream or the
// connection ends.
func (e *Edge) pumpLocal(c *conn, ls *localStream) {
	result := localClosed
	defer func() {
		ls.stream.Stop()
		e.m.local.WithLabelValues(result).Inc()
	}()
	for {
		ctx, cancel := context.WithTimeout(ls.ctx, e.cfg.LocalIdleTimeout)
		rep, err := ls.stream.Next(ctx)
		cancel()
		if err != nil {
			switch {
			case ls.ctx.Err() != nil:
				return // the connection ended first
			case errors.Is(err, context.DeadlineExceeded):
				result = localStalled
			case errors.Is(err, broker.ErrUnavailable):
				result = localNoResponders
			default:
				result = localInvalid
			}
			if e.warn.Allow("local_" + result) {
				e.log.Warn("Local stream ended: "+result+" (logged once per interval)", "name", c.name, "err", err)
			}
			e.closeWith(c, ReasonUnavailable)
			return
		}
		switch rep.Kind {
		case broker.LocalKeepAlive:
			continue
		case broker.LocalEnd:
			result = localEnded
			c.close(ReasonClosed)
			return
		}
		frame := e.encode(c.format, rep.Event.ID, rep.Event.Type, rep.Event.Data)
		if frame == nil {
			continue // too large: counted and logged by encode
		}
		if !c.push(frame, nil) {
			return // closing, or just closed as slow
		}
		e.m.deliveries.Inc()
	}
}
