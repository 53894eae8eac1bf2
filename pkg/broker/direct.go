package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// directBatch is how many messages one direct-get request asks for.
const directBatch = 256

// replayDirect replays from..upTo with batched direct gets: one run of
// requests per subject (the server filters by subject), merged by stream
// sequence. Messages after upTo are left to the caller's live feed.
func (h *History) replayDirect(ctx context.Context, from, upTo uint64, subjects []string, fn func(Stored) error) error {
	if from > upTo {
		return nil
	}
	// One request is in flight at a time and answers with at most a batch
	// and its end marker, so a channel of that size never overflows. (A
	// synchronous subscription would allocate nats.go's default 64k-slot
	// channel per replay: that was a quarter of the edge's CPU in a
	// reconnect storm.)
	inbox := h.nc.NewRespInbox()
	ch := make(chan *nats.Msg, directBatch+8)
	sub, err := h.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return fmt.Errorf("%w: replay: %v", ErrNoHistory, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	readers := make([]*directReader, len(subjects))
	for i, s := range subjects {
		readers[i] = &directReader{h: h, ch: ch, inbox: inbox, subject: s, next: from, upTo: upTo}
	}
	for {
		var first *directReader
		for _, r := range readers {
			if err := r.fill(ctx); err != nil {
				return err
			}
			if len(r.buf) > 0 && (first == nil || r.buf[0].Seq < first.buf[0].Seq) {
				first = r
			}
		}
		if first == nil {
			return nil
		}
		m := first.buf[0]
		first.buf[0] = Stored{}
		first.buf = first.buf[1:]
		if err := fn(m); err != nil {
			return err
		}
	}
}

// directReader reads one subject's messages in batches.
type directReader struct {
	h       *History
	ch      <-chan *nats.Msg // replies to inbox
	inbox   string
	subject string
	next    uint64 // first sequence not read yet
	upTo    uint64
	buf     []Stored
	done    bool // nothing more up to upTo
}

// directGetRequest is the body of a batched direct get
// ($JS.API.DIRECT.GET.<stream>).
type directGetRequest struct {
	Seq     uint64 `json:"seq"`
	Batch   int    `json:"batch"`
	NextFor string `json:"next_by_subj"`
}

// fill reads the next batch when the buffer is empty.
func (r *directReader) fill(ctx context.Context) error {
	if len(r.buf) > 0 || r.done {
		return nil
	}
	if r.next > r.upTo {
		r.done = true
		return nil
	}
	body, _ := json.Marshal(directGetRequest{Seq: r.next, Batch: directBatch, NextFor: r.subject})
	if err := r.h.nc.PublishRequest("$JS.API.DIRECT.GET."+r.h.name, r.inbox, body); err != nil {
		return fmt.Errorf("%w: replay: %v", ErrNoHistory, err)
	}
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-r.ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return fmt.Errorf("%w: replay direct get: no answer from the stream", ErrNoHistory)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // no message on the subject from r.next on
			r.done = true
			return nil
		case "204": // end of batch: more pending, or not
			if np, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64); np == 0 {
				r.done = true
			}
			if len(r.buf) == 0 && !r.done {
				return r.fill(ctx) // an empty batch with messages pending: ask again
			}
			return nil
		default:
			return fmt.Errorf("%w: replay direct get: status %s %s", ErrNoHistory, status, m.Header.Get("Description"))
		}
		if len(m.Header) == 0 {
			// The stored message's header block does not decode (a producer
			// wrote a malformed one): nats.go hands it over without
			// headers. Read that one message through the JSON API instead,
			// so the replay steps over it rather than stall on it.
			st, err := r.h.getNext(ctx, r.next, r.subject)
			if err != nil {
				return err
			}
			m = st.Msg
			if m.Header == nil {
				m.Header = nats.Header{}
			}
			m.Header.Set("Nats-Sequence", strconv.FormatUint(st.Seq, 10))
			m.Header.Set("Nats-Subject", st.Subject)
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil || seq < r.next {
			return fmt.Errorf("%w: replay direct get: bad sequence %q", ErrNoHistory, m.Header.Get("Nats-Sequence"))
		}
		r.next = seq + 1
		if seq > r.upTo {
			r.done = true // the rest of this batch is past the bound: drained below
			continue
		}
		r.buf = append(r.buf, Stored{Seq: seq, Subject: m.Header.Get("Nats-Subject"),
			Msg: &nats.Msg{Subject: m.Header.Get("Nats-Subject"), Header: m.Header, Data: m.Data}})
	}
}

// getNext reads the first message on subject at or after seq through the
// stream's JSON API ($JS.API.STREAM.MSG.GET), whose raw header block comes
// base64-encoded. Headers that do not decode are dropped: the message is
// then a plain message, as a consumer delivers it.
func (h *History) getNext(ctx context.Context, seq uint64, subject string) (Stored, error) {
	req, _ := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{seq, subject})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := h.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+h.name, req)
	if err != nil {
		return Stored{}, fmt.Errorf("%w: replay message get: %v", ErrNoHistory, err)
	}
	var out struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Header  []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &out); err != nil || out.Message == nil || out.Message.Seq < seq {
		desc := "no message"
		if out.Error != nil {
			desc = out.Error.Description
		}
		return Stored{}, fmt.Errorf("%w: replay message get at %d: %s", ErrNoHistory, seq, desc)
	}
	m := &nats.Msg{Subject: out.Message.Subject, Data: out.Message.Data}
	if hdr, err := nats.DecodeHeadersMsg(out.Message.Header); err == nil {
		m.Header = hdr
	}
	return Stored{Seq: out.Message.Seq, Subject: out.Message.Subject, Msg: m}, nil
}
