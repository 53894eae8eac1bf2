// Package image builds Herald's edge image without a container engine: a
// static cmd/edge (CGO off, -trimpath) as one layer on an empty base, with
// the files a non-root static binary needs (passwd and group entries for
// uid 65532, CA certificates, a /tmp), as an OCI image or a multi-platform
// OCI index. Builds are reproducible: file times and the creation time are
// fixed, so the same source and toolchain give the same digest.
//
// The Dockerfile at the repository root builds the same layout for those
// who use Docker.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's contract with the chart and the Dockerfile.
const (
	// Repository is the default image repository, the chart's image.repository.
	Repository = "ghcr.io/herald-push/herald"
	// Entrypoint is the edge binary's path in the image.
	Entrypoint = "/usr/local/bin/herald-edge"
	// User is the numeric user and group the image runs as.
	User = "65532:65532"
	// CACertificates is where the CA bundle is (SSL_CERT_FILE).
	CACertificates = "/etc/ssl/certs/ca-certificates.crt"
)

// epoch is the time of every file and of the image: fixed for
// reproducible digests.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Options of a build. Zero values are defaults.
type Options struct {
	// Root is the Herald repository (the main module). Default: found from
	// this source file.
	Root string
	// Platform is os/arch; default linux/<the host's arch>.
	Platform string
	// Version labels the image (org.opencontainers.image.version).
	// Default: the chart's appVersion.
	Version string
	// CACertificates is a PEM bundle to include; default the host's
	// /etc/ssl/certs/ca-certificates.crt when present. Needed for TLS to
	// NATS servers with publicly signed certificates.
	CACertificates string
	// Log receives go build's output. Default: discarded.
	Log io.Writer
}

// RepoRoot is the repository root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// AppVersion reads appVersion from helm/herald/Chart.yaml.
func AppVersion(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "helm", "herald", "Chart.yaml"))
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^appVersion:\s*"?([^"\s]+)"?\s*$`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("no appVersion in helm/herald/Chart.yaml")
	}
	return string(m[1]), nil
}

// DefaultRef is the reference the chart runs by default:
// Repository:<appVersion>.
func DefaultRef(root string) (string, error) {
	v, err := AppVersion(root)
	if err != nil {
		return "", err
	}
	return Repository + ":" + v, nil
}

// Build compiles cmd/edge for the platform and returns the image.
func Build(ctx context.Context, o Options) (v1.Image, error) {
	if o.Root == "" {
		o.Root = RepoRoot()
	}
	if o.Platform == "" {
		o.Platform = "linux/" + runtime.GOARCH
	}
	if o.Version == "" {
		v, err := AppVersion(o.Root)
		if err != nil {
			return nil, err
		}
		o.Version = v
	}
	if o.CACertificates == "" {
		if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
			o.CACertificates = "/etc/ssl/certs/ca-certificates.crt"
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	goos, goarch, ok := strings.Cut(o.Platform, "/")
	if !ok {
		return nil, fmt.Errorf("platform %q: want os/arch", o.Platform)
	}
	bin, err := compile(ctx, o, goos, goarch)
	if err != nil {
		return nil, err
	}
	var certs []byte
	if o.CACertificates != "" {
		if certs, err = os.ReadFile(o.CACertificates); err != nil {
			return nil, err
		}
	}
	layerTar, err := rootfs(bin, certs)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "herald-image: static cmd/edge on an empty base"},
	})
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = goos, goarch
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config = v1.Config{
		Entrypoint:   []string{Entrypoint},
		User:         User,
		WorkingDir:   "/",
		Env:          []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=" + CACertificates},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "herald",
			"org.opencontainers.image.description": "Herald edge: SSE and WebSocket push on NATS",
			"org.opencontainers.image.source":      "https://github.com/herald-push/herald",
			"org.opencontainers.image.version":     o.Version,
			"org.opencontainers.image.licenses":    "",
		},
		StopSignal: "SIGTERM",
	}
	delete(cfg.Config.Labels, "org.opencontainers.image.licenses")
	return mutate.ConfigFile(img, cfg)
}

// BuildIndex builds one image per platform into an OCI index.
func BuildIndex(ctx context.Context, o Options, platforms []string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		po := o
		po.Platform = p
		img, err := Build(ctx, po)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		goos, goarch, _ := strings.Cut(p, "/")
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: goos, Architecture: goarch}},
		})
	}
	return idx, nil
}

// compile builds a static cmd/edge and returns its bytes.
func compile(ctx context.Context, o Options, goos, goarch string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "herald-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "herald-edge")
	// The same flags as the Dockerfile's build stage.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./cmd/edge")
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/edge for %s/%s: %w", goos, goarch, err)
	}
	return os.ReadFile(out)
}

// rootfs is the image's only layer.
func rootfs(bin, certs []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
		},
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")) },
		func() error { return dir("etc/ssl", 0o755, 0) },
		func() error { return dir("etc/ssl/certs", 0o755, 0) },
		func() error {
			if certs == nil {
				return nil
			}
			return file("etc/ssl/certs/ca-certificates.crt", 0o644, certs)
		},
		func() error { return dir("home", 0o755, 0) },
		func() error { return dir("home/nonroot", 0o700, 65532) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/local", 0o755, 0) },
		func() error { return dir("usr/local/bin", 0o755, 0) },
		func() error { return file(strings.TrimPrefix(Entrypoint, "/"), 0o755, bin) },
		tw.Close,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
