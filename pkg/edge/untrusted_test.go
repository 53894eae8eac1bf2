package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
	"github.com/herald-push/herald/pkg/broker"
)

// Inputs Herald does not control — NATS messages from any producer,
// Last-Event-IDs, /publish bodies, handshakes, stalled requests — each
// class with the behaviour a client observes. Every test here failed
// before its fix.

func historyEdge(t *testing.T, cfg Config) (*testEdge, *nats.Conn) {
	t.Helper()
	srv := natstest.StartServer(t)
	if cfg.History == nil {
		cfg.History = &broker.HistoryConfig{}
	}
	return startEdge(t, srv.ClientURL(), cfg), natstest.Connect(t, srv.ClientURL())
}

// rawPublish writes protocol text straight to the NATS server, as a
// producer with a broken client library would.
func rawPublish(t *testing.T, natsURL, protocol string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(natsURL, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n%sPING\r\n", protocol)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "PONG") {
			return
		}
		if strings.HasPrefix(line, "-ERR") {
			t.Fatalf("server refused: %s", line)
		}
	}
}

// Class 1: a stored message whose header block does not decode. Its live
// copy cannot be positioned, and the next event shows it missing: the
// replay steps over what it cannot decode instead of retrying forever, so
// the client keeps receiving, live and on resume.
func TestUndecodableMessageNeverStalls(t *testing.T) {
	e, nc := historyEdge(t, Config{})
	c := connect(t, e, "/sse/P", nil)
	open := c.snapshot()[0].ID
	rawPublish(t, nc.ConnectedUrl(), "HPUB herald.ev.P._._ 7 8\r\nbad\r\n\r\nx\r\n")
	publishSeq(t, nc, "herald.ev.P._._", 0, 3)
	c.waitData("message", "2")
	if got := numbers(c); len(got) != 3 {
		t.Fatalf("after the undecodable message the client got %v, want 0 1 2", got)
	}
	// A client resuming from before it replays across it.
	r := connect(t, e, "/sse/P", http.Header{"Last-Event-ID": {open}})
	r.waitData("message", "2")
	for _, ev := range r.snapshot() {
		if ev.Type == EventGap {
			t.Fatalf("a resume within retention got %+v", ev)
		}
	}
	if got := numbers(r); len(got) != 3 {
		t.Fatalf("the resumed client got %v, want 0 1 2", got)
	}
}

// Class 2: producers cannot forge stream positions. JetStream appends its
// own Nats-Sequence after a producer's; only JetStream's counts, so a
// forged huge position neither hides later events nor poisons the edge.
func TestForgedStreamPositionIgnored(t *testing.T) {
	e, nc := historyEdge(t, Config{})
	c := connect(t, e, "/sse/X", nil)
	m := nats.NewMsg("herald.ev.X._._")
	m.Header.Set(broker.HeaderSequence, "999999999")
	m.Header.Set(broker.HeaderLastSequence, "999999998")
	m.Data = []byte("forged")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	publishSeq(t, nc, "herald.ev.X._._", 0, 3)
	c.waitData("message", "2")
	if got := numbers(c); len(got) != 3 {
		t.Fatalf("after a forged position the client got %v, want 0 1 2", got)
	}
	if n := e.hist.Newest(); n > 100 {
		t.Fatalf("the edge believes the stream is at %d", n)
	}
}

// gapOf returns the client's herald.gap events.
func gapOf(c *client) []sseclient.Event {
	var out []sseclient.Event
	for _, ev := range c.snapshot() {
		if ev.Type == EventGap {
			out = append(out, ev)
		}
	}
	return out
}

func gapReason(t *testing.T, ev sseclient.Event) string {
	t.Helper()
	var g struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &g); err != nil {
		t.Fatalf("herald.gap data %q: %v", ev.Data, err)
	}
	return g.Reason
}

// Classes 3, 4 and 13: a Last-Event-ID Herald cannot use — not a
// position, ahead of the stream, an overflowing number, too long, not
// UTF-8 — is never refused (a browser's EventSource gives up after a
// 4xx): the client gets herald.gap (malformed), at a position it has
// really been brought up to, then every event published after it
// connected. Every id Herald emits, even with a long producer id, is
// accepted back.
func TestUnusableLastEventIDs(t *testing.T) {
	e, nc := historyEdge(t, Config{})
	publishSeq(t, nc, "herald.ev.L._._", 0, 3)
	probe := connect(t, e, "/sse/L", nil)
	epoch, _, _ := strings.Cut(probe.snapshot()[0].ID, ":")
	for _, id := range []string{
		"abc", "-1", "0:1", epoch + ":999999", epoch + ":18446744073709551615",
		epoch + ":1" + strings.Repeat("0", 30), strings.Repeat("x", 2000), "a\xffb", "a\nb",
	} {
		want := gapMalformed
		if id == "0:1" {
			want = gapEpoch // a well-formed position of another stream
		}
		t.Run(fmt.Sprintf("%.24q", id), func(t *testing.T) {
			path := "/sse/L?lastEventId=" + url.QueryEscape(id)
			c := connect(t, e, path, nil)
			// Published right after pode.open: it must not be lost behind the gap.
			publishSeq(t, nc, "herald.ev.L._._", 100, 1)
			c.waitData("message", "100")
			gaps := gapOf(c)
			if len(gaps) != 1 || gapReason(t, gaps[0]) != want {
				t.Fatalf("events %+v, want one herald.gap %s", c.snapshot(), want)
			}
			if got := numbers(c); len(got) != 1 || got[0] != 100 {
				t.Fatalf("after the gap: %v, want only 100", got)
			}
		})
	}

	// A long producer id makes a long event id; Herald takes it back.
	long := strings.Repeat("p", 256)
	c := connect(t, e, "/sse/L", nil)
	if code, body := publishHTTP(t, e, testToken, `{"name":"L","id":"`+long+`","data":"7"}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %s", code, body)
	}
	c.waitData("message", "7")
	id := lastID(c)
	if len(id) < 256 {
		t.Fatalf("event id %q", id)
	}
	publishSeq(t, nc, "herald.ev.L._._", 8, 1)
	r := connect(t, e, "/sse/L", http.Header{"Last-Event-ID": {id}})
	r.waitData("message", "8")
	if gaps := gapOf(r); len(gaps) != 0 {
		t.Fatalf("resuming from an id Herald emitted gave %+v", gaps)
	}
}

// Class 13, made deterministic: a client comes back with an unusable id
// while every replay slot is busy (a reconnect storm); an event is
// published and stored after its pode.open, before its replay reads the
// stream head. The gap must not move the client past that event.
func TestGapNeverSkipsEventsAfterOpen(t *testing.T) {
	e, nc := historyEdge(t, Config{MaxReplays: 1})
	for i := range 3 {
		e.replays <- struct{}{} // the one slot is taken
		c := connect(t, e, "/sse/R?lastEventId=abc", nil)
		publishSeq(t, nc, "herald.ev.R._._", 1000+i, 1) // stored before the replay can start
		<-e.replays
		c.waitData("message", fmt.Sprint(1000+i))
		if gaps := gapOf(c); len(gaps) != 1 || gapReason(t, gaps[0]) != gapMalformed {
			t.Fatalf("events %+v", c.snapshot())
		}
		c.close()
	}
}

// Class 5: a field that is present never means "everyone": an empty or
// null clientId or group, or an empty array, is a 400, and nothing is sent.
func TestPresentFieldNeverWidens(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	c := connect(t, e, "/sse/Priv", nil)
	for _, body := range []string{
		`{"name":"Priv","clientId":"","data":"secret"}`,
		`{"name":"Priv","clientId":null,"data":"secret"}`,
		`{"name":"Priv","clientId":[],"data":"secret"}`,
		`{"name":"Priv","clientId":[""],"data":"secret"}`,
		`{"name":"Priv","group":"","data":"secret"}`,
		`{"name":"Priv","group":null,"data":"secret"}`,
		`{"name":"Priv","group":[],"data":"secret"}`,
		`[{"name":"Priv","data":"ok"},{"name":"Priv","clientId":"","data":"secret"}]`,
	} {
		if code, resp := publishHTTP(t, e, testToken, body); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", body, code, resp)
		}
	}
	if code, resp := publishHTTP(t, e, testToken, `{"name":"Priv","data":"end"}`); code != http.StatusAccepted {
		t.Fatalf("%d %s", code, resp)
	}
	c.waitData("message", "end")
	if got := c.payloads("message"); len(got) != 1 {
		t.Fatalf("the client received %q", got)
	}
}

// Class 6: one send may not fan in to more addresses than the publisher's
// limit: refused at once, before the cross product is built.
func TestPublishFanInCapped(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	list := func(prefix string, n int) string {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf("%q", fmt.Sprintf("%s%d", prefix, i))
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	body := `{"name":"N","group":` + list("g", 2000) + `,"clientId":` + list("c", 2000) + `,"data":"x"}`
	start := time.Now()
	code, resp := publishHTTP(t, e, testToken, body)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(resp, "4000000 addresses") {
		t.Fatalf("%d %s, want 413 naming the 4000000 addresses", code, resp)
	}
	t.Logf("refused in %v", time.Since(start))
	if code, resp := publishHTTP(t, e, testToken, `{"name":"N","group":`+list("g", 32)+`,"clientId":`+list("c", 32)+`,"data":"x"}`); code != http.StatusAccepted {
		t.Fatalf("32 × 32: %d %s", code, resp)
	}
}

// Class 7: a request that stalls in its body is cut off (the socket is
// closed) instead of holding a goroutine and a socket forever — on
// /publish, and on a path that is answered without reading the body.
func TestStalledBodyCutOff(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{BodyTimeout: 200 * time.Millisecond})
	for _, req := range []string{
		"POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testToken + "\r\nContent-Length: 1000\r\n\r\n{",
		"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
		"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
	} {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // the test's own bound; the edge's is 200 ms
		_, err = io.Copy(io.Discard, c)
		c.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%q: the edge still holds the stalled request", req[:20])
		}
	}
	// Streams are not cut: an SSE client stays connected past the deadline.
	s := connect(t, e, "/sse/S", nil)
	time.Sleep(500 * time.Millisecond)
	if s.isClosed() {
		t.Fatal("the body deadline closed an SSE stream")
	}
}

// Class 8: the size limit applies to the encoded frame. SSE turns each
// line break into a new data: line, several times the data's size; such
// an event is dropped for everyone (counted), live and in replay alike,
// and never closes a healthy client as slow.
func TestNewlineHeavyEventDropped(t *testing.T) {
	e, nc := historyEdge(t, Config{QueueBytes: 64 << 10})
	c := connect(t, e, "/sse/N", nil)
	open := c.snapshot()[0].ID
	heavy := strings.Repeat("\n", 20<<10) // 20 KiB of data, ~160 KiB of frame
	if _, err := e.pub.Publish(context.Background(), broker.Target{Name: "N"}, broker.Event{Data: []byte(heavy)}); err != nil {
		t.Fatal(err)
	}
	publishSeq(t, nc, "herald.ev.N._._", 0, 1)
	c.waitData("message", "0")
	if c.isClosed() || len(c.payloads("message")) != 1 {
		t.Fatalf("closed %v, events %d", c.isClosed(), len(c.payloads("message")))
	}
	if got := counter(t, e.reg, "herald_edge_dropped_total", "reason", "too_large"); got != 1 {
		t.Fatalf("too_large drops = %v, want 1", got)
	}
	r := connect(t, e, "/sse/N", http.Header{"Last-Event-ID": {open}})
	r.waitData("message", "0")
	if len(r.payloads("message")) != 1 || counter(t, e.reg, "herald_edge_dropped_total", "reason", "too_large") != 2 {
		t.Fatalf("replay: events %q, drops %v", r.payloads("message"), counter(t, e.reg, "herald_edge_dropped_total", "reason", "too_large"))
	}
}

// Class 9: WebSocket text frames are UTF-8. Event data that is not (from
// raw NATS, or /publish) reaches raw and herald.v1 clients with U+FFFD in
// place of the invalid bytes, counted.
func TestWSInvalidUTF8Repaired(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	raw := wsConnect(t, e, "/ws/u", nil)
	env := wsConnect(t, e, "/ws/u", v1())
	producer := natstest.Connect(t, srv.ClientURL())
	waitWSInterest(t, producer, "/u", raw, env)
	if err := producer.Publish("herald.ev./u._._", []byte("a\xffb")); err != nil {
		t.Fatal(err)
	}
	raw.waitMsg("a\uFFFDb")
	natstest.Eventually(t, 10*time.Second, func() bool {
		for _, m := range env.snapshot() {
			if strings.Contains(m, "a\uFFFDb") {
				return true
			}
		}
		return false
	}, "the herald.v1 client did not get the repaired text")
	for _, m := range append(raw.snapshot(), env.snapshot()...) {
		if !utf8.ValidString(m) {
			t.Fatalf("invalid UTF-8 in a text frame: %q", m)
		}
	}
	if got := counter(t, e.reg, "herald_edge_ws_text_repaired_total"); got < 1 {
		t.Fatal("no repair counted")
	}
}

// Class 10: a client's text message that is not UTF-8 fails the
// connection with 1007 (RFC 6455 §8.1) and is not published.
func TestWSInboundInvalidUTF8Closes(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	sub, err := natstest.Connect(t, srv.ClientURL()).SubscribeSync("herald.in.>")
	if err != nil {
		t.Fatal(err)
	}
	c := wsConnect(t, e, "/ws/in", nil)
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte("{\"message\":\"a\xffb\"}")); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.waitClose(); code != websocket.StatusInvalidFramePayloadData {
		t.Fatalf("close %d, want 1007", code)
	}
	if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("published %q", m.Data)
	}
	if got := counter(t, e.reg, "herald_edge_disconnects_total", "reason", ReasonBadData.Code); got != 1 {
		t.Fatalf("bad_data disconnects = %v", got)
	}
}

// Class 11: a WebSocket handshake that is refused has no effect: it does
// not replace the live connection whose clientId it names.
func TestRefusedHandshakeReplacesNobody(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	live := connect(t, e, "/sse/%2Fh?clientId=me", nil)
	liveWS := wsConnect(t, e, "/ws/h?clientId=you", nil)
	for _, h := range []http.Header{
		{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}},                                                   // no key
		{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"8"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, // old version
		{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"c2hvcnQ="}},                // short key
	} {
		for _, id := range []string{"me", "you"} {
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/ws/h?clientId="+id, nil)
			req.Header = h
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("%v: %d, want 400", h, resp.StatusCode)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // a replace notice would have arrived by now
	if live.isClosed() || len(liveWS.snapshot()) != 0 || e.Connections() != 2 {
		t.Fatalf("a refused handshake replaced a live connection (connections %d)", e.Connections())
	}
}

// Class 12: control messages no edge would send are dropped and counted:
// a replace notice for "any" clientId must not close a whole name.
func TestForgedReplaceNoticeDropped(t *testing.T) {
	srv := natstest.StartServer(t)
	e := startEdge(t, srv.ClientURL(), Config{})
	a := connect(t, e, "/sse/Name", nil)
	b := connect(t, e, "/sse/Name?clientId=b", nil)
	producer := natstest.Connect(t, srv.ClientURL())
	for _, h := range []nats.Header{
		{broker.HeaderControl: {broker.ControlReplace}, broker.HeaderSince: {"9999999999999999999"}},
		{broker.HeaderControl: {broker.ControlReplace}, broker.HeaderConn: {"x"}, broker.HeaderSince: {"1"}},
	} {
		if err := producer.PublishMsg(&nats.Msg{Subject: "herald.sys.conn.Name._", Header: h}); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return counter(t, e.reg, "herald_edge_dropped_total", "reason", broker.RejectBadControl) == 2
	}, "the forged notices were not counted")
	if err := producer.Publish("herald.ev.Name._._", []byte("still here")); err != nil {
		t.Fatal(err)
	}
	a.waitData("message", "still here")
	b.waitData("message", "still here")
}

// Class 1, the backstop: a replay that cannot make progress while the
// stream answers (here the edge's NATS user may not use direct gets, a
// fault of the deployment) ends with herald.gap (unavailable) and live
// events after a bounded number of tries, never in silence.
func TestReplayThatCannotProgressEndsWithGap(t *testing.T) {
	if testing.Short() {
		t.Skip("six replay attempts of five seconds each")
	}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "edge", Password: "edge-password",
			Permissions: &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{"$JS.API.DIRECT.GET.>"}}}},
			{Username: "producer", Password: "producer-password"}}}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	u := strings.Replace(srv.ClientURL(), "nats://", "nats://edge:edge-password@", 1)
	e := startEdge(t, u, Config{History: &broker.HistoryConfig{}})
	producer := natstest.Connect(t, strings.Replace(srv.ClientURL(), "nats://", "nats://producer:producer-password@", 1))
	publishSeq(t, producer, "herald.ev.U._._", 0, 2)
	probe := connect(t, e, "/sse/U", nil)
	epoch, _, _ := strings.Cut(probe.snapshot()[0].ID, ":")
	c := connect(t, e, "/sse/U", http.Header{"Last-Event-ID": {epoch + ":1"}}) // event 1 must be replayed: it cannot be
	natstest.Eventually(t, 90*time.Second, func() bool { return len(gapOf(c)) > 0 }, "no herald.gap")
	if r := gapReason(t, gapOf(c)[0]); r != gapUnavailable {
		t.Fatalf("gap reason %q", r)
	}
	publishSeq(t, producer, "herald.ev.U._._", 7, 1)
	c.waitData("message", "7")
}
