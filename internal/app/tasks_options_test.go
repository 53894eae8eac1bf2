package app_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/app"
)

// -task-routes reads the same routes from a flag and from YAML, where a
// route may carry a mapping of settings; a bad setting names the option.
func TestTaskRoutesOption(t *testing.T) {
	yml := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(yml, []byte(`task-routes:
  POST /process-data: {max: 2, group: DataProcess}
  GET /generate-report:
    result: true
    headers: [Content-Type, X-Trace]
task-lease: 10s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	fromYAML, err := app.Load(app.ModeEdge, []string{"-config", yml, "-nats", "nats://127.0.0.1:4222"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fromFlag, err := app.Load(app.ModeEdge, []string{"-nats", "nats://127.0.0.1:4222", "-task-lease", "10s",
		"-task-routes", "POST /process-data max=2 group=DataProcess, GET /generate-report result=true headers=Content-Type;X-Trace"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*app.Options{fromYAML, fromFlag} {
		cfg, err := o.EdgeConfig()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range cfg.TaskRoutes {
			got = append(got, r.String())
		}
		want := "POST /process-data max=2 timeout=8h0m0s retention=10m0s cancellable=true group=DataProcess result=false access=open attempts=3 headers=Content-Type|" +
			"GET /generate-report max=2 timeout=8h0m0s retention=10m0s cancellable=true group=/generate-report result=true access=open attempts=3 headers=Content-Type;X-Trace"
		if strings.Join(got, "|") != want || cfg.TaskLease.String() != "10s" || cfg.TaskPath != "/task" {
			t.Errorf("routes %q lease %v path %s", got, cfg.TaskLease, cfg.TaskPath)
		}
	}
	_, err = app.Load(app.ModeEdge, []string{"-nats", "nats://127.0.0.1:4222", "-task-routes", "POST /x speed=fast"}, nil, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "-task-routes: ") || !strings.Contains(err.Error(), `unknown setting "speed"`) {
		t.Errorf("bad setting: %v", err)
	}
	_, err = app.Load(app.ModeEdge, []string{"-nats", "nats://127.0.0.1:4222", "-history=false", "-task-routes", "POST /x"}, nil, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "-task-routes: ") {
		t.Errorf("task routes without history: %v", err)
	}
}
