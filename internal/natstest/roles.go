package natstest

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/herald-push/herald/pkg/broker"
	"github.com/herald-push/herald/pkg/natsserver"
)

// StartRoleServer starts a JetStream server (as StartServer) whose users
// are Herald's roles, each with its role's permissions for the default
// subject prefix and streams st: user "<role>", password "<role>-secret".
func StartRoleServer(t testing.TB, st broker.Streams) *natsserver.Server {
	t.Helper()
	s := broker.MustSubjects("")
	var users []natsserver.User
	for _, role := range broker.Roles {
		p, err := s.Permissions(role, st)
		if err != nil {
			t.Fatal(err)
		}
		var sp *natsserver.Permissions
		if p != nil {
			sp = &natsserver.Permissions{Publish: p.Publish, Subscribe: p.Subscribe, Responses: p.Responses}
		}
		users = append(users, natsserver.User{Name: string(role), Password: string(role) + "-secret", Permissions: sp})
	}
	srv, err := natsserver.Start(natsserver.Config{Port: natsserver.RandomPort, ServerName: "natstest-roles",
		JetStream: true, DataDir: t.TempDir(), Users: users, Logger: newLogger(t)})
	if err != nil {
		t.Fatalf("natstest: start server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// ConnectAs connects to a StartRoleServer server as role, recording the
// connection's asynchronous errors (permissions violations) in errs. An
// edge connects with its own inbox prefix, as edges do.
func ConnectAs(t testing.TB, url string, role broker.Role, errs *AsyncErrors, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.UserInfo(string(role), string(role)+"-secret"), nats.ErrorHandler(errs.Handler)}, opts...)
	if role == broker.RoleEdge {
		opts = append(opts, nats.CustomInboxPrefix(broker.MustSubjects("").EdgeInbox()))
	}
	return Connect(t, url, opts...)
}

// Violations returns the permissions violations recorded so far.
func (a *AsyncErrors) Violations() []error {
	var out []error
	for _, err := range a.List() {
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			out = append(out, err)
		}
	}
	return out
}

// NoViolations fails t for every permissions violation recorded: what a
// role did needed more than its permissions.
func (a *AsyncErrors) NoViolations(t testing.TB, who string) {
	t.Helper()
	for _, err := range a.Violations() {
		t.Errorf("%s needed more than its permissions: %v", who, err)
	}
}
