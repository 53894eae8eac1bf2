package charttest

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// helmFor returns a Helm configuration talking to the API server in ns,
// with a fresh discovery cache (so that a new CRD is seen) and the API
// server's warnings collected in w.
func helmFor(t *testing.T, s *apiServer, ns string, w *warnings) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	kc, cache := s.kubeconfig, t.TempDir()
	flags.KubeConfig, flags.Namespace, flags.CacheDir = &kc, &ns, &cache
	flags.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.WarningHandler = w
		return c
	}
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, ns, "secret", func(format string, v ...any) {}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// restrictedNamespace creates a namespace that enforces the restricted Pod
// Security Standard (and warns and audits at it).
func restrictedNamespace(t *testing.T, cs *kubernetes.Clientset, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
		"pod-security.kubernetes.io/warn":            "restricted",
		"pod-security.kubernetes.io/audit":           "restricted",
	}}}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// noWarnings fails the test when the API server warned about anything.
func noWarnings(t *testing.T, w *warnings, step string) {
	t.Helper()
	for _, msg := range w.take() {
		t.Errorf("%s: API server warning: %s", step, msg)
	}
}

func install(t *testing.T, cfg *action.Configuration, ns, name string, vals map[string]any) (*release.Release, error) {
	t.Helper()
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = name, ns
	in.Timeout = time.Minute
	return in.Run(loadChart(t), vals)
}

func upgrade(t *testing.T, cfg *action.Configuration, ns, name string, vals map[string]any) (*release.Release, error) {
	t.Helper()
	up := action.NewUpgrade(cfg)
	up.Namespace = ns
	up.Timeout = time.Minute
	return up.Run(name, loadChart(t), vals)
}

// TestAPIServerLifecycle installs, upgrades, rolls back and uninstalls the
// default chart against a real API server, in a namespace that enforces
// the restricted Pod Security Standard.
func TestAPIServerLifecycle(t *testing.T) {
	s := needAPIServer(t)
	cs, dc := s.clients(t)
	ctx := context.Background()
	ns := restrictedNamespace(t, cs, "lifecycle")
	w := &warnings{}
	cfg := helmFor(t, s, ns, w)

	// Install.
	rel, err := install(t, cfg, ns, releaseName, values(t, nil))
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	noWarnings(t, w, "install")
	if rel.Info.Status != release.StatusDeployed {
		t.Fatalf("status %s", rel.Info.Status)
	}
	created := r2kinds(t, rel)
	for _, k := range created {
		if !exists(t, dc, ns, k) {
			t.Errorf("%s was not created", k)
		}
	}
	secret := func() string {
		sec, err := cs.CoreV1().Secrets(ns).Get(ctx, edgeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(sec.Data["publish-token"])
	}
	deploy := func() (int64, string) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, edgeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Generation, d.Spec.Template.Annotations["checksum/config"]
	}
	token1 := secret()
	gen1, sum1 := deploy()
	if len(token1) < 16 {
		t.Fatalf("generated publish token %q", token1)
	}

	// An upgrade with the same values changes nothing: the generated token
	// is kept (the chart looks it up) and the edges do not roll.
	if _, err := upgrade(t, cfg, ns, releaseName, values(t, nil)); err != nil {
		t.Fatalf("upgrade, same values: %v", err)
	}
	noWarnings(t, w, "upgrade, same values")
	if token2 := secret(); token2 != token1 {
		t.Errorf("an upgrade replaced the generated publish token: every producer would be locked out")
	}
	if gen2, sum2 := deploy(); gen2 != gen1 || sum2 != sum1 {
		t.Errorf("an upgrade with the same values rolls the edges: generation %d → %d, checksum %s → %s", gen1, gen2, sum1, sum2)
	}

	// An option change rolls the edges.
	if _, err := upgrade(t, cfg, ns, releaseName, values(t, nil, "edge.config.ping-interval=20s")); err != nil {
		t.Fatalf("upgrade, new option: %v", err)
	}
	noWarnings(t, w, "upgrade, new option")
	gen3, sum3 := deploy()
	if gen3 == gen1 || sum3 == sum1 {
		t.Errorf("changing an option did not change the pod template (generation %d, checksum unchanged %v)", gen3, sum3 == sum1)
	}

	// A change the StatefulSet cannot take is refused with the value's
	// name, and the release stays as it was.
	_, err = upgrade(t, cfg, ns, releaseName, values(t, nil, "edge.config.ping-interval=20s", "nats.bundled.jetstream.storage.size=20Gi"))
	if err == nil || !strings.Contains(err.Error(), "nats.bundled.jetstream.storage.size cannot change from 10Gi to 20Gi") {
		t.Errorf("upgrade changing the volume size: %v", err)
	}
	hist := action.NewHistory(cfg)
	revs, err := hist.Run(releaseName)
	if err != nil {
		t.Fatal(err)
	}
	last := revs[len(revs)-1]
	if last.Version != 3 || last.Info.Status != release.StatusDeployed {
		t.Errorf("after the refused upgrade the latest revision is %d (%s), want 3 deployed", last.Version, last.Info.Status)
	}
	noWarnings(t, w, "refused upgrade")

	// Roll back to revision 2: the option is gone again.
	rb := action.NewRollback(cfg)
	rb.Version = 2
	rb.Timeout = time.Minute
	if err := rb.Run(releaseName); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	noWarnings(t, w, "rollback")
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, edgeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cm.Data["herald.yaml"], "ping-interval") {
		t.Errorf("rollback kept the option:\n%s", cm.Data["herald.yaml"])
	}
	if _, sum := deploy(); sum != sum1 {
		t.Errorf("rollback did not restore the pod template's checksum")
	}

	// The ServiceMonitor appears only once the cluster has its API.
	rel, err = upgrade(t, cfg, ns, releaseName, values(t, nil, "metrics.serviceMonitor.enabled=true"))
	if err != nil {
		t.Fatalf("upgrade with a ServiceMonitor and no CRD: %v", err)
	}
	noWarnings(t, w, "upgrade, ServiceMonitor without CRD")
	if strings.Contains(rel.Manifest, "kind: ServiceMonitor") || !strings.Contains(rel.Info.Notes, "none was created") {
		t.Errorf("ServiceMonitor rendered without its CRD, or NOTES silent about it")
	}
	createServiceMonitorCRD(t, dc)
	cfg = helmFor(t, s, ns, w) // a fresh discovery
	rel, err = upgrade(t, cfg, ns, releaseName, values(t, nil, "metrics.serviceMonitor.enabled=true"))
	if err != nil {
		t.Fatalf("upgrade with a ServiceMonitor and its CRD: %v", err)
	}
	if !strings.Contains(rel.Manifest, "kind: ServiceMonitor") {
		t.Error("ServiceMonitor not rendered although its CRD exists")
	}
	noWarnings(t, w, "upgrade, ServiceMonitor with CRD")
	if !exists(t, dc, ns, "ServiceMonitor/"+edgeName) {
		t.Error("no ServiceMonitor although the API exists")
	}

	// Uninstall removes everything the chart created.
	un := action.NewUninstall(cfg)
	un.Timeout = time.Minute
	if _, err := un.Run(releaseName); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	noWarnings(t, w, "uninstall")
	for _, k := range append(created, "ServiceMonitor/"+edgeName) {
		if exists(t, dc, ns, k) {
			t.Errorf("%s is left after uninstall", k)
		}
	}
}

// TestAPIServerAdmitsEveryValuesFile installs the full-featured values and
// every example under helm/examples, each in its own restricted
// namespace, with the longest release name Helm allows.
func TestAPIServerAdmitsEveryValuesFile(t *testing.T) {
	s := needAPIServer(t)
	cs, _ := s.clients(t)
	examples, err := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files := append([]string{fullValues[0]}, examples...)
	for i, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			ns := restrictedNamespace(t, cs, fmt.Sprintf("values-%d", i))
			w := &warnings{}
			cfg := helmFor(t, s, ns, w)
			// 53 characters: Helm's limit for a release name.
			name := "a-release-name-as-long-as-helm-allows-for-herald-0123"[:53]
			rel, err := install(t, cfg, ns, name, values(t, []string{f}))
			if err != nil {
				t.Fatalf("install %s: %v", f, err)
			}
			noWarnings(t, w, "install "+f)
			if rel.Info.Status != release.StatusDeployed {
				t.Errorf("status %s", rel.Info.Status)
			}
			un := action.NewUninstall(cfg)
			if _, err := un.Run(name); err != nil {
				t.Errorf("uninstall: %v", err)
			}
			noWarnings(t, w, "uninstall "+f)
		})
	}
}

// r2kinds lists a release's objects as Kind/name.
func r2kinds(t *testing.T, rel *release.Release) []string {
	t.Helper()
	docs, err := decodeManifest(rel.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{docs: docs}
	return r.kinds()
}

// gvrs maps the chart's kinds to their API resources.
var gvrs = map[string]schema.GroupVersionResource{
	"ConfigMap":               {Version: "v1", Resource: "configmaps"},
	"Secret":                  {Version: "v1", Resource: "secrets"},
	"Service":                 {Version: "v1", Resource: "services"},
	"ServiceAccount":          {Version: "v1", Resource: "serviceaccounts"},
	"Deployment":              {Group: "apps", Version: "v1", Resource: "deployments"},
	"StatefulSet":             {Group: "apps", Version: "v1", Resource: "statefulsets"},
	"PodDisruptionBudget":     {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
	"HorizontalPodAutoscaler": {Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"},
	"Ingress":                 {Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
	"NetworkPolicy":           {Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"},
	"ServiceMonitor":          {Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"},
}

// exists reports whether Kind/name exists in ns.
func exists(t *testing.T, dc *dynamic.DynamicClient, ns, kindName string) bool {
	t.Helper()
	kind, name, _ := strings.Cut(kindName, "/")
	gvr, ok := gvrs[kind]
	if !ok {
		t.Fatalf("unknown kind %s", kind)
	}
	_, err := dc.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	switch {
	case err == nil:
		return true
	case apierrors.IsNotFound(err):
		return false
	}
	t.Fatalf("get %s: %v", kindName, err)
	return false
}

// createServiceMonitorCRD installs a ServiceMonitor CRD (its schema
// accepts any spec: the typed decode of tier 1 checks the fields) and
// waits until it is established.
func createServiceMonitorCRD(t *testing.T, dc *dynamic.DynamicClient) {
	t.Helper()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "servicemonitors.monitoring.coreos.com"},
		"spec": map[string]any{
			"group": "monitoring.coreos.com",
			"scope": "Namespaced",
			"names": map[string]any{"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors", "singular": "servicemonitor"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object", "x-kubernetes-preserve-unknown-fields": true,
				}},
			}},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dc.Resource(gvr).Create(context.Background(), crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := dc.Resource(gvr).Get(context.Background(), "servicemonitors.monitoring.coreos.com", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		if slices.ContainsFunc(conds, func(c any) bool {
			m := c.(map[string]any)
			return m["type"] == "Established" && m["status"] == "True"
		}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("ServiceMonitor CRD not established after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAPIServerControls shows that the checks above can fail: the server
// warns about a pod template that breaks the restricted profile, and
// refuses what only the server validates when the chart's own guards are
// bypassed.
func TestAPIServerControls(t *testing.T) {
	s := needAPIServer(t)
	cs, _ := s.clients(t)
	ns := restrictedNamespace(t, cs, "controls")
	w := &warnings{}
	cfg := helmFor(t, s, ns, w)

	_, err := install(t, cfg, ns, "escalating", values(t, nil, "edge.securityContext.allowPrivilegeEscalation=true"))
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	got := strings.Join(w.take(), "\n")
	if !strings.Contains(got, "would violate PodSecurity") || !strings.Contains(got, "allowPrivilegeEscalation") {
		t.Errorf("no Pod Security warning for allowPrivilegeEscalation=true; warnings:\n%s", got)
	}

	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = "badport", ns
	in.SkipSchemaValidation = true
	_, err = in.Run(loadChart(t), values(t, nil, "service.port=70000"))
	if err == nil || !strings.Contains(err.Error(), "70000") {
		t.Errorf("the server accepted Service port 70000: %v", err)
	}
}
