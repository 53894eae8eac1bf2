package policy_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/herald-push/herald/pkg/policy"
)

func TestLevelsPrecedence(t *testing.T) {
	tests := []struct {
		name   string
		levels policy.Levels
		target string
		want   policy.Level
	}{
		{"zero value is name", policy.Levels{}, "Orders", policy.LevelName},
		{"nil map is name", policy.NewLevels(nil), "Orders", policy.LevelName},
		{"default when neither set", policy.NewLevels(map[string]policy.Level{"Other": policy.LevelClientID}), "Orders", policy.LevelName},
		{"star over default", policy.NewLevels(map[string]policy.Level{"*": policy.LevelGroup}), "Orders", policy.LevelGroup},
		{"exact over star", policy.NewLevels(map[string]policy.Level{"*": policy.LevelGroup, "Orders": policy.LevelClientID}), "Orders", policy.LevelClientID},
		{"exact name level over stricter star", policy.NewLevels(map[string]policy.Level{"*": policy.LevelClientID, "Orders": policy.LevelName}), "Orders", policy.LevelName},
		{"star for other names", policy.NewLevels(map[string]policy.Level{"*": policy.LevelGroup, "Orders": policy.LevelClientID}), "Chat", policy.LevelGroup},
		{"names are case-sensitive", policy.NewLevels(map[string]policy.Level{"Orders": policy.LevelClientID}), "orders", policy.LevelName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.levels.Level(tt.target); got != tt.want {
				t.Errorf("Level(%q) = %v, want %v", tt.target, got, tt.want)
			}
		})
	}
}

func TestNewLevelsCopies(t *testing.T) {
	m := map[string]policy.Level{"Orders": policy.LevelGroup}
	ls := policy.NewLevels(m)
	m["Orders"] = policy.LevelName
	if got := ls.Level("Orders"); got != policy.LevelGroup {
		t.Errorf("Level after mutating the input map = %v, want group", got)
	}
	out := ls.Map()
	out["Orders"] = policy.LevelName
	if got := ls.Level("Orders"); got != policy.LevelGroup {
		t.Errorf("Level after mutating Map() = %v, want group", got)
	}
}

func TestLevelsCheck(t *testing.T) {
	tests := []struct {
		level               policy.Level
		hasGroup, hasClient bool
		allowed             bool
	}{
		{policy.LevelName, false, false, true},
		{policy.LevelName, true, false, true},
		{policy.LevelName, false, true, true},
		{policy.LevelName, true, true, true},
		{policy.LevelGroup, false, false, false},
		{policy.LevelGroup, true, false, true},
		{policy.LevelGroup, false, true, true},
		{policy.LevelGroup, true, true, true},
		{policy.LevelClientID, false, false, false},
		{policy.LevelClientID, true, false, false},
		{policy.LevelClientID, false, true, true},
		{policy.LevelClientID, true, true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/group=%v/client=%v", tt.level, tt.hasGroup, tt.hasClient), func(t *testing.T) {
			ls := policy.NewLevels(map[string]policy.Level{"Orders": tt.level})
			err := ls.Check("Orders", tt.hasGroup, tt.hasClient)
			if tt.allowed {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, policy.ErrBroadcastLevel) {
				t.Fatalf("Check = %v, want ErrBroadcastLevel", err)
			}
			var le *policy.LevelError
			if !errors.As(err, &le) {
				t.Fatalf("Check = %T, want *LevelError", err)
			}
			if le.Name != "Orders" || le.Level != tt.level {
				t.Errorf("LevelError = {%q, %v}, want {Orders, %v}", le.Name, le.Level, tt.level)
			}
			msg := err.Error()
			if !strings.Contains(msg, `"Orders"`) || !strings.Contains(msg, tt.level.String()) {
				t.Errorf("Error() = %q, want it to name %q and level %q", msg, "Orders", tt.level)
			}
			// Wrapped, it still matches.
			if !errors.Is(fmt.Errorf("send: %w", err), policy.ErrBroadcastLevel) {
				t.Error("wrapped LevelError does not match ErrBroadcastLevel")
			}
		})
	}
}

func TestLevelErrorIsOnlyBroadcastLevel(t *testing.T) {
	err := error(&policy.LevelError{Name: "n", Level: policy.LevelGroup})
	for _, other := range []error{policy.ErrBadSignature, policy.ErrInvalidIdentity, policy.ErrInvalidField} {
		if errors.Is(err, other) {
			t.Errorf("LevelError matches %v", other)
		}
	}
}

func TestLevelString(t *testing.T) {
	for l, want := range map[policy.Level]string{
		policy.LevelName:     "name",
		policy.LevelGroup:    "group",
		policy.LevelClientID: "clientid",
	} {
		if got := l.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", l, got, want)
		}
		back, err := policy.ParseLevel(want)
		if err != nil || back != l {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", want, back, err, l)
		}
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    policy.Level
		wantErr bool
	}{
		{"name", policy.LevelName, false},
		{"group", policy.LevelGroup, false},
		{"clientid", policy.LevelClientID, false},
		{"ClientId", policy.LevelClientID, false},
		{"GROUP", policy.LevelGroup, false},
		{"  group\t", policy.LevelGroup, false},
		{"", policy.LevelName, false}, // empty is the default
		{"client-id", 0, true},
		{"clients", 0, true},
		{"names", 0, true},
		{"*", 0, true},
		{"group,name", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := policy.ParseLevel(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseLevel(%q) = %v, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
					t.Errorf("error %q does not quote the input", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseLevel(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseLevels(t *testing.T) {
	tests := []struct {
		spec    string
		want    map[string]policy.Level
		wantErr bool
	}{
		{"", map[string]policy.Level{}, false},
		{" , ,", map[string]policy.Level{}, false},
		{"*=group", map[string]policy.Level{"*": policy.LevelGroup}, false},
		{"*=group,Orders=clientid", map[string]policy.Level{"*": policy.LevelGroup, "Orders": policy.LevelClientID}, false},
		{" *=group , Orders = clientid ", map[string]policy.Level{"*": policy.LevelGroup, "Orders": policy.LevelClientID}, false},
		{"Orders=CLIENTID,", map[string]policy.Level{"Orders": policy.LevelClientID}, false},
		{"Orders=group,Orders=name", map[string]policy.Level{"Orders": policy.LevelName}, false}, // last wins
		{"Orders", nil, true},
		{"=group", nil, true},
		{" =group", nil, true},
		{"Orders=", nil, true},
		{"*=", nil, true},
		{"Orders=all", nil, true},
		{"Orders=group=name", nil, true},
		{"*=group;Orders=name", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			ls, err := policy.ParseLevels(tt.spec)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseLevels(%q) = %v, want an error", tt.spec, ls.Map())
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLevels(%q): %v", tt.spec, err)
			}
			got := ls.Map()
			if len(got) != len(tt.want) {
				t.Fatalf("ParseLevels(%q) = %v, want %v", tt.spec, got, tt.want)
			}
			for k, v := range tt.want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("ParseLevels(%q)[%q] = %v (present %v), want %v", tt.spec, k, g, ok, v)
				}
			}
		})
	}
}
