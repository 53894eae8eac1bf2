package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// walkthrough is what README's "Five-minute walkthrough" tells a reader to
// run, read from README.md so that the tests run the commands the reader
// copies.
type walkthrough struct {
	startArgs []string // flags of `go run ./cmd/embedded` (step 1)
	subscribe string   // URL of the first SSE curl (step 2)
	// shownOpen is the pode.open data README shows after the subscribe.
	shownOpen struct{ Name, Group string }
	publishes []walkPublish // every HTTP and NATS publish, in order
}

// walkPublish is one publish command of the walkthrough.
type walkPublish struct {
	command string // as README writes it (continuation lines joined)

	// HTTP (curl -X POST): URL, headers, body and the response README shows.
	url     string
	headers map[string]string
	body    string
	shown   string

	// NATS (nats pub): subject, headers and body.
	subject string

	// What a client receives: event type and data.
	event, data string
}

// readWalkthrough parses the walkthrough section of ../../README.md.
func readWalkthrough(t *testing.T) walkthrough {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Five-minute walkthrough\n")
	if !ok {
		t.Fatal("README.md has no \"## Five-minute walkthrough\" section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	w, err := parseWalkthrough(section)
	if err != nil {
		t.Fatalf("README walkthrough: %v", err)
	}
	return w
}

// codeBlock matches a fenced code block (indented or not) and its language.
var codeBlock = regexp.MustCompile("(?ms)^[ \t]*```([a-z]*)\n(.*?)^[ \t]*```")

func parseWalkthrough(section string) (walkthrough, error) {
	var w walkthrough
	var lastHTTP *walkPublish
	afterSubscribe := false
	for _, m := range codeBlock.FindAllStringSubmatch(section, -1) {
		lang, body := m[1], m[2]
		if lang != "sh" {
			// Output: the first one after the subscribe shows pode.open.
			if afterSubscribe && w.shownOpen.Name == "" {
				for _, line := range strings.Split(body, "\n") {
					if data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
						if err := json.Unmarshal([]byte(data), &w.shownOpen); err != nil {
							return w, errors.New("the pode.open shown after the subscribe is not JSON: " + data)
						}
						break
					}
				}
			}
			continue
		}
		for _, line := range joinContinued(body) {
			if shown, ok := strings.CutPrefix(line, "# "); ok && lastHTTP != nil {
				lastHTTP.shown = shown
				continue
			}
			args, err := shellFields(line)
			if err != nil {
				return w, err
			}
			switch {
			case len(args) >= 2 && args[0] == "go" && args[1] == "run":
				if len(args) < 3 || args[2] != "./cmd/embedded" {
					continue // not the server
				}
				w.startArgs = args[3:]
			case len(args) > 0 && args[0] == "curl":
				p, subscribe, err := parseCurl(line, args)
				if err != nil {
					return w, err
				}
				switch {
				case subscribe != "" && w.subscribe == "":
					w.subscribe, afterSubscribe = subscribe, true
				case p != nil:
					w.publishes = append(w.publishes, *p)
					lastHTTP = &w.publishes[len(w.publishes)-1]
				}
			case len(args) >= 2 && args[0] == "nats" && args[1] == "pub":
				p, err := parseNATSPub(line, args[2:])
				if err != nil {
					return w, err
				}
				w.publishes = append(w.publishes, p)
				lastHTTP = nil
			}
		}
	}
	switch {
	case w.startArgs == nil:
		return w, errors.New("no `go run ./cmd/embedded` step")
	case w.subscribe == "":
		return w, errors.New("no SSE subscribe (curl with Accept: text/event-stream)")
	case w.shownOpen.Name == "":
		return w, errors.New("no pode.open shown after the subscribe")
	case len(w.publishes) == 0:
		return w, errors.New("no publish")
	}
	return w, nil
}

// joinContinued returns the lines of a shell block, with lines ending in a
// backslash joined to the next and surrounding blanks removed.
func joinContinued(block string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(l)
			continue
		}
		cur.WriteString(line)
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	return out
}

// shellFields splits one shell command line into words as sh would for
// what the walkthrough uses: single and double quotes, a comment after #,
// and the end of the command at an unquoted |.
func shellFields(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				return nil, errors.New("unterminated quote in: " + line)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case (c == '#' && !inWord) || c == '|':
			i = len(line)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// parseCurl reads a curl command: a POST with -d is a publish, a GET with
// Accept: text/event-stream and no Last-Event-ID is a subscribe (its URL
// is returned). Commands that use shell variables are neither.
func parseCurl(line string, args []string) (*walkPublish, string, error) {
	p := &walkPublish{command: line, headers: map[string]string{}}
	for i := 1; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-H" || a == "-d" || a == "-X":
			if i+1 >= len(args) {
				return nil, "", errors.New("missing value after " + a + " in: " + line)
			}
			v := args[i+1]
			i++
			switch a {
			case "-H":
				k, val, _ := strings.Cut(v, ":")
				p.headers[strings.TrimSpace(k)] = strings.TrimSpace(val)
			case "-d":
				p.body = v
			}
		case strings.HasPrefix(a, "http"):
			p.url = a
		}
	}
	if strings.Contains(line, "$") {
		return nil, "", nil // needs the reader's shell (step 6)
	}
	if p.body != "" {
		var item struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(p.body), &item); err != nil {
			return nil, "", errors.New("publish body is not one JSON object: " + p.body)
		}
		p.event, p.data = item.Event, jsonData(item.Data)
		return p, "", nil
	}
	if p.headers["Accept"] == "text/event-stream" {
		return nil, p.url, nil
	}
	return nil, "", nil
}

// parseNATSPub reads the arguments of `nats pub`: -H Key:Value headers, the
// subject and the body.
func parseNATSPub(line string, args []string) (walkPublish, error) {
	p := walkPublish{command: line, headers: map[string]string{}}
	var rest []string
	for i := 0; i < len(args); i++ {
		if args[i] == "-H" && i+1 < len(args) {
			k, v, _ := strings.Cut(args[i+1], ":")
			p.headers[k] = v
			i++
			continue
		}
		rest = append(rest, args[i])
	}
	if len(rest) != 2 {
		return p, errors.New("want `nats pub [-H K:V]... subject body` in: " + line)
	}
	p.subject, p.data, p.event = rest[0], rest[1], p.headers["Herald-Event"]
	return p, nil
}

// jsonData is what a client receives for a publish's "data": a string's
// text, anything else as compact JSON.
func jsonData(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var b bytes.Buffer
	_ = json.Compact(&b, raw)
	return b.String()
}

func TestShellFields(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{`nats pub herald.ev./demo._._ 'hello from NATS'   # everyone`, []string{"nats", "pub", "herald.ev./demo._._", "hello from NATS"}},
		{`nats pub -H Herald-Id:7 s '{"D":1}'`, []string{"nats", "pub", "-H", "Herald-Id:7", "s", `{"D":1}`}},
		{`curl -sSN -H 'Accept: text/event-stream' 'http://x/sse/%2Fdemo?group=admins' | tee /tmp/f`, []string{"curl", "-sSN", "-H", "Accept: text/event-stream", "http://x/sse/%2Fdemo?group=admins"}},
		{`a "b c"d e#f`, []string{"a", "b cd", "e#f"}},
	}
	for _, tt := range tests {
		got, err := shellFields(tt.line)
		if err != nil || strings.Join(got, "\x00") != strings.Join(tt.want, "\x00") {
			t.Errorf("shellFields(%q) = %q, %v; want %q", tt.line, got, err, tt.want)
		}
	}
	if _, err := shellFields(`echo 'open`); err == nil {
		t.Error("an unterminated quote is not an error")
	}
}
