package natstest

import (
	"os/exec"
	"strings"
	"testing"
)

// ServerModule is the module path of the NATS server.
const ServerModule = "github.com/nats-io/nats-server"

// RequireNoServer fails the test when a package of pkgs (patterns as the go
// command takes them, relative to the test's package directory) compiles
// any package of the NATS server, directly or through its imports: a
// program importing them would carry a whole server. It runs
// "go list -deps", so the go command must be on PATH.
func RequireNoServer(t testing.TB, pkgs ...string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("natstest: the go command is needed to list dependencies: %v", err)
	}
	out, err := exec.Command(goBin, append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("natstest: go list -deps %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	var server []string
	for _, p := range strings.Fields(string(out)) {
		if p == ServerModule || strings.HasPrefix(p, ServerModule+"/") {
			server = append(server, p)
		}
	}
	if len(server) > 0 {
		t.Fatalf("go list -deps %s: %d NATS server packages, e.g. %s; only programs that start a server may import pkg/natsserver",
			strings.Join(pkgs, " "), len(server), server[0])
	}
}
