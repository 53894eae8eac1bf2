package app

import "testing"

func TestGoRunCmdline(t *testing.T) {
	tests := []struct {
		cmdline string
		want    bool
	}{
		{"go\x00run\x00./cmd/embedded\x00", true},
		{"go\x00run\x00-race\x00./cmd/embedded\x00-listen\x00:0\x00", true},
		{"/usr/local/go/bin/go\x00run\x00.\x00", true},
		{"/root/go/pkg/mod/golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64/bin/go\x00run\x00.\x00", true},
		{"go\x00-C\x00/src/herald\x00run\x00./cmd/embedded\x00", true},
		{"go\x00-C=/src/herald\x00run\x00./cmd/embedded\x00", true},
		{"go\x00test\x00./...\x00", false},
		{"go\x00build\x00./cmd/embedded\x00", false},
		{"go\x00-C\x00run\x00build\x00", false}, // "run" is -C's directory
		{"go\x00", false},
		{"bash\x00-c\x00go run .\x00", false},
		{"/bin/sh\x00run\x00", false},
		{"gopls\x00run\x00", false},
		{"nohup\x00./herald-embedded\x00", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := goRunCmdline([]byte(tt.cmdline)); got != tt.want {
			t.Errorf("goRunCmdline(%q) = %v, want %v", tt.cmdline, got, tt.want)
		}
	}
}

func TestInGoBuildDir(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/tmp/go-build2803840106/b001/exe/embedded", true},
		{"/root/.cache/go-build/43/43841b5a091a-d/embedded", true},
		{"/Users/me/Library/Caches/go-build/ab/cd-d/embedded", true},
		{"/usr/local/bin/herald-embedded", false},
		{"/home/me/src/go-builder/herald-embedded", false},
		{"/home/me/go-build-tools/herald-embedded", false},
		{"./herald-embedded", false},
	}
	for _, tt := range tests {
		if got := inGoBuildDir(tt.path); got != tt.want {
			t.Errorf("inGoBuildDir(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}
