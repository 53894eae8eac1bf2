package edge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herald-push/herald/internal/sseclient"
)

// decodeAll parses frames with the reference (WHATWG) parser.
func decodeAll(t *testing.T, b []byte) []sseclient.Event {
	t.Helper()
	out, err := sseclient.ReadAll(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEncodeSSE(t *testing.T) {
	for _, tc := range []struct {
		name, id, typ, data, want string
	}{
		{"plain", "", "", "hi", "data: hi\r\n\r\n"},
		{"all fields", "7", "Date", `{"D":1}`, "id: 7\r\nevent: Date\r\ndata: {\"D\":1}\r\n\r\n"},
		{"empty data", "", "pode.close", "", "event: pode.close\r\ndata: \r\n\r\n"},
		{"lf", "", "", "a\nb", "data: a\r\ndata: b\r\n\r\n"},
		{"crlf", "", "", "a\r\nb", "data: a\r\ndata: b\r\n\r\n"},
		{"cr", "", "", "a\rb", "data: a\r\ndata: b\r\n\r\n"},
		{"trailing newline", "", "", "a\n", "data: a\r\ndata: \r\n\r\n"},
		{"field injection", "1\r\nevent: x", "t\ndata: y", "d", "id: 1  event: x\r\nevent: t data: y\r\ndata: d\r\n\r\n"},
		{"nul in id", "a\x00b", "", "d", "id: a b\r\ndata: d\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(encodeSSE(tc.id, tc.typ, []byte(tc.data))); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOpenFrame(t *testing.T) {
	got := string(openFrame(5000, "", "3f2a", "admins", "Events"))
	want := "retry: 5000\r\nevent: pode.open\r\ndata: {\"clientId\":\"3f2a\",\"group\":\"admins\",\"name\":\"Events\"}\r\n\r\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// Pode does not escape; Herald does, so the JSON always parses.
	evs := decodeAll(t, openFrame(0, "e:1", `a"b`, "<g>", "n\\"))
	var d map[string]string
	if len(evs) != 1 || evs[0].ID != "e:1" || json.Unmarshal([]byte(evs[0].Data), &d) != nil || d["clientId"] != `a"b` || d["group"] != "<g>" || d["name"] != "n\\" {
		t.Fatalf("open frame %+v", evs)
	}
}

func TestEncodeEnvelope(t *testing.T) {
	for _, tc := range []struct{ id, typ, data, want string }{
		{"1", "Date", `{"D": 1}`, `{"id":"1","event":"Date","data":{"D":1}}`},
		{"", "", "plain <text>", `{"data":"plain <text>"}`},
		{"", "", "5", `{"data":5}`},
		{"", "", "", `{"data":""}`},
	} {
		if got := string(encodeEnvelope(tc.id, tc.typ, []byte(tc.data))); got != tc.want {
			t.Errorf("envelope(%q,%q,%q) = %s, want %s", tc.id, tc.typ, tc.data, got, tc.want)
		}
	}
}

// FuzzEncodeSSE: whatever a producer sends, a spec-conformant parser sees
// exactly one event with the same data (line ends normalised to LF, as
// the specification joins data lines), and id and type without CR, LF or NUL.
func FuzzEncodeSSE(f *testing.F) {
	for _, s := range []string{"", "x", "a\nb", "a\r\nb", "a\rb", "\n\ndata: x\n\n", "\nid: 9", "\nevent: admin", "\nretry: 1", "\x00", ": comment", "\r\n\r\n"} {
		f.Add("id", "type", s)
	}
	f.Add("1\r\nevent: x", "t\ndata: y", "d")
	f.Fuzz(func(t *testing.T, id, typ, data string) {
		frame := encodeSSE(id, typ, []byte(data))
		evs := decodeAll(t, frame)
		if len(evs) != 1 {
			t.Fatalf("%d events from one frame %q", len(evs), frame)
		}
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(data)
		if evs[0].Data != want {
			t.Fatalf("data %q, want %q", evs[0].Data, want)
		}
		clean := func(s string) string { return strings.NewReplacer("\r", " ", "\n", " ", "\x00", " ").Replace(s) }
		if wantID := clean(id); evs[0].ID != wantID {
			t.Fatalf("id %q, want %q", evs[0].ID, wantID)
		}
		wantType := clean(typ)
		if wantType == "" {
			wantType = "message"
		}
		if evs[0].Type != wantType {
			t.Fatalf("type %q, want %q", evs[0].Type, wantType)
		}
		if utf8.ValidString(data) && !utf8.Valid(frame[bytes.LastIndex(frame, []byte("data: ")):]) {
			t.Fatal("valid UTF-8 data became invalid")
		}
	})
}
