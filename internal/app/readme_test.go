package app

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/broker"
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

// TestREADMERolePermissions: the table of each role's permissions shows
// exactly broker.Subjects.Permissions for the default prefix and stream.
func TestREADMERolePermissions(t *testing.T) {
	s := broker.MustSubjects("")
	stream := broker.HistoryConfig{}.StreamConfig(s).Name
	literal := regexp.MustCompile("`([^`]*)`")
	subjects := func(cell string) []string {
		var out []string
		for _, m := range literal.FindAllStringSubmatch(cell, -1) {
			out = append(out, m[1])
		}
		slices.Sort(out)
		return out
	}
	seen := map[broker.Role]bool{}
	for _, row := range tableRows(readmeSection(t, "### NATS credentials: who can do what")) {
		if len(row) != 3 {
			continue
		}
		role, err := broker.ParseRole(strings.Trim(row[0], "`"))
		if err != nil {
			continue
		}
		seen[role] = true
		p, err := s.Permissions(role, stream)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil {
			if row[1] != "everything" || row[2] != "everything" {
				t.Errorf("README gives %s %q / %q, want everything", role, row[1], row[2])
			}
			continue
		}
		for _, dir := range []struct {
			what string
			cell string
			want []string
		}{{"publish", row[1], p.Publish}, {"subscribe", row[2], p.Subscribe}} {
			want := slices.Sorted(slices.Values(dir.want))
			if got := subjects(dir.cell); !slices.Equal(got, want) {
				t.Errorf("README: %s may %s %q, broker.Permissions %q", role, dir.what, got, want)
			}
		}
	}
	for _, role := range broker.Roles {
		if !seen[role] {
			t.Errorf("README's permission table has no row for %s", role)
		}
	}
}
