package sseclient

import (
	"strings"
	"testing"
)

func parseAll(t *testing.T, s string) []Event {
	t.Helper()
	out, err := ReadAll(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParser(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Event
	}{
		{"plain", "data: hi\n\n", []Event{{Type: "message", Data: "hi"}}},
		{"crlf and fields", "id: 7\r\nevent: Date\r\ndata: {\"D\":1}\r\n\r\n", []Event{{ID: "7", Type: "Date", Data: `{"D":1}`}}},
		{"multi-line", "data: a\r\ndata: \r\ndata: b\r\n\r\n", []Event{{Type: "message", Data: "a\n\nb"}}},
		{"bare cr", "data: a\rdata: b\r\r\n", []Event{{Type: "message", Data: "a\nb"}}},
		{"empty data fires", "event: pode.close\r\ndata: \r\n\r\n", []Event{{Type: "pode.close", Data: ""}}},
		{"no data no event", "event: x\n\ndata: y\n\n", []Event{{Type: "message", Data: "y"}}},
		{"comment", ": hi\ndata: y\n\n", []Event{{Type: "message", Data: "y"}}},
		{"id persists", "id: 1\ndata: a\n\ndata: b\n\n", []Event{{ID: "1", Type: "message", Data: "a"}, {ID: "1", Type: "message", Data: "b"}}},
		{"id with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", []Event{{ID: "1", Type: "message", Data: "a"}, {ID: "1", Type: "message", Data: "b"}}},
		{"retry", "retry: 5000\r\nevent: pode.open\r\ndata: {}\r\n\r\n", []Event{{Type: "pode.open", Data: "{}", Retry: 5000}}},
		{"bad retry ignored", "retry: 5x\ndata: a\n\n", []Event{{Type: "message", Data: "a"}}},
		{"no space after colon", "data:a\n\n", []Event{{Type: "message", Data: "a"}}},
		{"unterminated dropped", "data: a\n\ndata: b\n", []Event{{Type: "message", Data: "a"}}},
		{"field without colon", "data\n\n", []Event{{Type: "message", Data: ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseAll(t, tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("event %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParserLongLine(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	got := parseAll(t, "data: "+long+"\n\n")
	if len(got) != 1 || got[0].Data != long {
		t.Fatalf("long line not parsed whole: %d events", len(got))
	}
}

// An id line followed by a blank line dispatches nothing but sets the last
// event ID an EventSource reconnects with (WHATWG HTML, "dispatch the
// event"); events keep the id in force when they were dispatched.
func TestIDOnlyBlockSetsLastEventID(t *testing.T) {
	p := NewParser(strings.NewReader("id: 7\r\ndata: a\r\n\r\nid: ~proof~7\r\n\r\n"))
	ev, err := p.Next()
	if err != nil || ev.ID != "7" || ev.Data != "a" {
		t.Fatalf("first event %+v, %v", ev, err)
	}
	if _, err := p.Next(); err == nil {
		t.Fatal("the id-only block dispatched an event")
	}
	if got := p.LastEventID(); got != "~proof~7" {
		t.Fatalf("LastEventID() = %q, want the id-only block's", got)
	}
}
