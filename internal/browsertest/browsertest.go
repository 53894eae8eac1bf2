// Package browsertest drives a real headless Chromium (Debian's chromium
// package) for tests, through the Chrome DevTools Protocol over a
// WebSocket: open pages in tabs, evaluate JavaScript in them, type text,
// and read what the page logged (console messages, uncaught exceptions,
// Content-Security-Policy violations).
//
// Chromium is found on PATH; without it a test is skipped on a developer's
// machine and fails under CI (CI set), where .ci/run installs it.
// Everything Launch starts is stopped by t.Cleanup.
package browsertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Timeout bounds one DevTools command and the browser's start.
const Timeout = 30 * time.Second

// Tick is how often Page.Wait evaluates its condition.
const Tick = 50 * time.Millisecond

// Path returns the path of Debian's chromium. Without it the test is
// skipped, or fails when the CI environment variable is set.
func Path(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("browsertest: chromium is not installed; .ci/run installs Debian's chromium package")
	}
	t.Skip("browsertest: chromium not installed (apt-get install chromium)")
	return ""
}

// Browser is a running headless Chromium and its DevTools connection.
type Browser struct {
	cmd    *exec.Cmd
	ws     *websocket.Conn
	stderr *tailBuffer
	read   chan struct{} // closed when the reader stops

	mu      sync.Mutex
	nextID  int64                // guarded by mu
	pending map[int64]chan reply // guarded by mu; commands awaiting replies
	logs    map[string][]string  // guarded by mu; per session: what the page logged
	err     error                // guarded by mu; why the reader stopped
}

// reply is the answer to one command.
type reply struct {
	Result json.RawMessage
	Err    error
}

// devToolsURL is the line Chromium prints once its DevTools endpoint
// listens.
var devToolsURL = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// Launch starts headless Chromium with a fresh profile and connects to it.
// It is stopped, with every process it started, by t.Cleanup.
func Launch(t testing.TB) *Browser {
	t.Helper()
	path := Path(t)
	b := &Browser{
		stderr:  &tailBuffer{found: make(chan string, 1)},
		read:    make(chan struct{}),
		pending: map[int64]chan reply{},
		logs:    map[string][]string{},
	}
	b.cmd = exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1400,900",
		"--user-data-dir="+t.TempDir(), "about:blank")
	b.cmd.Stderr = b.stderr
	// Chromium starts helper processes: give them a process group so that
	// one signal stops them all.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.WaitDelay = 5 * time.Second
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("browsertest: start chromium: %v", err)
	}
	t.Cleanup(b.close)

	var url string
	select {
	case url = <-b.stderr.found:
	case <-time.After(Timeout):
		t.Fatalf("browsertest: chromium printed no DevTools address within %v:\n%s", Timeout, b.stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("browsertest: connect to %s: %v\n%s", url, err, b.stderr)
	}
	ws.SetReadLimit(64 << 20) // screenshots and large evaluations
	b.ws = ws
	go b.readLoop()
	return b
}

// close ends the DevTools connection and stops Chromium and its helpers.
func (b *Browser) close() {
	if b.ws != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = b.call(ctx, "", "Browser.close", nil, nil)
		cancel()
		_ = b.ws.CloseNow()
		<-b.read
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	_ = b.cmd.Wait()
}

// readLoop delivers replies to their commands and records what pages log.
func (b *Browser) readLoop() {
	defer close(b.read)
	var err error
	for {
		var data []byte
		_, data, err = b.ws.Read(context.Background())
		if err != nil {
			break
		}
		var m struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
			Method    string          `json:"method"`
			Params    json.RawMessage `json:"params"`
			SessionID string          `json:"sessionId"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if m.ID != 0 {
			r := reply{Result: m.Result}
			if m.Error != nil {
				r.Err = fmt.Errorf("browsertest: DevTools error %d: %s", m.Error.Code, m.Error.Message)
			}
			b.mu.Lock()
			ch := b.pending[m.ID]
			delete(b.pending, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- r
			}
			continue
		}
		if text := logText(m.Method, m.Params); text != "" {
			b.mu.Lock()
			b.logs[m.SessionID] = append(b.logs[m.SessionID], text)
			b.mu.Unlock()
		}
	}
	b.mu.Lock()
	b.err = fmt.Errorf("browsertest: DevTools connection ended: %w", err)
	for id, ch := range b.pending {
		ch <- reply{Err: b.err}
		delete(b.pending, id)
	}
	b.mu.Unlock()
}

// logText renders a console message, an uncaught exception or a browser
// log entry (where CSP violations and failed loads appear); "" for any
// other event.
func logText(method string, params json.RawMessage) string {
	switch method {
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		_ = json.Unmarshal(params, &p)
		parts := []string{"console." + p.Type + ":"}
		for _, a := range p.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		return strings.Join(parts, " ")
	case "Runtime.exceptionThrown":
		var p struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		_ = json.Unmarshal(params, &p)
		return "exception: " + p.Details.Text + " " + p.Details.Exception.Description
	case "Log.entryAdded":
		var p struct {
			Entry struct {
				Level  string `json:"level"`
				Source string `json:"source"`
				Text   string `json:"text"`
			} `json:"entry"`
		}
		_ = json.Unmarshal(params, &p)
		return "log." + p.Entry.Level + " (" + p.Entry.Source + "): " + p.Entry.Text
	}
	return ""
}

// call sends one DevTools command (to a page's session, or to the browser
// when session is empty) and decodes its result into result, if not nil.
func (b *Browser) call(ctx context.Context, session, method string, params, result any) error {
	b.mu.Lock()
	if b.err != nil {
		b.mu.Unlock()
		return b.err
	}
	b.nextID++
	id := b.nextID
	ch := make(chan reply, 1)
	b.pending[id] = ch
	b.mu.Unlock()

	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	data, err := json.Marshal(msg)
	if err == nil {
		err = b.ws.Write(ctx, websocket.MessageText, data)
	}
	if err != nil {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("browsertest: %s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return fmt.Errorf("%s: %w", method, r.Err)
		}
		if result != nil {
			return json.Unmarshal(r.Result, result)
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("browsertest: %s: %w", method, ctx.Err())
	}
}

// Page is one tab.
type Page struct {
	b       *Browser
	session string
}

// Open opens url in a new tab and returns it once the tab is attached;
// the page may still be loading (use Wait).
func (b *Browser) Open(t testing.TB, url string) *Page {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatalf("browsertest: open tab: %v", err)
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		t.Fatalf("browsertest: attach to tab: %v", err)
	}
	p := &Page{b: b, session: attached.SessionID}
	// Record the page's console, exceptions and log entries from the start.
	for _, domain := range []string{"Runtime.enable", "Log.enable", "Page.enable"} {
		if err := b.call(ctx, p.session, domain, nil, nil); err != nil {
			t.Fatalf("browsertest: %v", err)
		}
	}
	if err := b.call(ctx, p.session, "Page.navigate", map[string]any{"url": url}, nil); err != nil {
		t.Fatalf("browsertest: navigate to %s: %v", url, err)
	}
	return p
}

// Eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its JSON value into out, if not nil. An exception is an
// error.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(ctx, p.session, "Runtime.evaluate",
		map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r)
	if err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("browsertest: %s: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

// Wait evaluates cond, a JavaScript expression, every Tick until it is
// true; the test fails when timeout passes first, showing what the page
// logged.
func (p *Page) Wait(t testing.TB, timeout time.Duration, cond, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		var ok bool
		lastErr = p.Eval(ctx, "!!("+cond+")", &ok)
		cancel()
		if ok && lastErr == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("browsertest: %s: not true within %v (last error: %v); the page logged:\n%s",
				what, timeout, lastErr, strings.Join(p.Logs(), "\n"))
		}
		time.Sleep(Tick)
	}
}

// Type inserts text at the focused element, as typing or pasting it does
// (input events fire).
func (p *Page) Type(ctx context.Context, text string) error {
	return p.b.call(ctx, p.session, "Input.insertText", map[string]any{"text": text}, nil)
}

// keys are the keys Press knows, with their key codes.
var keys = map[string]int{"Enter": 13, "Tab": 9, "Escape": 27, "Backspace": 8}

// Press presses and releases a key (Enter, Tab, Escape or Backspace) at
// the focused element.
func (p *Page) Press(ctx context.Context, key string) error {
	code, ok := keys[key]
	if !ok {
		return fmt.Errorf("browsertest: Press: unknown key %q", key)
	}
	down := map[string]any{"type": "rawKeyDown", "key": key, "code": key, "windowsVirtualKeyCode": code}
	if key == "Enter" {
		down["type"], down["text"] = "keyDown", "\r"
	}
	if err := p.b.call(ctx, p.session, "Input.dispatchKeyEvent", down, nil); err != nil {
		return err
	}
	return p.b.call(ctx, p.session, "Input.dispatchKeyEvent",
		map[string]any{"type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code}, nil)
}

// Logs returns what the page logged so far: console messages, uncaught
// exceptions and browser log entries (CSP violations, failed requests).
func (p *Page) Logs() []string {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	return append([]string(nil), p.b.logs[p.session]...)
}

// Screenshot writes a PNG of the page's viewport to path.
func (p *Page) Screenshot(ctx context.Context, path string) error {
	var r struct {
		Data string `json:"data"`
	}
	if err := p.b.call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}

// tailBuffer keeps the last 64 KiB of Chromium's standard error and
// reports the DevTools address once it appears.
type tailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	line  []byte      // the incomplete last line, until the URL is found
	found chan string // receives the DevTools URL once
	sent  bool        // the URL was found
}

// Write implements io.Writer.
func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > 64<<10 {
		w.buf = w.buf[len(w.buf)-64<<10:]
	}
	// Look at complete lines only: a partial one may hold half the URL.
	w.line = append(w.line, p...)
	for !w.sent {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			break
		}
		if m := devToolsURL.FindSubmatch(w.line[:i]); m != nil {
			w.found <- string(m[1])
			w.sent = true
		}
		w.line = w.line[i+1:]
	}
	if w.sent {
		w.line = nil
	}
	return len(p), nil
}

// String returns the kept output.
func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
