package app_test

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/internal/app"
)

// cmd/embedded echoes the WebSocket messages of the demo page's name, and
// of no other, unless -ws-echo says otherwise; the echo obeys the
// broadcast levels.
func TestEmbeddedDemoEcho(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		echoes map[string]bool // name → whether its messages come back
	}{
		{"default", nil, map[string]bool{app.DemoName: true, "/other": false}},
		{"-ws-echo empty turns it off", []string{"-ws-echo", ""}, map[string]bool{app.DemoName: false}},
		{"-ws-echo replaces the default", []string{"-ws-echo", "/chat"}, map[string]bool{app.DemoName: false, "/chat": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addrs, cancel, done := started(t, app.RunEmbedded, append([]string{"-listen", "127.0.0.1:0",
				"-nats-listen", "127.0.0.1:0", "-data", t.TempDir()}, tt.args...), io.Discard)
			defer stopped(t, cancel, done, 10*time.Second)
			for name, want := range tt.echoes {
				if got := echoes(t, addrs, name); got != want {
					t.Errorf("messages of %s echoed: %v, want %v", name, got, want)
				}
			}
		})
	}

	t.Run("broadcast levels apply", func(t *testing.T) {
		addrs, cancel, done := started(t, app.RunEmbedded, []string{"-listen", "127.0.0.1:0",
			"-nats-listen", "127.0.0.1:0", "-data", t.TempDir(), "-broadcast-levels", app.DemoName + "=group"}, io.Discard)
		defer stopped(t, cancel, done, 10*time.Second)
		ws := dialV1(t, addrs, app.DemoName)
		defer ws.CloseNow()
		send(t, ws, `{"message":"to everyone"}`)
		if m := readV1(t, ws); m.Event != "herald.error" || !strings.Contains(string(m.Data), `"broadcast_level"`) {
			t.Errorf("a name-wide echo under level group: got %s %s, want herald.error broadcast_level", m.Event, m.Data)
		}
	})
}

// echoes reports whether a WebSocket client of name gets its own message
// back ("direct": true, which Pode's echo returns to the sender). After the
// probe it sends a second message and waits until NATS has it, so the
// edge has handled the probe (its echo is queued); then it publishes an
// event to name: the first message the client reads tells.
func echoes(t *testing.T, addrs app.Addrs, name string) bool {
	t.Helper()
	nc, err := nats.Connect(addrs.NATS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	inbound, err := nc.SubscribeSync("herald.in.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ws := dialV1(t, addrs, name)
	defer ws.CloseNow()
	send(t, ws, `{"message":"probe","direct":true}`)
	send(t, ws, `{"message":"barrier"}`)
	for {
		msg, err := inbound.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("the barrier message never reached NATS: %v", err)
		}
		if strings.Contains(string(msg.Data), `"barrier"`) {
			break
		}
	}
	if err := nc.Publish("herald.ev."+name+"._._", []byte("event")); err != nil {
		t.Fatal(err)
	}
	switch m := readV1(t, ws); string(m.Data) {
	case `"probe"`:
		return true
	case `"event"`:
		return false
	default:
		t.Fatalf("client of %s read %s %s, want the probe or the event", name, m.Event, m.Data)
	}
	return false
}

type v1Message struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// dialV1 connects a herald.v1 WebSocket client to name (a path) and reads
// its pode.open.
func dialV1(t *testing.T, addrs app.Addrs, name string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addrs.HTTP+"/ws"+name, &websocket.DialOptions{Subprotocols: []string{"herald.v1"}})
	if err != nil {
		t.Fatalf("dial %s: %v", name, err)
	}
	if m := readV1(t, ws); m.Event != "pode.open" {
		t.Fatalf("first message %s %s, want pode.open", m.Event, m.Data)
	}
	return ws
}

func send(t *testing.T, ws *websocket.Conn, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
		t.Fatal(err)
	}
}

func readV1(t *testing.T, ws *websocket.Conn) v1Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m v1Message
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a herald.v1 message: %s", b)
	}
	return m
}
