package charttest

import (
	"archive/tar"
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/herald-push/herald/helm/test/image"
)

// builtImage is the edge image built once for the package, written as an
// OCI layout, read back and unpacked.
type builtImage struct {
	layoutDir string
	img       v1.Image
	config    *v1.ConfigFile
	rootfs    string // unpacked layers, world-readable path
}

var (
	imageOnce sync.Once
	sharedImg *builtImage
	imageErr  error
	tmpRoots  []string // removed by TestMain
)

// worldTempDir is a temporary directory that users other than root can
// traverse (t.TempDir's are 0700): the image runs as uid 65532.
func worldTempDir(prefix string) (string, error) {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	tmpRoots = append(tmpRoots, d)
	return d, os.Chmod(d, 0o755)
}

// needImage builds the image on first use.
func needImage(t *testing.T) *builtImage {
	t.Helper()
	imageOnce.Do(func() {
		sharedImg, imageErr = buildImage()
	})
	if imageErr != nil {
		t.Fatalf("image: %v", imageErr)
	}
	return sharedImg
}

func buildImage() (*builtImage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	img, err := image.Build(ctx, image.Options{Log: os.Stderr})
	if err != nil {
		return nil, err
	}
	dir, err := worldTempDir("herald-image-")
	if err != nil {
		return nil, err
	}
	b := &builtImage{layoutDir: filepath.Join(dir, "oci")}
	// Write the layout and read it back: the checks below look at what a
	// registry or runtime would receive.
	p, err := layout.Write(b.layoutDir, empty.Index)
	if err != nil {
		return nil, err
	}
	if err := p.AppendImage(img); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(b.layoutDir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("layout holds %d manifests", len(im.Manifests))
	}
	if b.img, err = idx.Image(im.Manifests[0].Digest); err != nil {
		return nil, err
	}
	if b.config, err = b.img.ConfigFile(); err != nil {
		return nil, err
	}
	b.rootfs = filepath.Join(dir, "rootfs")
	if err := unpack(b.img, b.rootfs); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "charttest: built and unpacked the edge image in %v\n", time.Since(start).Round(time.Millisecond))
	return b, nil
}

// unpack writes the image's flattened filesystem into dir, with the modes
// and, when running as root, the owners of the layer.
func unpack(img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected entry type %c", h.Name, h.Typeflag)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(path, h.Uid, h.Gid); err != nil {
				return err
			}
		}
		if err := os.Chmod(path, os.FileMode(h.Mode&0o777)|modeBits(h.Mode)); err != nil {
			return err
		}
	}
}

func modeBits(m int64) os.FileMode {
	var out os.FileMode
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

func TestImage(t *testing.T) {
	b := needImage(t)
	if err := validate.Image(b.img); err != nil {
		t.Fatalf("the image's digests and sizes do not add up: %v", err)
	}
	mt, _ := b.img.MediaType()
	if mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	c := b.config.Config
	if !slices.Equal(c.Entrypoint, []string{image.Entrypoint}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %v cmd %v", c.Entrypoint, c.Cmd)
	}
	if c.User != image.User {
		t.Errorf("user %q, want %q (non-root, numeric for runAsNonRoot)", c.User, image.User)
	}
	if b.config.OS != "linux" {
		t.Errorf("os %s", b.config.OS)
	}
	layers, _ := b.img.Layers()
	if len(layers) != 1 {
		t.Errorf("%d layers, want 1 (empty base)", len(layers))
	}

	// The binary: executable, root-owned, static.
	bin := filepath.Join(b.rootfs, image.Entrypoint)
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("entrypoint mode %v", st.Mode())
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the entrypoint needs a dynamic loader; the image has none")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the entrypoint links %v", libs)
	}
	passwd, err := os.ReadFile(filepath.Join(b.rootfs, "etc", "passwd"))
	if err != nil || !strings.Contains(string(passwd), ":65532:65532:") {
		t.Errorf("/etc/passwd has no uid 65532: %v %q", err, passwd)
	}
	for _, e := range c.Env {
		if k, v, _ := strings.Cut(e, "="); k == "SSL_CERT_FILE" {
			if _, err := os.Stat(filepath.Join(b.rootfs, v)); err != nil {
				t.Errorf("SSL_CERT_FILE %s: %v", v, err)
			}
		}
	}
}

// TestImageBinaryServes starts the image's entrypoint from the unpacked
// image, as the image's user, against a NATS server, and waits for
// /healthz and /readyz.
func TestImageBinaryServes(t *testing.T) {
	b := needImage(t)
	ns := startNATS(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := imageEdgeCmd(b, ns.ClientURL(), port)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	logged := make(chan struct{})
	if err := startCmd(cmd); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
		}
	}()
	exited := make(chan error, 1)
	go func() { <-logged; exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, path := range []string{"/healthz", "/readyz"} {
		if err := poll(30*time.Second, func() error {
			select {
			case err := <-exited:
				return fmt.Errorf("exited: %v", err)
			default:
			}
			return get200(base + path)
		}); err != nil {
			_ = cmd.Process.Kill()
			<-logged
			t.Fatalf("%s: %v\n%s", path, err, logs.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20 s of SIGTERM")
	}
	if strings.Contains(logs.String(), "image-test-token") {
		t.Error("the publish token is in the logs")
	}
}

// TestImageReproducible: the same source and toolchain give the same digest.
func TestImageReproducible(t *testing.T) {
	b := needImage(t)
	again, err := image.Build(context.Background(), image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := b.img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds: %s and %s", d1, d2)
	}
}

// TestChartRunsTheBuiltImage: the chart's default image is the reference
// the builder names, and the Dockerfile builds the same layout.
func TestChartRunsTheBuiltImage(t *testing.T) {
	ref, err := image.DefaultRef(image.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	r := mustRender(t, values(t, nil), renderOpts{})
	if got := one[*appsv1.Deployment](t, r, edgeName).Spec.Template.Spec.Containers[0].Image; got != ref {
		t.Errorf("chart image %s, builder %s", got, ref)
	}
	c := one[*appsv1.Deployment](t, r, edgeName).Spec.Template.Spec
	if len(c.Containers[0].Command) != 0 {
		t.Errorf("the chart overrides the image's entrypoint: %v", c.Containers[0].Command)
	}
	if u := *c.SecurityContext.RunAsUser; fmt.Sprintf("%d:%d", u, *c.SecurityContext.RunAsGroup) != image.User {
		t.Errorf("chart runs as %d, image as %s", u, image.User)
	}

	df, err := os.ReadFile(filepath.Join(image.RepoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).Split(string(df), -1)
	final := stages[len(stages)-1]
	for _, want := range []string{
		"USER " + image.User,
		`ENTRYPOINT ["` + image.Entrypoint + `"]`,
		"COPY --from=build /out/herald-edge " + image.Entrypoint,
	} {
		if !strings.Contains(final, want) {
			t.Errorf("the Dockerfile's final stage lacks %q", want)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/edge"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("the Dockerfile's build lacks %q", want)
		}
	}
}

// startNATS runs an in-process NATS server with JetStream for the test.
func startNATS(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// get200 GETs url and wants 200.
func get200(url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// poll calls fn until it succeeds or the time is up.
func poll(limit time.Duration, fn func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
