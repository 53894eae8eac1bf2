// Command herald-image builds Herald's edge image without a container
// engine and writes it as an OCI image layout (a directory any registry
// tool can push, e.g. "crane push ./herald-oci ghcr.io/you/herald:0.1.0"
// or "skopeo copy oci:./herald-oci docker://...") and, optionally, as a
// tarball for "docker load".
//
//	go run ./cmd/herald-image -oci ./herald-oci -platforms linux/amd64,linux/arm64
//	go run ./cmd/herald-image -tar herald.tar   # one platform, docker load
//
// Run it from helm/test.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/herald-push/herald/helm/test/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "herald-image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	def, err := image.DefaultRef(image.RepoRoot())
	if err != nil {
		return err
	}
	ociDir := flag.String("oci", "", "write an OCI image layout (an index of every platform) to this `directory`")
	tarPath := flag.String("tar", "", "write a docker-load tarball of the first platform to this `file`")
	platforms := flag.String("platforms", "linux/"+runtime.GOARCH, "comma-separated `os/arch` list")
	ref := flag.String("ref", def, "image `reference` recorded in the outputs")
	flag.Parse()
	if *ociDir == "" && *tarPath == "" {
		return fmt.Errorf("give -oci DIR and/or -tar FILE")
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return err
	}
	plats := strings.Split(*platforms, ",")
	opts := image.Options{Log: os.Stderr}
	if *ociDir != "" {
		idx, err := image.BuildIndex(ctx, opts, plats)
		if err != nil {
			return err
		}
		p, err := layout.Write(*ociDir, empty.Index)
		if err != nil {
			return err
		}
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": tag.String(),
		})); err != nil {
			return err
		}
		d, _ := idx.Digest()
		fmt.Printf("%s: OCI index %s for %s (%s)\n", *ociDir, d, *platforms, tag)
	}
	if *tarPath != "" {
		opts.Platform = plats[0]
		img, err := image.Build(ctx, opts)
		if err != nil {
			return err
		}
		if err := tarball.WriteToFile(*tarPath, tag, img); err != nil {
			return err
		}
		d, _ := img.Digest()
		fmt.Printf("%s: image %s for %s (%s)\n", *tarPath, d, plats[0], tag)
	}
	return nil
}
