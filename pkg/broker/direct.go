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

// replayDirect replays from..upTo one run of requests per subject (the
// server filters by subject), merged by stream sequence: batched direct
// gets, or one request per message on servers without batches (direct
// gets with one replica, leader reads with several). Messages after upTo
// are left to the caller's live feed.
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

// directReader reads one subject's messages in batches, or one at a time.
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

// directGetRequest is the body of a direct get ($JS.API.DIRECT.GET.<stream>).
// Batch is ignored by servers older than 2.11.0, which answer one message.
type directGetRequest struct {
	Seq     uint64 `json:"seq"`
	Batch   int    `json:"batch,omitempty"`
	NextFor string `json:"next_by_subj"`
}

// fill reads the next batch (or message) when the buffer is empty.
func (r *directReader) fill(ctx context.Context) error {
	if len(r.buf) > 0 || r.done {
		return nil
	}
	if r.next > r.upTo {
		r.done = true
		return nil
	}
	mode := readMode(r.h.mode.Load())
	if mode == readMsgGet {
		st, found, err := r.h.getNext(ctx, r.next, r.subject)
		if err != nil {
			return err
		}
		r.keep(st, found)
		return nil
	}
	req := directGetRequest{Seq: r.next, NextFor: r.subject}
	if mode == readBatch {
		req.Batch = directBatch
	}
	body, _ := json.Marshal(req)
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
		// A stored message always carries the Nats-Sequence the server
		// adds; a status answer (404 none, 204 end of batch) never does.
		// A Status header a producer stored on its message is only data.
		_, stored := m.Header[HeaderSequence]
		if status := m.Header.Get("Status"); !stored && len(m.Header) > 0 {
			switch status {
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
		}
		if len(m.Header) == 0 {
			// The stored message's header block does not decode (a producer
			// wrote a malformed one): nats.go hands it over without
			// headers. Read that one message through the JSON API instead,
			// so the replay steps over it rather than stall on it.
			st, found, err := r.h.getNext(ctx, r.next, r.subject)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("%w: replay message get at %d: gone", ErrNoHistory, r.next)
			}
			m = st.Msg
			if m.Header == nil {
				m.Header = nats.Header{}
			}
			m.Header[HeaderSequence] = []string{strconv.FormatUint(st.Seq, 10)}
			m.Header[headerSubject] = []string{st.Subject}
		}
		// The server appends its headers after whatever the producer
		// stored: only the last value of each is the server's.
		seq, ok := lastUint(m.Header, HeaderSequence)
		if !ok || seq < r.next {
			return fmt.Errorf("%w: replay direct get: bad sequence %q", ErrNoHistory, m.Header[HeaderSequence])
		}
		subject := lastValue(m.Header, headerSubject)
		if mode == readBatch {
			if _, batched := m.Header[headerNumPending]; !batched {
				// An answer without the batch headers: the server holding
				// the stream is older than the one the client joined.
				// It answered this message alone; ask one at a time.
				r.h.mode.CompareAndSwap(uint32(readBatch), uint32(readDirect))
				mode = readDirect
			}
		}
		r.keep(Stored{Seq: seq, Subject: subject, Msg: &nats.Msg{Subject: subject, Header: m.Header, Data: m.Data}}, true)
		if mode != readBatch {
			return nil // one message per request
		}
	}
}

// keep buffers a message read (or, with found false, notes that the
// subject has nothing more) and moves the reader past it.
func (r *directReader) keep(st Stored, found bool) {
	if !found {
		r.done = true
		return
	}
	r.next = st.Seq + 1
	if st.Seq > r.upTo {
		r.done = true // past the bound: the caller's live feed has it
		return
	}
	r.buf = append(r.buf, st)
}

// jsErrNoMessageFound is JetStream's error code for a message get that
// finds nothing (JSNoMessageFoundErr).
const jsErrNoMessageFound = 10037

// Headers of direct get answers (besides HeaderSequence).
const (
	headerSubject    = "Nats-Subject"
	headerNumPending = "Nats-Num-Pending"
)

// lastValue returns the last value of header key (exact case), "" if none.
func lastValue(h nats.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// getNext reads the first message on subject at or after seq through the
// stream's JSON API ($JS.API.STREAM.MSG.GET), which the stream leader
// answers and whose raw header block comes base64-encoded; found is false
// when there is none. Headers that do not decode are dropped: the message
// is then a plain message, as a consumer delivers it.
func (h *History) getNext(ctx context.Context, seq uint64, subject string) (_ Stored, found bool, _ error) {
	req, _ := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{seq, subject})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := h.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+h.name, req)
	if err != nil {
		return Stored{}, false, fmt.Errorf("%w: replay message get: %v", ErrNoHistory, err)
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
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &out); err != nil {
		return Stored{}, false, fmt.Errorf("%w: replay message get at %d: %v", ErrNoHistory, seq, err)
	}
	if out.Error != nil && out.Error.ErrCode == jsErrNoMessageFound { // none on subject from seq on
		return Stored{}, false, nil
	}
	if out.Message == nil || out.Message.Seq < seq {
		desc := "no message"
		if out.Error != nil {
			desc = out.Error.Description
		}
		return Stored{}, false, fmt.Errorf("%w: replay message get at %d: %s", ErrNoHistory, seq, desc)
	}
	m := &nats.Msg{Subject: out.Message.Subject, Data: out.Message.Data}
	if hdr, err := nats.DecodeHeadersMsg(out.Message.Header); err == nil {
		m.Header = hdr
	}
	return Stored{Seq: out.Message.Seq, Subject: out.Message.Subject, Msg: m}, true, nil
}
