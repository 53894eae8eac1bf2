package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/herald-push/herald/internal/app"
)

// The profiled server: with -pprof, Herald processes are this executable
// re-run with serveEnv set. It runs exactly what cmd/embedded or cmd/edge
// run (internal/app), plus net/http/pprof on a separate loopback listener
// announced in the JSON log, so the edge can be profiled under load
// without a profiling endpoint in the product.
const (
	serveEnv = "HERALD_BENCH_SERVE" // "embedded" or "edge"
	pprofEnv = "HERALD_BENCH_PPROF" // pprof listen address
)

func serveProfiled() error {
	ln, err := net.Listen("tcp", os.Getenv(pprofEnv))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.Serve(ln, mux) }()
	line, _ := json.Marshal(map[string]string{"time": time.Now().Format(time.RFC3339Nano), "level": "INFO", "msg": "pprof", "url": "http://" + ln.Addr().String()})
	fmt.Fprintln(os.Stderr, string(line))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rt := app.OSRuntime()
	if os.Getenv(serveEnv) == "edge" {
		return app.RunEdge(ctx, rt)
	}
	return app.RunEmbedded(ctx, rt)
}

// cpuProfile takes a CPU profile of -pprof-seconds from a profiled server.
func (b *bench) cpuProfile(ctx context.Context, base string) error {
	secs := max(int(b.cfg.PprofTime.Seconds()), 1)
	return b.fetchProfile(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), "cpu.pprof")
}

// saveProfiles saves heap, allocation and goroutine profiles.
func (b *bench) saveProfiles(ctx context.Context, base string) {
	for _, p := range []struct{ path, file string }{
		{"/debug/pprof/heap?gc=1", "heap.pprof"},
		{"/debug/pprof/allocs", "allocs.pprof"},
		{"/debug/pprof/goroutine", "goroutine.pprof"},
	} {
		if err := b.fetchProfile(ctx, base+p.path, p.file); err != nil {
			b.logf("profile %s: %v", p.file, err)
		}
	}
}

func (b *bench) fetchProfile(ctx context.Context, url, file string) error {
	if err := os.MkdirAll(b.cfg.PprofDir, 0o755); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	path := filepath.Join(b.cfg.PprofDir, file)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	b.logf("profile: %s", path)
	return f.Close()
}
