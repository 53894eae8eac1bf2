package app

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/broker/tasks"
	"github.com/herald-push/herald/pkg/edge"
)

// readmeSection returns README's section under heading (a line "## X" or
// "### X"), up to the next heading of the same or a higher level outside
// code blocks.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	level := strings.IndexByte(heading, ' ')
	var out []string
	in, fenced := false, false
	for line := range strings.SplitSeq(string(readme), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if !fenced && strings.HasPrefix(line, "#") {
			n := strings.IndexFunc(line, func(r rune) bool { return r != '#' })
			switch {
			case line == heading:
				in = true
				continue
			case in && n > 0 && n <= level && line[n] == ' ':
				return strings.Join(out, "\n")
			}
		}
		if in {
			out = append(out, line)
		}
	}
	if !in {
		t.Fatalf("README has no %q", heading)
	}
	return strings.Join(out, "\n")
}

// tableRows returns the cells of the table rows in text, first cell first.
func tableRows(text string) [][]string {
	var rows [][]string
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// TestREADMECloseReasons: the close-reason table lists every reason of
// edge.CloseReasons with its WebSocket code.
func TestREADMECloseReasons(t *testing.T) {
	rows := tableRows(readmeSection(t, "## Close reasons"))
	for _, r := range edge.CloseReasons {
		found := false
		for _, row := range rows {
			if len(row) >= 4 && row[0] == "`"+r.Code+"`" {
				found = true
				if row[3] != strconv.Itoa(r.WSCode) {
					t.Errorf("README gives %s WebSocket code %s, close.go %d", r.Code, row[3], r.WSCode)
				}
			}
		}
		if !found {
			t.Errorf("README's close-reason table does not list %s", r.Code)
		}
	}
}

// TestREADMERolePermissions: the table of the roles' permissions shows
// exactly broker.Subjects.Permissions for the default prefix with every
// feature on (the history and lifecycle streams, tasks). A role may take
// several rows (its first cell starts with the role, e.g. "`edge`: tasks"):
// together they list its subjects.
func TestREADMERolePermissions(t *testing.T) {
	s := broker.MustSubjects("")
	names, err := tasks.NewNames("")
	if err != nil {
		t.Fatal(err)
	}
	streams := broker.Streams{
		History:    broker.HistoryConfig{}.StreamConfig(s).Name,
		Lifecycle:  broker.LifecycleStreamConfig{}.StreamConfig(s).Name,
		TaskQueue:  names.Queue,
		TaskBucket: names.Bucket,
	}
	literal := regexp.MustCompile("`([^`]*)`")
	roleCell := regexp.MustCompile("^`([a-z]+)`")
	type cells struct{ publish, subscribe []string }
	got := map[broker.Role]*cells{}
	for _, row := range tableRows(readmeSection(t, "### NATS credentials: who can do what")) {
		if len(row) != 3 {
			continue
		}
		m := roleCell.FindStringSubmatch(row[0])
		if m == nil {
			continue
		}
		role, err := broker.ParseRole(m[1])
		if err != nil {
			continue
		}
		c := got[role]
		if c == nil {
			c = &cells{}
			got[role] = c
		}
		if row[1] == "everything" || row[2] == "everything" {
			c.publish, c.subscribe = append(c.publish, "everything"), append(c.subscribe, "everything")
			continue
		}
		for _, l := range literal.FindAllStringSubmatch(row[1], -1) {
			c.publish = append(c.publish, l[1])
		}
		for _, l := range literal.FindAllStringSubmatch(row[2], -1) {
			c.subscribe = append(c.subscribe, l[1])
		}
	}
	for _, role := range broker.Roles {
		c := got[role]
		if c == nil {
			t.Errorf("README's permission table has no row for %s", role)
			continue
		}
		p, err := s.Permissions(role, streams)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil {
			p = &broker.Permissions{Publish: []string{"everything"}, Subscribe: []string{"everything"}}
		}
		for _, dir := range []struct {
			what      string
			got, want []string
		}{{"publish", c.publish, p.Publish}, {"subscribe", c.subscribe, p.Subscribe}} {
			g, w := slices.Sorted(slices.Values(dir.got)), slices.Sorted(slices.Values(dir.want))
			if !slices.Equal(g, w) {
				t.Errorf("README: %s may %s\n%q\nbroker.Permissions\n%q", role, dir.what, g, w)
			}
		}
	}
}
