package app

import (
	"errors"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/edge"
)

// codeOnly lists the edge.Config fields no option sets, each with the
// reason its doc comment gives.
var codeOnly = map[string]string{
	"History.DuplicateWindow": "outlasts every Publisher retry; a deployment that needs another creates the stream",
}

// TestOptionTableCoversEdgeConfig: every edge.Config field (and every
// field of its History) is filled by an option or listed in codeOnly, and
// every option's edge field exists.
func TestOptionTableCoversEdgeConfig(t *testing.T) {
	named := map[string]bool{}
	for _, op := range optionTable {
		if op.edge == "" {
			continue
		}
		named[op.edge] = true
		if !edgeFieldExists(op.edge) {
			t.Errorf("-%s names edge.Config field %q, which does not exist", op.name, op.edge)
		}
	}
	var fields []string
	for f := range reflect.TypeFor[edge.Config]().Fields() {
		fields = append(fields, f.Name)
	}
	for f := range reflect.TypeFor[broker.HistoryConfig]().Fields() {
		fields = append(fields, "History."+f.Name)
	}
	for _, f := range fields {
		if !named[f] && codeOnly[f] == "" && f != "ExtraSSERoutes" {
			t.Errorf("edge.Config field %s has no option (add a row with edge: %q, or a reason to codeOnly and to its doc comment)", f, f)
		}
		if named[f] && codeOnly[f] != "" {
			t.Errorf("edge.Config field %s has an option and is listed as code-only", f)
		}
	}
}

func edgeFieldExists(path string) bool {
	typ := reflect.TypeFor[edge.Config]()
	for part := range strings.SplitSeq(path, ".") {
		if typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		f, ok := typ.FieldByName(part)
		if !ok {
			return false
		}
		typ = f.Type
	}
	return true
}

// TestEdgeErrorsNameTheOption: a negative value of every numeric option
// that fills an edge.Config field is refused by edge.Config.Validate, and
// the error names the option and where the value came from.
func TestEdgeErrorsNameTheOption(t *testing.T) {
	for _, op := range optionTable {
		if op.edge == "" || op.modes&ModeEmbedded == 0 {
			continue
		}
		var bad string
		switch op.kind {
		case kindInt, kindFloat:
			bad = "-2"
		case kindDuration:
			bad = "-2s"
		default:
			continue
		}
		if op.edge == "History.MaxMsgs" {
			bad = "-2" // -1 means unlimited
		}
		if op.edge == "ConnectRate" {
			bad = "NaN" // a negative rate turns the limit off
		}
		t.Run(op.name, func(t *testing.T) {
			_, err := Load(ModeEmbedded, nil, func(k string) (string, bool) {
				if k == op.env() {
					return bad, true
				}
				return "", false
			}, io.Discard)
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Option != op.name || oe.Source != "env "+op.env() {
				t.Fatalf("%s=%s: err = %v, want an *OptionError on -%s from env %s", op.env(), bad, err, op.name, op.env())
			}
		})
	}
}

// TestREADMEOptions: README's Configuration table lists exactly the options
// of optionTable, under the binary they belong to, and a default cell that
// starts with one literal per option shows the table's defaults.
func TestREADMEOptions(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "\n## Configuration\n")
	if start < 0 {
		t.Fatal("README has no Configuration section")
	}
	text = text[start:]
	if end := strings.Index(text[1:], "\n## "); end > 0 {
		text = text[:end+1]
	}

	literal := regexp.MustCompile("`([^`]*)`")
	listed := map[string]Mode{}
	section := modeBoth
	for line := range strings.SplitSeq(text, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| ") || len(cells) < 4 {
			continue
		}
		first, def := strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2])
		switch first {
		case "**`cmd/embedded`**":
			section = ModeEmbedded
			continue
		case "**`cmd/edge`**":
			section = ModeEdge
			continue
		}
		var flags []string
		for _, m := range literal.FindAllStringSubmatch(first, -1) {
			if strings.HasPrefix(m[1], "-") {
				flags = append(flags, strings.TrimPrefix(m[1], "-"))
			}
		}
		var defs []string
		for _, m := range literal.FindAllStringSubmatch(def, -1) {
			defs = append(defs, m[1])
		}
		for i, name := range flags {
			if name == configOption {
				continue
			}
			op := lookupOption(name)
			if op == nil {
				t.Errorf("README lists -%s, which is no option", name)
				continue
			}
			if _, dup := listed[name]; dup {
				t.Errorf("README lists -%s twice", name)
			}
			listed[name] = section
			if op.modes != section {
				t.Errorf("README lists -%s under %v, but it is an option of %v", name, section, op.modes)
			}
			if strings.HasPrefix(def, "`") && len(defs) == len(flags) {
				mode := ModeEmbedded
				if section == ModeEdge {
					mode = ModeEdge
				}
				if !sameValue(op, defs[i], op.defaultFor(mode)) {
					t.Errorf("README shows default %q for -%s, the option table %q", defs[i], name, op.defaultFor(mode))
				}
			}
		}
	}
	for _, op := range optionTable {
		if _, ok := listed[op.name]; !ok {
			t.Errorf("README's Configuration table does not list -%s", op.name)
		}
	}
}

// sameValue reports whether two texts parse to the same value of op.
func sameValue(op *option, a, b string) bool {
	var x, y Options
	if setField(op, op.field(&x), a) != nil || setField(op, op.field(&y), b) != nil {
		return a == b
	}
	return reflect.DeepEqual(op.field(&x), op.field(&y))
}
