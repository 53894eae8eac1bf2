// Package kubebin builds kube-apiserver and etcd from the helm/kube module
// (k8s.io/kubernetes and etcd from the Go module proxy) into a cache
// directory, once per version of that module, so that the chart's API
// server tests run real ones without a download.
package kubebin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// KubeVersion is the Kubernetes release helm/kube requires. The binary is
// stamped with it: charts with a kubeVersion constraint check it.
const KubeVersion = "v1.37.2"

// Binaries are the paths of the built programs.
type Binaries struct {
	Dir       string
	APIServer string
	Etcd      string
}

// moduleDir is helm/kube, found from this source file.
func moduleDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "kube")
}

// CacheRoot is where builds are kept: $HERALD_KUBE_CACHE, or
// $XDG_CACHE_HOME/herald-kube (default ~/.cache/herald-kube).
func CacheRoot() (string, error) {
	if d := os.Getenv("HERALD_KUBE_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "herald-kube"), nil
}

// key names a build: the Kubernetes version and a hash of everything that
// decides the binaries (the module's files and the Go toolchain).
func key(goVersion string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", filepath.Join("etcd", "main.go")} {
		b, err := os.ReadFile(filepath.Join(moduleDir(), f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "go %s\nversion %s\n", goVersion, KubeVersion)
	return KubeVersion + "-" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// Find returns the cached binaries, or ok false when they are not built.
func Find() (Binaries, bool, error) {
	b, err := paths()
	if err != nil {
		return Binaries{}, false, err
	}
	for _, p := range []string{b.APIServer, b.Etcd} {
		if _, err := os.Stat(p); err != nil {
			return b, false, nil
		}
	}
	return b, true, nil
}

func paths() (Binaries, error) {
	root, err := CacheRoot()
	if err != nil {
		return Binaries{}, err
	}
	gv, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("go env GOVERSION: %w", err)
	}
	k, err := key(strings.TrimSpace(string(gv)))
	if err != nil {
		return Binaries{}, err
	}
	dir := filepath.Join(root, k)
	return Binaries{Dir: dir, APIServer: filepath.Join(dir, "kube-apiserver"), Etcd: filepath.Join(dir, "etcd")}, nil
}

// Ensure returns the binaries, building them first when they are not in
// the cache (about 12 minutes on 2 cores with cold Go caches; seconds
// when the Go build cache is warm). Build output goes to log. Concurrent
// callers wait for one build.
func Ensure(ctx context.Context, log io.Writer) (Binaries, error) {
	b, ok, err := Find()
	if err != nil || ok {
		return b, err
	}
	if err := os.MkdirAll(filepath.Dir(b.Dir), 0o755); err != nil {
		return b, err
	}
	lock, err := os.OpenFile(b.Dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return b, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return b, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, ok, _ := Find(); ok {
		return b, nil // another process built them while we waited
	}

	tmp, err := os.MkdirTemp(filepath.Dir(b.Dir), ".build-")
	if err != nil {
		return b, err
	}
	defer os.RemoveAll(tmp)
	major, minor, _ := strings.Cut(strings.TrimPrefix(KubeVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	ldflags := strings.Join([]string{
		"-X k8s.io/component-base/version.gitVersion=" + KubeVersion,
		"-X k8s.io/component-base/version.gitMajor=" + major,
		"-X k8s.io/component-base/version.gitMinor=" + minor,
		"-X k8s.io/component-base/version.gitTreeState=clean",
	}, " ")
	start := time.Now()
	for _, target := range []struct{ out, pkg, ldflags string }{
		{filepath.Join(tmp, "kube-apiserver"), "k8s.io/kubernetes/cmd/kube-apiserver", ldflags},
		{filepath.Join(tmp, "etcd"), "./etcd", ""},
	} {
		args := []string{"build", "-o", target.out}
		if target.ldflags != "" {
			args = append(args, "-ldflags", target.ldflags)
		}
		args = append(args, target.pkg)
		fmt.Fprintf(log, "kubebin: go %s (in helm/kube)\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = moduleDir()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return b, fmt.Errorf("build %s: %w", target.pkg, err)
		}
	}
	if err := os.Rename(tmp, b.Dir); err != nil && !errors.Is(err, os.ErrExist) {
		return b, err
	}
	fmt.Fprintf(log, "kubebin: built kube-apiserver %s and etcd in %v into %s\n", KubeVersion, time.Since(start).Round(time.Second), b.Dir)
	return b, nil
}
