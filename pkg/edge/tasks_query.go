package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/herald-push/herald/pkg/broker/tasks"
)

// Pode's task query: {"<Field>":{"op":"GT|LT|GE|LE|EQ|NE|LIKE|NOTLIKE","value":…},…},
// all conditions ANDed. Strings compare case-insensitively (PowerShell's
// operators); LIKE means "*value*" with * and ? as wildcards; dates compare
// as times; a field the task does not have (or has null) never matches.
// An unknown field, an unknown op or a missing op or value is refused with
// 400 naming it (Pode answers 500).

// taskQueryFields are the fields Pode allows, and their kinds.
var taskQueryFields = map[string]byte{
	"Id": 's', "AsyncRouteId": 's', "State": 's', "Error": 's', "CallbackSettings": 's', "User": 's', "Url": 's', "Method": 's',
	"StartingTime": 't', "CreationTime": 't', "CompletedTime": 't', "ExpireTime": 't',
	"Cancellable": 'b', "Progress": 'n',
}

var taskQueryOps = []string{"GT", "LT", "GE", "LE", "EQ", "NE", "LIKE", "NOTLIKE"}

type taskCond struct {
	field, op string
	kind      byte
	s         string
	t         time.Time
	n         float64
	b         bool
}

type taskFilter []taskCond

func parseTaskFilter(body []byte) (taskFilter, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil // no conditions: every task
	}
	var raw map[string]struct {
		Op    *string         `json:"op"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("query must be a JSON object of {\"op\",\"value\"} conditions: %v", err)
	}
	var f taskFilter
	for field, c := range raw {
		kind, ok := taskQueryFields[field]
		if !ok {
			names := make([]string, 0, len(taskQueryFields))
			for n := range taskQueryFields {
				names = append(names, n)
			}
			slices.Sort(names)
			return nil, fmt.Errorf("field %q cannot be queried (fields: %s)", field, strings.Join(names, ", "))
		}
		if c.Op == nil || len(c.Value) == 0 {
			return nil, fmt.Errorf("field %s: a condition needs both op and value", field)
		}
		op := strings.ToUpper(*c.Op)
		if !slices.Contains(taskQueryOps, op) {
			return nil, fmt.Errorf("field %s: unknown op %q (%s)", field, *c.Op, strings.Join(taskQueryOps, ", "))
		}
		cond := taskCond{field: field, op: op, kind: kind}
		var err error
		switch {
		case op == "LIKE" || op == "NOTLIKE" || kind == 's':
			err = json.Unmarshal(c.Value, &cond.s)
			cond.kind = 's'
			cond.s = strings.ToLower(cond.s)
		case kind == 't':
			var s string
			if err = json.Unmarshal(c.Value, &s); err == nil {
				cond.t, err = time.Parse(time.RFC3339Nano, s)
			}
		case kind == 'n':
			err = json.Unmarshal(c.Value, &cond.n)
		case kind == 'b':
			err = json.Unmarshal(c.Value, &cond.b)
			if op != "EQ" && op != "NE" {
				err = errors.New("only EQ and NE apply to a boolean")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("field %s: bad value %s: %v", field, c.Value, err)
		}
		f = append(f, cond)
	}
	return f, nil
}

// match reports whether a task meets every condition.
func (f taskFilter) match(rec *tasks.Record) bool {
	info := taskInfoOf(rec)
	for _, c := range f {
		if !c.match(rec, info) {
			return false
		}
	}
	return true
}

func (c taskCond) match(rec *tasks.Record, info taskInfo) bool {
	var s string
	var t *time.Time
	var n *float64
	switch c.field {
	case "Id":
		s = rec.ID
	case "AsyncRouteId":
		s = rec.Route
	case "State":
		s = rec.State
	case "Error":
		s = info.Error
	case "Url":
		s = rec.Path
	case "Method":
		s = rec.Method
	case "CallbackSettings", "User":
		return false // Herald's tasks have neither
	case "StartingTime":
		t = rec.Started
	case "CreationTime":
		t = &rec.Created
	case "CompletedTime":
		t = rec.Completed
	case "ExpireTime":
		t = &rec.Expire
	case "Progress":
		n = info.Progress
	case "Cancellable":
		return (rec.Cancellable == c.b) == (c.op == "EQ")
	}
	switch c.kind {
	case 's':
		if t != nil {
			s = podeTime(*t)
		} else if n != nil {
			s = string(tasks.FormatProgress(*n))
		} else if s == "" && (c.field != "State" && c.field != "Id") {
			return false // absent
		}
		v := strings.ToLower(s)
		switch c.op {
		case "LIKE":
			return wildcard("*"+c.s+"*", v)
		case "NOTLIKE":
			return !wildcard("*"+c.s+"*", v)
		}
		return compare(strings.Compare(v, c.s), c.op)
	case 't':
		if t == nil {
			return false
		}
		return compare(t.Compare(c.t), c.op)
	case 'n':
		if n == nil {
			return false
		}
		d := 0
		if *n < c.n {
			d = -1
		} else if *n > c.n {
			d = 1
		}
		return compare(d, c.op)
	}
	return false
}

func compare(d int, op string) bool {
	switch op {
	case "GT":
		return d > 0
	case "LT":
		return d < 0
	case "GE":
		return d >= 0
	case "LE":
		return d <= 0
	case "EQ":
		return d == 0
	case "NE":
		return d != 0
	}
	return false
}

// wildcard matches s against pattern with * (any run) and ? (one byte).
func wildcard(pattern, s string) bool {
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
