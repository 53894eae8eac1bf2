package charttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/herald-push/herald/internal/app"
)

// chartDir is the chart under test.
var chartDir = filepath.Join("..", "herald")

// kubeVersion is the Kubernetes version the render pretends to target; the
// API server tests run this version.
const kubeVersion = "v1.37.2"

// releaseName and namespace of every render.
const (
	releaseName = "herald"
	namespace   = "push"
)

// serviceMonitorAPI is the capability that turns the ServiceMonitor on.
const serviceMonitorAPI = "monitoring.coreos.com/v1/ServiceMonitor"

// loadChart loads the chart from disk once per test.
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

// values reads the values files in order and applies --set style
// overrides, as helm install -f ... --set ... does.
func values(t testing.TB, files []string, sets ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vals = chartutil.CoalesceTables(m, vals)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return vals
}

// renderOpts are the cluster capabilities a render assumes.
type renderOpts struct {
	apiVersions []string // extra API versions, e.g. serviceMonitorAPI
}

// renderChart renders the chart as helm install --dry-run (client only)
// does: schema validation, templates, NOTES.
func renderChart(t testing.TB, vals map[string]any, o renderOpts) (*release.Release, error) {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.ClientOnly = true
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.KubeVersion = kv
	install.APIVersions = o.apiVersions
	return install.Run(loadChart(t), vals)
}

// manifest is one rendered document: its source template, raw YAML and
// the typed object it decodes into.
type manifest struct {
	source string
	raw    []byte
	obj    runtime.Object
	gvk    schema.GroupVersionKind
}

// rendered is a successful render, decoded.
type rendered struct {
	rel  *release.Release
	docs []manifest
}

// mustRender renders and decodes strictly; any error fails the test.
func mustRender(t testing.TB, vals map[string]any, o renderOpts) *rendered {
	t.Helper()
	rel, err := renderChart(t, vals, o)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	docs, err := decodeManifest(rel.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	return &rendered{rel: rel, docs: docs}
}

// typeScheme knows every kind the chart may render.
var typeScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// decodeManifest splits a rendered manifest and decodes every document
// strictly into its Go type: an unknown field, a mistyped value or a kind
// the scheme does not know is an error naming the template.
func decodeManifest(m string) ([]manifest, error) {
	split := releaseutil.SplitManifests(m)
	keys := slices.Sorted(maps.Keys(split))
	var out []manifest
	for _, k := range keys {
		doc := split[k]
		if strings.TrimSpace(doc) == "" {
			continue
		}
		source := ""
		if first, _, ok := strings.Cut(doc, "\n"); ok && strings.HasPrefix(first, "# Source: ") {
			source = strings.TrimPrefix(first, "# Source: ")
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, fmt.Errorf("%s: %v", source, err)
		}
		gvk := schema.FromAPIVersionAndKind(meta.APIVersion, meta.Kind)
		obj, err := typeScheme.New(gvk)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", source, err)
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", source, err)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			return nil, fmt.Errorf("%s: strict decode into %T: %v", source, obj, err)
		}
		out = append(out, manifest{source: source, raw: []byte(doc), obj: obj, gvk: gvk})
	}
	return out, nil
}

// all returns every object of type T.
func all[T runtime.Object](r *rendered) []T {
	var out []T
	for _, d := range r.docs {
		if o, ok := d.obj.(T); ok {
			out = append(out, o)
		}
	}
	return out
}

// one returns the object of type T with the given name, failing when absent.
func one[T interface {
	runtime.Object
	GetName() string
}](t testing.TB, r *rendered, name string) T {
	t.Helper()
	for _, o := range all[T](r) {
		if o.GetName() == name {
			return o
		}
	}
	var zero T
	t.Fatalf("no %T named %q rendered; have %s", zero, name, r.kinds())
	return zero
}

// kinds lists the rendered objects as Kind/name.
func (r *rendered) kinds() []string {
	var out []string
	for _, d := range r.docs {
		out = append(out, d.gvk.Kind+"/"+d.obj.(interface{ GetName() string }).GetName())
	}
	slices.Sort(out)
	return out
}

// Typed shortcuts of the objects the tests look at.
var (
	_ = all[*appsv1.Deployment]
	_ = all[*appsv1.StatefulSet]
	_ = all[*corev1.Service]
	_ = all[*corev1.ConfigMap]
	_ = all[*corev1.Secret]
	_ = all[*policyv1.PodDisruptionBudget]
	_ = all[*autoscalingv2.HorizontalPodAutoscaler]
	_ = all[*networkingv1.Ingress]
	_ = all[*monitoringv1.ServiceMonitor]
)

// metav1LabelSelector converts a LabelSelector for matching.
func metav1LabelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(s)
}

// edgePodeWebPattern is the route cmd/edge serves for Pode.Web (-pode-web).
func edgePodeWebPattern(t testing.TB) string {
	t.Helper()
	var help bytes.Buffer
	_, _ = app.Load(app.ModeEdge, []string{"-h"}, nil, &help)
	for _, line := range strings.Split(help.String(), "\n") {
		if i := strings.Index(line, "also serve Pode.Web's SSE route "); i >= 0 {
			return strings.TrimSpace(line[i+len("also serve Pode.Web's SSE route "):])
		}
	}
	return ""
}
