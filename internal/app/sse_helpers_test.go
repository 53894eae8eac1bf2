package app_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/sseclient"
)

// sseStream is a client's event stream, read in the background.
type sseStream struct {
	events chan sseclient.Event
	done   chan struct{} // closed when the stream ends
	cancel context.CancelFunc
	open   sseclient.Event // pode.open
}

// openSSE connects to base+path with the extra headers and waits for
// pode.open. The stream is closed by t.Cleanup.
func openSSE(t *testing.T, base, path string, header http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := sseclient.Dial(ctx, &http.Client{}, base+path, header)
	if err != nil {
		cancel()
		t.Fatalf("SSE %s: %v", path, err)
	}
	s := &sseStream{events: make(chan sseclient.Event, 1024), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(s.done)
		for {
			ev, err := st.Next()
			if err != nil {
				return
			}
			if ev.Type == "pode.ping" {
				continue
			}
			s.events <- ev
		}
	}()
	t.Cleanup(s.close)
	s.open = s.next(t, 10*time.Second)
	if s.open.Type != "pode.open" {
		t.Fatalf("SSE %s: first event %+v, want pode.open", path, s.open)
	}
	return s
}

func (s *sseStream) close() {
	s.cancel()
	<-s.done
}

// next returns the next event, failing the test after within.
func (s *sseStream) next(t *testing.T, within time.Duration) sseclient.Event {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-s.done:
		select {
		case ev := <-s.events:
			return ev
		default:
		}
		t.Fatal("the event stream ended")
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
	}
	panic("unreachable")
}

// expect reads the next events and requires their types and data, in
// order: each want is "type data" ("message x", "herald.gap").
func (s *sseStream) expect(t *testing.T, within time.Duration, want ...string) []sseclient.Event {
	t.Helper()
	var got []sseclient.Event
	for _, w := range want {
		typ, data, _ := strings.Cut(w, " ")
		ev := s.next(t, within)
		got = append(got, ev)
		if ev.Type != typ || (data != "" && ev.Data != data) {
			t.Fatalf("event %d: %+v, want %q (events so far %+v)", len(got), ev, w, got)
		}
	}
	return got
}

// publishHTTP posts body to base+"/publish" with token and returns the
// status and answer.
func publishHTTP(t *testing.T, base, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/publish", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /publish: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// readyz returns /readyz's status and body.
func readyz(base string) (int, string, error) {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// waitReadyz polls /readyz until it answers want (200 or 503).
func waitReadyz(t *testing.T, base string, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		code, body, err := readyz(base)
		if err == nil && code == want {
			return body
		}
		last = body
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer %d within %v (last: %d %q)", want, within, code, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
