package policy_test

import (
	"errors"
	"testing"

	"github.com/herald-push/herald/pkg/policy"
)

func TestConnectModes(t *testing.T) {
	m, err := policy.ParseConnectModes(" *=token , Public=open,/tasks/*=backend,/tasks/public/*=open ")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]policy.ConnectMode{
		"Orders":             policy.ModeToken,   // "*"
		"Public":             policy.ModeOpen,    // exact
		"/tasks/a":           policy.ModeBackend, // pattern
		"/tasks/public/x":    policy.ModeOpen,    // the longer pattern wins
		"/tasks/a/b":         policy.ModeToken,   // * does not cross "/"
		"public":             policy.ModeToken,   // names are case-sensitive
		"Pode.Web.Actions":   policy.ModeToken,
		"/tasks/public/x/yz": policy.ModeToken,
	} {
		if got := m.Mode(name); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	if !m.Uses(policy.ModeBackend) || !m.Uses(policy.ModeOpen) {
		t.Error("Uses misses a mode")
	}
	if got := m.String(); got != "*=token,/tasks/public/*=open,/tasks/*=backend,Public=open" {
		t.Errorf("String %q", got)
	}
	var zero policy.ConnectModes
	if zero.Mode("x") != policy.ModeOpen || zero.Uses(policy.ModeToken) {
		t.Error("the zero table is not open")
	}
	for _, bad := range []string{"Orders", "=token", "A=", "A=secret", "A=open,A=token", "[=open", "a\x00b=open"} {
		if _, err := policy.ParseConnectModes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestScopes(t *testing.T) {
	s, err := policy.ParseScopes("Reports=local,/tasks/*=either")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, param string
		local       bool
		err         bool
	}{
		{"Orders", "", false, false},
		{"Orders", "global", false, false},
		{"Orders", "local", false, true}, // not allowed for a global name
		{"Reports", "", true, false},
		{"Reports", "LOCAL", true, false},
		{"Reports", "global", false, true},
		{"/tasks/a", "", false, false},
		{"/tasks/a", "local", true, false},
		{"/tasks/a", "both", false, true},
	} {
		local, err := s.Local(tc.name, tc.param)
		if local != tc.local || (err != nil) != tc.err || (err != nil && !errors.Is(err, policy.ErrScope)) {
			t.Errorf("%s scope=%q: %v, %v", tc.name, tc.param, local, err)
		}
	}
	if !s.Uses(policy.ScopeLocal) || s.Uses(policy.ScopeGlobal) {
		t.Error("Uses")
	}
}
