package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/app"
	"github.com/herald-push/herald/internal/browsertest"
	"github.com/herald-push/herald/internal/natstest"
	"github.com/herald-push/herald/internal/sseclient"
)

// defaultBase is the address README's commands use: cmd/embedded's default.
const defaultBase = "http://" + app.DefaultListen

// TestDemoPageWalkthrough runs README's five-minute walkthrough against
// cmd/embedded with real headless Chromium: the server starts with step
// 1's flags, a client subscribes with step 2's URL and sees the pode.open
// README shows, two tabs of the demo page connect with their defaults, a
// message typed in one tab's WebSocket box reaches both tabs over their
// WebSockets and their SSE connections (one address space), and every
// publish of the walkthrough, HTTP and NATS, reaches the subscriber and
// both panels of both tabs.
func TestDemoPageWalkthrough(t *testing.T) {
	w := readWalkthrough(t)
	b := browsertest.Launch(t)

	var logs natstest.SyncBuffer
	args := append(append([]string(nil), w.startArgs...),
		"-listen", "127.0.0.1:0", "-nats-listen", "127.0.0.1:0", "-data", t.TempDir())
	addrs, cancel, done := started(t, app.RunEmbedded, args, &logs)
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	base := "http://" + addrs.HTTP
	local := func(url string) string {
		t.Helper()
		if !strings.HasPrefix(url, defaultBase+"/") {
			t.Fatalf("README walkthrough uses %s, not cmd/embedded's default address %s", url, defaultBase)
		}
		return base + strings.TrimPrefix(url, defaultBase)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()

	// Step 2: the subscriber.
	ctx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	stream, err := sseclient.Dial(ctx, &http.Client{}, local(w.subscribe), nil)
	if err != nil {
		t.Fatalf("step 2 (%s): %v", w.subscribe, err)
	}
	defer stream.Close()
	streamEvents := make(chan sseclient.Event, 64)
	go func() {
		defer close(streamEvents)
		for {
			ev, err := stream.Next()
			if err != nil {
				return
			}
			streamEvents <- ev
		}
	}()
	// nextEvent returns the subscriber's next event, keep-alives aside.
	nextEvent := func(what string) sseclient.Event {
		t.Helper()
		for {
			select {
			case ev, ok := <-streamEvents:
				if !ok {
					t.Fatalf("%s: the subscriber's stream ended", what)
				}
				if ev.Type != "pode.ping" {
					return ev
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: the subscriber received nothing within 30s", what)
			}
		}
	}
	open := nextEvent("step 2")
	var opened struct{ Name, Group string }
	if err := json.Unmarshal([]byte(open.Data), &opened); open.Type != "pode.open" || err != nil || opened != w.shownOpen {
		t.Fatalf("step 2: first event %s %s, want pode.open with name and group %+v as README shows", open.Type, open.Data, w.shownOpen)
	}
	if opened.Name != app.DemoName || opened.Group != app.DemoGroup {
		t.Errorf("the walkthrough subscribes to %+v, the demo page connects to name %q group %q", opened, app.DemoName, app.DemoGroup)
	}

	// Step 3: two tabs of the demo page, connected with its defaults.
	tabs := []*browsertest.Page{b.Open(t, base+"/"), b.Open(t, base+"/")}
	for i, tab := range tabs {
		tab.Wait(t, 30*time.Second, `document.getElementById("sse-status").textContent.includes("as clientId") &&
			document.getElementById("ws-status").textContent.includes("as clientId")`,
			fmt.Sprintf("tab %d connected over SSE and WebSocket", i+1))
	}
	// received counts what each panel showed, by event type and data, so
	// that an event published twice must arrive twice.
	received := map[string]int{}
	expect := func(what, event, data string) {
		t.Helper()
		if event == "" {
			event = "message"
		}
		key := event + "\x00" + data
		received[key]++
		for i, tab := range tabs {
			for _, panel := range []string{"sse", "ws"} {
				tab.Wait(t, 30*time.Second, countEntries(panel, event, data)+fmt.Sprintf(" >= %d", received[key]),
					fmt.Sprintf("%s: tab %d's %s panel shows %s %q", what, i+1, panel, event, data))
			}
		}
		if ev := nextEvent(what); ev.Type != event || ev.Data != data {
			t.Errorf("%s: the subscriber received %s %q, want %s %q", what, ev.Type, ev.Data, event, data)
		}
	}

	tctx, cancelTabs := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelTabs()
	const typed = "hello from tab 1 ✓"
	if err := tabs[0].Eval(tctx, `document.getElementById("ws-text").focus()`, nil); err != nil {
		t.Fatal(err)
	}
	if err := tabs[0].Type(tctx, typed); err != nil {
		t.Fatal(err)
	}
	if err := tabs[0].Press(tctx, "Enter"); err != nil {
		t.Fatal(err)
	}
	expect("step 3 (a message typed in tab 1)", "", typed)

	// Steps 4 to 6: every publish.
	nc, err := nats.Connect(addrs.NATS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, p := range w.publishes {
		if p.subject != "" {
			msg := nats.NewMsg(p.subject)
			msg.Data = []byte(p.data)
			for k, v := range p.headers {
				msg.Header.Set(k, v)
			}
			if err := nc.PublishMsg(msg); err != nil {
				t.Fatalf("%s: %v", p.command, err)
			}
		} else {
			req, _ := http.NewRequest(http.MethodPost, local(p.url), strings.NewReader(p.body))
			for k, v := range p.headers {
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", p.command, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := strings.TrimSpace(string(body)); resp.StatusCode != http.StatusAccepted || (p.shown != "" && got != p.shown) {
				t.Fatalf("%s: %d %s, want 202 %s as README shows", p.command, resp.StatusCode, got, p.shown)
			}
		}
		expect(p.command, p.event, p.data)
	}

	for i, tab := range tabs {
		for _, l := range tab.Logs() {
			if strings.Contains(l, "Content Security Policy") || strings.HasPrefix(l, "exception") {
				t.Errorf("tab %d: %s", i+1, l)
			}
		}
	}
}

// countEntries is a JavaScript expression: how many events of type event
// with data the demo page's panel ("sse" or "ws") shows as received.
func countEntries(panel, event, data string) string {
	ev, _ := json.Marshal(event)
	d, _ := json.Marshal(data)
	return fmt.Sprintf(`Array.from(document.querySelectorAll("#%s-log li")).filter(function (li) {
		return li.className === "" && li.querySelector(".ev").textContent === %s &&
			li.querySelector(".data").textContent.trim() === %s;
	}).length`, panel, ev, d)
}
