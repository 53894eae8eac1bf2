package edge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzInboundDecode checks the client message decoder: it never panics,
// whatever it accepts re-encodes to one JSON object that decodes to the
// same message, and the published body never grows without bound.
func FuzzInboundDecode(f *testing.F) {
	for _, s := range []string{
		`{"message":"hi"}`,
		`{"message":{"a":[1,2,{"b":null}]},"path":"/x%20y","clientId":"c1","group":"G","direct":true}`,
		`{"Message":1}`,
		`{"message":1,"extra":2}`,
		`{"message":null}`,
		`{"message":1}{}`,
		`[1]`,
		`{"message":"\u0000\ud800"}`,
		`{"message":1,"path":"%zz"}`,
		`{"message":1,"group":"a\nb"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeInbound(b)
		if err != nil {
			return
		}
		if len(m.Message) == 0 || bytes.Equal(m.Message, []byte("null")) {
			t.Fatalf("accepted %q without a message", b)
		}
		body := m.encode()
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatalf("body %q of %q is not a JSON object: %v", body, b, err)
		}
		// Compact JSON and decoded strings are no longer than their input,
		// apart from invalid UTF-8 turned into U+FFFD (3 bytes for 1).
		if len(body) > 3*len(b)+64 {
			t.Fatalf("body of %d bytes for %d bytes of input", len(body), len(b))
		}
		if strings.ContainsAny(m.Path, "%+") {
			return // decoding the path again would decode it twice
		}
		again, err := decodeInbound(body)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", body, err)
		}
		if !bytes.Equal(again.Message, m.Message) || again.Path != m.Path || again.Group != m.Group ||
			again.ClientID != m.ClientID || again.Direct != m.Direct {
			t.Fatalf("round trip changed %+v into %+v", m, again)
		}
	})
}

func TestDecodeInbound(t *testing.T) {
	for _, tc := range []struct {
		in, body, err string
	}{
		{in: `{"message":"hi"}`, body: `{"message":"hi"}`},
		{in: ` { "message" : { "a" : [ 1 , 2 ] } , "direct" : true } `, body: `{"message":{"a":[1,2]},"direct":true}`},
		{in: `{"message":"<b>&</b>"}`, body: `{"message":"<b>&</b>"}`},
		{in: `{"message":1,"path":"/a%2Fb+c","clientId":"s:x.y","group":"G"}`, body: `{"message":1,"path":"/a/b c","clientId":"s:x.y","group":"G"}`},
		{in: `{"message":1,"path":null,"group":null,"clientId":null,"direct":null}`, body: `{"message":1}`},
		{in: `{"MESSAGE":false}`, body: `{"message":false}`},
		{in: ``, err: "want a JSON object"},
		{in: `"message"`, err: "want a JSON object"},
		{in: `{"message":1,"other":1}`, err: "unknown field"},
		{in: `{"message":1} x`, err: "data after the object"},
		{in: `{"message":null}`, err: "message: required"},
		{in: `{}`, err: "message: required"},
		{in: `{"message":1,"direct":1}`, err: "malformed JSON"},
		{in: `{"message":1,"path":1}`, err: "malformed JSON"},
		{in: `{"message":1,"path":"%"}`, err: "path: bad URL encoding"},
		{in: `{"message":1,"group":"` + strings.Repeat("g", 300) + `"}`, err: "longer than"},
		{in: `{"message":1,"clientId":"a\u0000"}`, err: "control character"},
	} {
		m, err := decodeInbound([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("decode %q: %v, want an error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("decode %q: %v", tc.in, err)
			continue
		}
		if got := string(m.encode()); got != tc.body {
			t.Errorf("decode %q: body %s, want %s", tc.in, got, tc.body)
		}
	}
}
