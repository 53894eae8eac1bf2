package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
)

// Message is one message to publish. Payload is built by the caller with
// AppendPayload just before the call, so its timestamp is the send time.
type Message struct {
	Name     string
	Group    string
	ClientID string
	ID       string // event id, optional
	Event    string // event type, optional
	Step     int64
	Seq      int64
	TS       int64
	Payload  []byte
}

// Publisher sends messages to subscribers through a server.
type Publisher interface {
	// Publish sends one message; it may buffer.
	Publish(ctx context.Context, m *Message) error
	// Flush returns once everything published has left the process.
	Flush(ctx context.Context) error
	Close() error
}

// NATSPublisher publishes Herald envelopes straight to NATS, as any
// producer on the bus would.
type NATSPublisher struct {
	nc   *nats.Conn
	subj broker.Subjects
	// last subject, reused while the address does not change
	lastAddr broker.Address
	lastSubj string
}

// NewNATSPublisher connects to url with subject prefix prefix ("" for herald).
func NewNATSPublisher(url, prefix string) (*NATSPublisher, error) {
	subj, err := broker.NewSubjects(prefix)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, nats.Name("herald-bench"), nats.ReconnectBufSize(64<<20))
	if err != nil {
		return nil, fmt.Errorf("load: NATS %s: %w", url, err)
	}
	return &NATSPublisher{nc: nc, subj: subj}, nil
}

// Publish implements Publisher.
func (p *NATSPublisher) Publish(_ context.Context, m *Message) error {
	a := broker.Address{Name: m.Name, Group: m.Group, ClientID: m.ClientID}
	if a != p.lastAddr || p.lastSubj == "" {
		p.lastAddr, p.lastSubj = a, p.subj.Event(a)
	}
	if m.ID == "" && m.Event == "" {
		return p.nc.Publish(p.lastSubj, m.Payload)
	}
	return p.nc.PublishMsg(broker.NewMsg(p.lastSubj, broker.Event{ID: m.ID, Type: m.Event, Data: m.Payload}))
}

// Flush implements Publisher.
func (p *NATSPublisher) Flush(ctx context.Context) error { return p.nc.FlushWithContext(ctx) }

// Close implements Publisher.
func (p *NATSPublisher) Close() error {
	p.nc.Close()
	return nil
}

// Conn returns the NATS connection.
func (p *NATSPublisher) Conn() *nats.Conn { return p.nc }

// HeraldPublishTemplate is the body of Herald's POST /publish for one message.
// A group or clientId field that is present must narrow the send (an empty
// one is refused), so they appear only when set.
const HeraldPublishTemplate = `{"name":"{{name}}"{{group_field}}{{client_field}},"id":"{{id}}","event":"{{event}}","data":{{payload}}}`

// HTTPPublisher POSTs one request per message, the body built from a
// template with these placeholders:
//
//	{{payload}}       the JSON payload {"step":..,"seq":..,"ts":..}
//	{{payload_json}}  the same as a JSON string literal, quotes included
//	{{name}} {{group}} {{client}} {{id}} {{event}}
//	{{group_field}} {{client_field}}  ,"group":"…" and ,"clientId":"…", or nothing when empty
//	{{seq}} {{ts}} {{step}}
//
// Requests go one at a time, so messages arrive in order.
type HTTPPublisher struct {
	url    string
	header http.Header
	parts  []string // literal, placeholder, literal, ...
	client *http.Client
	buf    bytes.Buffer
}

// NewHTTPPublisher returns a publisher posting to url with template and
// the given headers (e.g. Authorization, Content-Type).
func NewHTTPPublisher(url, template string, header http.Header) *HTTPPublisher {
	var parts []string
	rest := template
	for {
		i := strings.Index(rest, "{{")
		j := strings.Index(rest[max(i, 0):], "}}")
		if i < 0 || j < 0 {
			parts = append(parts, rest)
			break
		}
		j += i
		parts = append(parts, rest[:i], rest[i+2:j])
		rest = rest[j+2:]
	}
	if header == nil {
		header = http.Header{}
	}
	if header.Get("Content-Type") == "" {
		header.Set("Content-Type", "application/json")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	return &HTTPPublisher{url: url, header: header, parts: parts, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (p *HTTPPublisher) body(m *Message) []byte {
	p.buf.Reset()
	for i, s := range p.parts {
		if i%2 == 0 {
			p.buf.WriteString(s)
			continue
		}
		switch s {
		case "payload":
			p.buf.Write(m.Payload)
		case "payload_json":
			p.buf.WriteString(strconv.Quote(string(m.Payload)))
		case "name":
			p.buf.WriteString(m.Name)
		case "group":
			p.buf.WriteString(m.Group)
		case "client":
			p.buf.WriteString(m.ClientID)
		case "group_field":
			if m.Group != "" {
				p.buf.WriteString(`,"group":` + strconv.Quote(m.Group))
			}
		case "client_field":
			if m.ClientID != "" {
				p.buf.WriteString(`,"clientId":` + strconv.Quote(m.ClientID))
			}
		case "id":
			p.buf.WriteString(m.ID)
		case "event":
			p.buf.WriteString(m.Event)
		case "seq":
			p.buf.WriteString(strconv.FormatInt(m.Seq, 10))
		case "ts":
			p.buf.WriteString(strconv.FormatInt(m.TS, 10))
		case "step":
			p.buf.WriteString(strconv.FormatInt(m.Step, 10))
		default:
			p.buf.WriteString("{{" + s + "}}")
		}
	}
	return p.buf.Bytes()
}

// Publish implements Publisher.
func (p *HTTPPublisher) Publish(ctx context.Context, m *Message) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(p.body(m)))
	if err != nil {
		return err
	}
	for k, v := range p.header {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("load: publish: status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// Flush implements Publisher: every request has been answered already.
func (p *HTTPPublisher) Flush(context.Context) error { return nil }

// Close implements Publisher.
func (p *HTTPPublisher) Close() error {
	p.client.CloseIdleConnections()
	return nil
}

// Pace calls send(i) for i in 0..count-1 at rate calls per second (rate
// <= 0: as fast as possible), catching up in bursts when it falls behind
// rather than stretching the run. It stops at the first error or when ctx
// ends, and returns how many calls succeeded and how long they took.
func Pace(ctx context.Context, rate float64, count int, send func(i int) error) (int, time.Duration, error) {
	start := time.Now()
	i := 0
	for i < count {
		if err := ctx.Err(); err != nil {
			return i, time.Since(start), err
		}
		due := count
		if rate > 0 {
			due = min(count, int(time.Since(start).Seconds()*rate)+1)
		}
		for ; i < due; i++ {
			if err := send(i); err != nil {
				return i, time.Since(start), err
			}
		}
		if i < count && rate > 0 {
			next := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(next); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
				case <-t.C:
				}
			}
		}
	}
	return i, time.Since(start), nil
}
