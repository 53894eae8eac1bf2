package charttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"

	"github.com/herald-push/herald/internal/app"
)

// fullValues turns every feature on.
var fullValues = []string{filepath.Join("testdata", "full-values.yaml")}

// Object names for release "herald".
const (
	edgeName = "herald"
	natsName = "herald-nats"
)

// valueSets are the values every structural test runs on.
func valueSets() map[string][]string {
	return map[string][]string{
		"default": nil,
		"full":    fullValues,
	}
}

func TestLintStrict(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for name, files := range valueSets() {
		t.Run(name, func(t *testing.T) {
			l := lint.AllWithKubeVersion(chartDir, values(t, files), namespace, kv)
			for _, m := range l.Messages {
				// helm lint --strict fails on warnings; infos are advice.
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m.Error())
				} else {
					t.Logf("lint: %s", m.Error())
				}
			}
		})
	}
}

// TestRenderStrictEngine renders with the template engine in strict mode:
// a reference to a value that does not exist is an error, not an empty
// string.
func TestRenderStrictEngine(t *testing.T) {
	ch := loadChart(t)
	for name, files := range valueSets() {
		t.Run(name, func(t *testing.T) {
			opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: namespace, IsInstall: true}
			caps := chartutil.DefaultCapabilities.Copy()
			vals, err := chartutil.ToRenderValues(ch, values(t, files), opts, caps)
			if err != nil {
				t.Fatal(err)
			}
			e := engine.Engine{Strict: true}
			if _, err := e.Render(ch, vals); err != nil {
				t.Fatalf("strict render: %v", err)
			}
		})
	}
}

func TestRenderedObjects(t *testing.T) {
	cases := []struct {
		name  string
		files []string
		sets  []string
		caps  []string
		want  []string
	}{
		{name: "default", want: []string{
			"ConfigMap/herald", "ConfigMap/herald-nats", "Deployment/herald", "PodDisruptionBudget/herald",
			"PodDisruptionBudget/herald-nats", "Secret/herald", "Service/herald", "Service/herald-nats",
			"Service/herald-nats-headless", "ServiceAccount/herald", "StatefulSet/herald-nats",
		}},
		{name: "full with the ServiceMonitor API", files: fullValues, caps: []string{serviceMonitorAPI}, want: []string{
			"ConfigMap/herald", "ConfigMap/herald-nats", "Deployment/herald", "HorizontalPodAutoscaler/herald",
			"Ingress/herald", "NetworkPolicy/herald", "NetworkPolicy/herald-nats", "PodDisruptionBudget/herald",
			"PodDisruptionBudget/herald-nats", "Secret/herald", "Service/herald", "Service/herald-nats",
			"Service/herald-nats-headless", "ServiceAccount/herald", "ServiceMonitor/herald", "StatefulSet/herald-nats",
		}},
		{name: "full without the ServiceMonitor API", files: fullValues, want: []string{
			"ConfigMap/herald", "ConfigMap/herald-nats", "Deployment/herald", "HorizontalPodAutoscaler/herald",
			"Ingress/herald", "NetworkPolicy/herald", "NetworkPolicy/herald-nats", "PodDisruptionBudget/herald",
			"PodDisruptionBudget/herald-nats", "Secret/herald", "Service/herald", "Service/herald-nats",
			"Service/herald-nats-headless", "ServiceAccount/herald", "StatefulSet/herald-nats",
		}},
		{name: "external NATS and an existing Secret", sets: []string{
			"nats.bundled.enabled=false", "nats.external.urls={nats://a:4222,nats://b:4222}", "secrets.existingSecret=mine",
		}, want: []string{
			"ConfigMap/herald", "Deployment/herald", "PodDisruptionBudget/herald", "Service/herald", "ServiceAccount/herald",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, values(t, tc.files, tc.sets...), renderOpts{apiVersions: tc.caps})
			if got := r.kinds(); !slices.Equal(got, tc.want) {
				t.Errorf("rendered objects:\n got %v\nwant %v", got, tc.want)
			}
			if slices.Contains(tc.caps, serviceMonitorAPI) {
				if !strings.Contains(r.rel.Info.Notes, "A ServiceMonitor") {
					t.Errorf("NOTES do not mention the ServiceMonitor:\n%s", r.rel.Info.Notes)
				}
			} else if strings.Contains(strings.Join(tc.files, ""), "full") && !strings.Contains(r.rel.Info.Notes, "none was created") {
				t.Errorf("NOTES do not say the ServiceMonitor was skipped:\n%s", r.rel.Info.Notes)
			}
		})
	}
}

// podTemplates returns every pod template the chart renders.
func podTemplates(r *rendered) map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for _, d := range all[*appsv1.Deployment](r) {
		out["Deployment/"+d.Name] = &d.Spec.Template
	}
	for _, s := range all[*appsv1.StatefulSet](r) {
		out["StatefulSet/"+s.Name] = &s.Spec.Template
	}
	return out
}

// TestRestrictedPodSecurity evaluates every pod template with the Pod
// Security Admission library's own checks, at the restricted level.
func TestRestrictedPodSecurity(t *testing.T) {
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for name, files := range valueSets() {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, values(t, files), renderOpts{})
			for what, pt := range podTemplates(r) {
				for _, res := range eval.EvaluatePod(lv, &pt.ObjectMeta, &pt.Spec) {
					if !res.Allowed {
						t.Errorf("%s violates restricted: %s: %s", what, res.ForbiddenReason, res.ForbiddenDetail)
					}
				}
				// The fields the issue names, asserted one by one as well.
				ps := pt.Spec.SecurityContext
				if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: pod securityContext %+v", what, ps)
				}
				if pt.Spec.AutomountServiceAccountToken == nil || *pt.Spec.AutomountServiceAccountToken {
					t.Errorf("%s mounts a service account token", what)
				}
				for _, c := range pt.Spec.Containers {
					sc := c.SecurityContext
					switch {
					case sc == nil:
						t.Errorf("%s/%s: no securityContext", what, c.Name)
					case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
						t.Errorf("%s/%s: allowPrivilegeEscalation not false", what, c.Name)
					case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
						t.Errorf("%s/%s: root filesystem writable", what, c.Name)
					case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
						t.Errorf("%s/%s: capabilities %+v", what, c.Name, sc.Capabilities)
					case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
						t.Errorf("%s/%s: seccomp %+v", what, c.Name, sc.SeccompProfile)
					}
				}
			}
		})
	}
}

// edgeConfig returns the edge's rendered options file, parsed.
func edgeConfig(t testing.TB, r *rendered) (string, map[string]any) {
	t.Helper()
	cm := one[*corev1.ConfigMap](t, r, edgeName)
	text, ok := cm.Data["herald.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no herald.yaml: %v", edgeName, cm.Data)
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(text), &m); err != nil {
		t.Fatal(err)
	}
	return text, m
}

// seconds parses a Go duration option value into whole seconds.
func seconds(t testing.TB, v any) int64 {
	t.Helper()
	d, err := time.ParseDuration(fmt.Sprint(v))
	if err != nil {
		t.Fatalf("duration %v: %v", v, err)
	}
	return int64(d / time.Second)
}

// TestEdgeDrainAndProbes checks the edge container's probes and that the
// grace period covers preStop and the edge's whole shutdown, as configured
// in the rendered options file.
func TestEdgeDrainAndProbes(t *testing.T) {
	for name, files := range valueSets() {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, values(t, files), renderOpts{})
			d := one[*appsv1.Deployment](t, r, edgeName)
			spec := d.Spec.Template.Spec
			if len(spec.Containers) != 1 {
				t.Fatalf("%d containers", len(spec.Containers))
			}
			c := spec.Containers[0]
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for what, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				want := "/healthz"
				if what == "readiness" {
					want = "/readyz"
				}
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s probe missing or not HTTP", what)
					continue
				}
				if p.HTTPGet.Path != want {
					t.Errorf("%s probe path %q, want %q", what, p.HTTPGet.Path, want)
				}
				if _, ok := ports[p.HTTPGet.Port.String()]; !ok {
					t.Errorf("%s probe port %q is not a container port %v", what, p.HTTPGet.Port.String(), ports)
				}
			}

			_, cfg := edgeConfig(t, r)
			if got := fmt.Sprint(cfg["listen"]); got != fmt.Sprintf(":%d", ports["http"]) {
				t.Errorf("listen %q does not match container port http %d", got, ports["http"])
			}
			window, shutdown := seconds(t, cfg["drain-window"]), seconds(t, cfg["shutdown-grace"])
			if window <= 0 || shutdown <= window {
				t.Errorf("drain-window %ds, shutdown-grace %ds: the window must be positive and below the grace", window, shutdown)
			}
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
				t.Fatalf("no preStop sleep: %+v", c.Lifecycle)
			}
			preStop := c.Lifecycle.PreStop.Sleep.Seconds
			grace := *spec.TerminationGracePeriodSeconds
			// Kubernetes counts preStop inside the grace period; the edge
			// needs the drain window plus its other shutdown steps after it.
			if grace < preStop+shutdown+5 {
				t.Errorf("terminationGracePeriodSeconds %d < preStop %d + shutdown-grace %d + 5", grace, preStop, shutdown)
			}
			if grace > preStop+shutdown+60 {
				t.Errorf("terminationGracePeriodSeconds %d is far above what the drain needs (%d)", grace, preStop+shutdown)
			}
			if d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.String() != "0" {
				t.Errorf("rolling update may take edges down before their replacements are ready: %+v", d.Spec.Strategy)
			}
			if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
				t.Error("service links enabled: every Service of the namespace becomes environment variables")
			}
		})
	}
}

func TestTopologySpread(t *testing.T) {
	r := mustRender(t, values(t, nil), renderOpts{})
	for what, pt := range podTemplates(r) {
		keys := map[string]bool{}
		for _, c := range pt.Spec.TopologySpreadConstraints {
			keys[c.TopologyKey] = true
			sel, err := metav1LabelSelector(c.LabelSelector)
			if err != nil {
				t.Fatal(err)
			}
			if !sel.Matches(labels.Set(pt.Labels)) {
				t.Errorf("%s: spread selector %v does not select its own pods %v", what, sel, pt.Labels)
			}
		}
		if !keys["kubernetes.io/hostname"] || !keys["topology.kubernetes.io/zone"] {
			t.Errorf("%s spreads over %v, want nodes and zones", what, keys)
		}
	}
}

// TestChecksumRollsPods: a change of the options changes the pod template,
// and the same values render the same template.
func TestChecksumRollsPods(t *testing.T) {
	ann := func(sets ...string) map[string]string {
		r := mustRender(t, values(t, nil, sets...), renderOpts{})
		return one[*appsv1.Deployment](t, r, edgeName).Spec.Template.Annotations
	}
	base := ann()
	if base["checksum/config"] == "" || base["checksum/secret"] == "" {
		t.Fatalf("no checksum annotations: %v", base)
	}
	if again := ann(); again["checksum/config"] != base["checksum/config"] || again["checksum/secret"] != base["checksum/secret"] {
		t.Errorf("the same values give different checksums: %v vs %v", base, again)
	}
	if c := ann("edge.config.ping-interval=15s"); c["checksum/config"] == base["checksum/config"] {
		t.Error("changing an option does not change checksum/config")
	}
	if c := ann("secrets.signingSecret=another-secret-value"); c["checksum/secret"] == base["checksum/secret"] {
		t.Error("changing a secret value does not change checksum/secret")
	}
	nats := func(sets ...string) string {
		r := mustRender(t, values(t, nil, sets...), renderOpts{})
		return one[*appsv1.StatefulSet](t, r, natsName).Spec.Template.Annotations["checksum/config"]
	}
	if nats() == "" || nats() == nats("nats.bundled.lameDuck.durationSeconds=20") {
		t.Error("changing the NATS configuration does not change the StatefulSet's checksum/config")
	}
}

// TestSecretsNeverInConfigMaps renders the full values, whose secrets are
// distinctive strings, and looks for them everywhere but in the Secret.
func TestSecretsNeverInConfigMaps(t *testing.T) {
	vals := values(t, fullValues)
	r := mustRender(t, vals, renderOpts{apiVersions: []string{serviceMonitorAPI}})
	s := vals["secrets"].(map[string]any)
	var secrets []string
	for _, k := range []string{"signingSecret", "natsUser", "natsPassword"} {
		secrets = append(secrets, s[k].(string))
	}
	for _, tok := range s["publishTokens"].([]any) {
		secrets = append(secrets, tok.(string))
	}
	found := map[string]bool{}
	for _, d := range r.docs {
		for _, sec := range secrets {
			if secret, isSecret := d.obj.(*corev1.Secret); isSecret {
				for _, v := range secret.Data {
					if bytes.Contains(v, []byte(sec)) {
						found[sec] = true
					}
				}
				continue
			}
			if bytes.Contains(d.raw, []byte(sec)) {
				t.Errorf("secret %q appears in %s", sec, d.source)
			}
		}
	}
	for _, sec := range secrets {
		if !found[sec] {
			t.Errorf("secret %q is in no Secret", sec)
		}
		if strings.Contains(r.rel.Info.Notes, sec) {
			t.Errorf("NOTES print secret %q", sec)
		}
	}
	// The edge reads every secret from the Secret by reference.
	c := one[*appsv1.Deployment](t, r, edgeName).Spec.Template.Spec.Containers[0]
	refs := map[string]string{}
	for _, e := range c.Env {
		if e.Value != "" && strings.HasPrefix(e.Name, "HERALD_") {
			t.Errorf("env %s has a literal value", e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			refs[e.Name] = e.ValueFrom.SecretKeyRef.Key
		}
	}
	want := map[string]string{"HERALD_PUBLISH_TOKEN": "publish-token", "HERALD_SIGNING_SECRET": "signing-secret",
		"HERALD_NATS_USER": "nats-user", "HERALD_NATS_PASSWORD": "nats-password"}
	for k, v := range want {
		if refs[k] != v {
			t.Errorf("env %s from secret key %q, want %q", k, refs[k], v)
		}
	}
}

func TestPDBAndHPA(t *testing.T) {
	r := mustRender(t, values(t, fullValues), renderOpts{})
	for _, name := range []string{edgeName, natsName} {
		p := one[*policyv1.PodDisruptionBudget](t, r, name)
		if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
			t.Errorf("PDB %s: set exactly one of minAvailable and maxUnavailable: %+v", name, p.Spec)
		}
		if p.Spec.MaxUnavailable != nil && *p.Spec.MaxUnavailable != intstr.FromInt32(1) {
			t.Errorf("PDB %s maxUnavailable %v, want 1", name, p.Spec.MaxUnavailable)
		}
	}
	// Each PDB selects exactly its own pods.
	pts := podTemplates(r)
	for name, kind := range map[string]string{edgeName: "Deployment/" + edgeName, natsName: "StatefulSet/" + natsName} {
		sel, err := metav1LabelSelector(one[*policyv1.PodDisruptionBudget](t, r, name).Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		for what, pt := range pts {
			if sel.Matches(labels.Set(pt.Labels)) != (what == kind) {
				t.Errorf("PDB %s selector %v vs %s labels %v", name, sel, what, pt.Labels)
			}
		}
	}

	h := one[*autoscalingv2.HorizontalPodAutoscaler](t, r, edgeName)
	if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != edgeName {
		t.Errorf("HPA targets %+v", h.Spec.ScaleTargetRef)
	}
	if d := one[*appsv1.Deployment](t, r, edgeName); d.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas %d while the HPA owns them: every upgrade would reset the count", *d.Spec.Replicas)
	}
	var cpu, conns bool
	for _, m := range h.Spec.Metrics {
		switch {
		case m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource.Name == corev1.ResourceCPU:
			cpu = *m.Resource.Target.AverageUtilization == 65
		case m.Type == autoscalingv2.PodsMetricSourceType:
			conns = m.Pods.Metric.Name == "herald_edge_connections" && m.Pods.Target.AverageValue.String() == "8k"
		}
	}
	if !cpu || !conns {
		t.Errorf("HPA metrics %+v: cpu %v, connections %v", h.Spec.Metrics, cpu, conns)
	}
	if h.Spec.Behavior == nil || h.Spec.Behavior.ScaleDown == nil || *h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds < 300 {
		t.Errorf("HPA scales down without a long stabilization window: %+v", h.Spec.Behavior)
	}
}

func TestServiceMonitorGatedOnCRD(t *testing.T) {
	vals := values(t, nil, "metrics.serviceMonitor.enabled=true")
	without := mustRender(t, vals, renderOpts{})
	if n := len(all[*monitoringv1.ServiceMonitor](without)); n != 0 {
		t.Fatalf("%d ServiceMonitors rendered for a cluster without the API", n)
	}
	with := mustRender(t, vals, renderOpts{apiVersions: []string{serviceMonitorAPI}})
	sm := one[*monitoringv1.ServiceMonitor](t, with, edgeName)
	svc := one[*corev1.Service](t, with, edgeName)
	if !labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select Service labels %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	for _, other := range all[*corev1.Service](with) {
		if other.Name != svc.Name && labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(other.Labels)) {
			t.Errorf("ServiceMonitor also selects Service %s", other.Name)
		}
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("endpoints %+v", sm.Spec.Endpoints)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" }) {
		t.Errorf("Service has no port named http: %+v", svc.Spec.Ports)
	}
}

// TestServicePortsResolve checks that every Service, Ingress and probe
// port names something that exists.
func TestServicePortsResolve(t *testing.T) {
	r := mustRender(t, values(t, fullValues), renderOpts{})
	pts := podTemplates(r)
	for _, svc := range all[*corev1.Service](r) {
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var matched int
		for what, pt := range pts {
			if !sel.Matches(labels.Set(pt.Labels)) {
				continue
			}
			matched++
			for _, sp := range svc.Spec.Ports {
				if sp.TargetPort.Type != intstr.String {
					t.Errorf("Service %s port %s targets a number", svc.Name, sp.Name)
					continue
				}
				ok := slices.ContainsFunc(pt.Spec.Containers[0].Ports, func(cp corev1.ContainerPort) bool { return cp.Name == sp.TargetPort.StrVal })
				if !ok {
					t.Errorf("Service %s port %s targets %q, not a port of %s", svc.Name, sp.Name, sp.TargetPort.StrVal, what)
				}
			}
		}
		if matched != 1 {
			t.Errorf("Service %s selects %d pod templates", svc.Name, matched)
		}
	}
	ing := one[*networkingv1.Ingress](t, r, edgeName)
	for _, rule := range ing.Spec.Rules {
		for _, p := range rule.HTTP.Paths {
			svc := one[*corev1.Service](t, r, p.Backend.Service.Name)
			if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == p.Backend.Service.Port.Name }) {
				t.Errorf("Ingress path %s → %s:%s, no such Service port", p.Path, svc.Name, p.Backend.Service.Port.Name)
			}
		}
	}
	for k, v := range map[string]string{
		"nginx.ingress.kubernetes.io/proxy-buffering":    "off",
		"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
		"cert-manager.io/cluster-issuer":                 "letsencrypt",
	} {
		if ing.Annotations[k] != v {
			t.Errorf("Ingress annotation %s = %q, want %q", k, ing.Annotations[k], v)
		}
	}
}

// TestSchemaRefusesBadValues: wrong types, unknown keys and values the API
// server would refuse fail at render time, naming the value.
func TestSchemaRefusesBadValues(t *testing.T) {
	cases := []struct {
		set  string
		want string // in the error
	}{
		{"replicaCount=3", "replicaCount"},
		{"edgee.replicas=3", "edgee"},
		{"edge.replicas=three", "/edge/replicas"},
		{"edge.config.queue-bytes=lots", "/edge/config/queue-bytes"},
		{"edge.config.ping-interval=30", "/edge/config/ping-interval"},
		{"edge.config.log-level=verbose", "/edge/config/log-level"},
		{"edge.config.publish-token=abcdefgh123", "publish-token"},
		{"edge.config.nats=nats://x:4222", "nats"},
		{"edge.config.no-such-option=1", "no-such-option"},
		{"edge.drain.preStopSeconds=-1", "/edge/drain/preStopSeconds"},
		{"edge.ports.http=70000", "/edge/ports/http"},
		{"service.port=0", "/service/port"},
		{"nats.auth.type=kerberos", "/nats/auth/type"},
		{"nats.bundled.replicas=2", "/nats/bundled/replicas"},
		{"nats.bundled.jetstream.maxFileStore=10GB", "/nats/bundled/jetstream/maxFileStore"},
		{"image.digest=sha256:xyz", "/image/digest"},
		{"ingress.controller=apache", "/ingress/controller"},
		{"secrets.publishTokens={short}", "/secrets/publishTokens"},
		{"autoscaling.targetCPUUtilizationPercentage=150", "/autoscaling/targetCPUUtilizationPercentage"},
	}
	for _, tc := range cases {
		t.Run(tc.set, func(t *testing.T) {
			_, err := renderChart(t, values(t, nil, tc.set), renderOpts{})
			if err == nil {
				t.Fatalf("--set %s rendered", tc.set)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("--set %s: error does not name %q as a schema failure:\n%v", tc.set, tc.want, err)
			}
		})
	}
}

// TestTemplateRefusesBadCombinations: what the schema cannot see (relations
// between values) fails with a message naming the value to change.
func TestTemplateRefusesBadCombinations(t *testing.T) {
	cases := []struct {
		sets []string
		want string
	}{
		{[]string{"nats.bundled.enabled=false"}, "nats.external.urls"},
		{[]string{"edge.pdb.minAvailable=1"}, "not both"},
		{[]string{"edge.drain.windowSeconds=30"}, "shutdownGraceSeconds (25) must exceed edge.drain.windowSeconds (30)"},
		{[]string{"nats.auth.type=user"}, "secrets.natsUser is required"},
		{[]string{"nats.auth.type=creds", "secrets.natsCreds=x"}, "bundled cluster supports none, user and token"},
		{[]string{"nats.bundled.enabled=false", "nats.external.urls={nats://a:4222}", "nats.external.tls.enabled=true"}, "nats.external.tls.secretName is required"},
		{[]string{"autoscaling.enabled=true", "autoscaling.targetCPUUtilizationPercentage=null"}, "set targetCPUUtilizationPercentage or enable autoscaling.connections"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.sets, ","), func(t *testing.T) {
			_, err := renderChart(t, values(t, nil, tc.sets...), renderOpts{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// edgeFlags lists cmd/edge's options, as its -h prints them.
func edgeFlags(t testing.TB) []string {
	t.Helper()
	var help bytes.Buffer
	_, err := app.Load(app.ModeEdge, []string{"-h"}, nil, &help)
	if err == nil {
		t.Fatal("-h did not return flag.ErrHelp")
	}
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		out = append(out, m[1])
	}
	if len(out) < 20 {
		t.Fatalf("found only %d options in -h output:\n%s", len(out), help.String())
	}
	return out
}

// TestSchemaKnowsEveryEdgeOption: every option of cmd/edge is either set by
// the chart, offered in edge.config with a type, or deliberately not
// offered; a new option must be placed in one of them.
func TestSchemaKnowsEveryEdgeOption(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			Edge struct {
				Properties struct {
					Config struct {
						Properties map[string]json.RawMessage `json:"properties"`
					} `json:"config"`
				} `json:"properties"`
			} `json:"edge"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	offered := s.Properties.Edge.Properties.Config.Properties
	chartSet := chartOptions(t)
	// TLS is terminated by the Ingress or a mesh; the probes speak HTTP.
	// Files the chart does not mount: TLS ends at the Ingress; token public
	// keys and NATS nkey seeds would need volumes of their own.
	notOffered := []string{"tls-cert", "tls-key", "token-keys", "nats-nkey"}
	for _, f := range edgeFlags(t) {
		n := 0
		if _, ok := offered[f]; ok {
			n++
		}
		if slices.Contains(chartSet, f) {
			n++
		}
		if slices.Contains(notOffered, f) {
			n++
		}
		if n != 1 {
			t.Errorf("option -%s is in %d of: edge.config in values.schema.json, the chart's own options (herald.chartOptions), the options not offered", f, n)
		}
	}
	flags := edgeFlags(t)
	for k := range offered {
		if !slices.Contains(flags, k) {
			t.Errorf("values.schema.json offers edge.config.%s, which cmd/edge does not have", k)
		}
	}
}

// chartOptions is the list the chart keeps in herald.chartOptions.
func chartOptions(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "templates", "_helpers.tpl"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`define "herald.chartOptions" -}}\s*\{\{- list ([^|]+)\|`).FindSubmatch(b)
	if m == nil {
		t.Fatal("herald.chartOptions not found in _helpers.tpl")
	}
	var out []string
	for _, q := range regexp.MustCompile(`"([^"]+)"`).FindAllSubmatch(m[1], -1) {
		out = append(out, string(q[1]))
	}
	return out
}

// podEnv resolves a container's environment as the kubelet would, from the
// rendered Secrets and the pod's name.
func podEnv(t testing.TB, r *rendered, c corev1.Container, podName string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			sec := one[*corev1.Secret](t, r, ref.Name)
			v, ok := sec.Data[ref.Key]
			if !ok {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				t.Fatalf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = string(v)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			q := c.Resources.Limits[corev1.ResourceMemory]
			env[e.Name] = strconv.FormatInt(q.Value(), 10)
		default:
			t.Fatalf("env %s: unsupported source %+v", e.Name, e.ValueFrom)
		}
	}
	return env
}

// TestEdgeLoadsRenderedConfig runs Herald's own option loader on the
// rendered options file and environment: every key is an option of
// cmd/edge, every value parses and the result validates.
func TestEdgeLoadsRenderedConfig(t *testing.T) {
	for name, files := range valueSets() {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, values(t, files), renderOpts{})
			text, _ := edgeConfig(t, r)
			path := filepath.Join(t.TempDir(), "herald.yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			c := one[*appsv1.Deployment](t, r, edgeName).Spec.Template.Spec.Containers[0]
			env := podEnv(t, r, c, "herald-7d9f-abcde")
			args := slices.Clone(c.Args)
			i := slices.Index(args, "-config")
			if i < 0 || i+1 >= len(args) {
				t.Fatalf("args %v do not name the config file", args)
			}
			if want := c.VolumeMounts[0].MountPath + "/herald.yaml"; args[i+1] != want {
				t.Errorf("-config %s is not the mounted ConfigMap's file %s", args[i+1], want)
			}
			args[i+1] = path
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			o, err := app.Load(app.ModeEdge, args, lookup, io.Discard)
			if err != nil {
				t.Fatalf("cmd/edge refuses the rendered configuration: %v", err)
			}
			if o.HistoryReplicas != 3 {
				t.Errorf("history-replicas %d with the bundled cluster, want 3", o.HistoryReplicas)
			}
			if o.EdgeID != "herald-7d9f-abcde" {
				t.Errorf("edge-id %q, want the pod's name (presence and lifecycle events name the edge)", o.EdgeID)
			}
			if want := []string{"nats://herald-nats:4222"}; !slices.Equal(o.NATSURLs, want) {
				t.Errorf("nats %v, want %v", o.NATSURLs, want)
			}
			if len(o.PublishTokens) == 0 || o.Source("publish-token") != "env HERALD_PUBLISH_TOKEN" {
				t.Errorf("publish tokens %d from %q", len(o.PublishTokens), o.Source("publish-token"))
			}
		})
	}
}

// TestBundledNATSConfigParses parses the rendered nats.conf with
// nats-server's own configuration loader, with the environment the
// StatefulSet gives the container.
func TestBundledNATSConfigParses(t *testing.T) {
	for name, files := range valueSets() {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, values(t, files), renderOpts{})
			cm := one[*corev1.ConfigMap](t, r, natsName)
			sts := one[*appsv1.StatefulSet](t, r, natsName)
			c := sts.Spec.Template.Spec.Containers[0]
			i := slices.Index(c.Command, "--config")
			if i < 0 || c.Command[i+1] != "/etc/nats/nats.conf" {
				t.Fatalf("command %v does not load /etc/nats/nats.conf", c.Command)
			}
			path := filepath.Join(t.TempDir(), "nats.conf")
			if err := os.WriteFile(path, []byte(cm.Data["nats.conf"]), 0o600); err != nil {
				t.Fatal(err)
			}
			for k, v := range podEnv(t, r, c, natsName+"-1") {
				t.Setenv(k, v)
			}
			o, err := server.ProcessConfigFile(path)
			if err != nil {
				t.Fatalf("nats-server refuses the rendered config: %v\n%s", err, cm.Data["nats.conf"])
			}
			if o.ServerName != natsName+"-1" || !o.JetStream || o.StoreDir != "/data" {
				t.Errorf("server_name %q, jetstream %v, store_dir %q", o.ServerName, o.JetStream, o.StoreDir)
			}
			if o.Cluster.Name != "herald" || o.Cluster.Port != 6222 || len(o.Routes) != int(*sts.Spec.Replicas) {
				t.Errorf("cluster %q port %d, %d routes for %d replicas", o.Cluster.Name, o.Cluster.Port, len(o.Routes), *sts.Spec.Replicas)
			}
			for i, u := range o.Routes {
				want := fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local:6222", natsName, i, sts.Spec.ServiceName, namespace)
				if u.Host != want {
					t.Errorf("route %d host %s, want %s", i, u.Host, want)
				}
			}
			if o.PidFile != "/var/run/nats/nats.pid" || !strings.Contains(strings.Join(c.Lifecycle.PreStop.Exec.Command, " "), "--signal ldm="+o.PidFile) {
				t.Errorf("pid_file %q vs preStop %v", o.PidFile, c.Lifecycle.PreStop.Exec.Command)
			}
			grace := *sts.Spec.Template.Spec.TerminationGracePeriodSeconds
			ldm := int64((o.LameDuckDuration + o.LameDuckGracePeriod) / time.Second)
			if grace < ldm+10 {
				t.Errorf("terminationGracePeriodSeconds %d does not cover lame duck mode (%d s) and shutdown", grace, ldm)
			}
			if strings.Contains(name, "full") {
				if o.Username != "herald-edge" || o.Password != "full-nats-password-cdef" {
					t.Errorf("authorization from the environment: user %q", o.Username)
				}
				if o.SyncAlways != true || o.JetStreamMaxStore != 4<<30 {
					t.Errorf("sync_interval always %v, max_file_store %d", o.SyncAlways, o.JetStreamMaxStore)
				}
			}
		})
	}
}

// TestExamplesRender renders every values file under helm/examples, decodes
// it strictly and evaluates its pods at the restricted level; the API
// server tests install them.
func TestExamplesRender(t *testing.T) {
	examples, err := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, f := range examples {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := mustRender(t, values(t, []string{f}), renderOpts{})
			for what, pt := range podTemplates(r) {
				for _, res := range eval.EvaluatePod(lv, &pt.ObjectMeta, &pt.Spec) {
					if !res.Allowed {
						t.Errorf("%s violates restricted: %s: %s", what, res.ForbiddenReason, res.ForbiddenDetail)
					}
				}
			}
		})
	}
}

// TestPodeWebSameOrigin: in the same-origin example, Pode.Web's stream
// path reaches Herald (which serves it) and every other path the app.
func TestPodeWebSameOrigin(t *testing.T) {
	r := mustRender(t, values(t, []string{filepath.Join("..", "examples", "pode-web-same-origin.yaml")}), renderOpts{})
	ing := one[*networkingv1.Ingress](t, r, edgeName)
	_, cfg := edgeConfig(t, r)
	if cfg["pode-web"] != true {
		t.Errorf("pode-web is not on: Herald would answer 404 on …/sse-open")
	}
	route := func(path string) string {
		best, bestLen := "", -1
		for _, p := range ing.Spec.Rules[0].HTTP.Paths {
			ok := false
			switch *p.PathType {
			case networkingv1.PathTypeExact:
				ok = path == p.Path
			case networkingv1.PathTypePrefix:
				ok = p.Path == "/" || path == p.Path || strings.HasPrefix(path, strings.TrimSuffix(p.Path, "/")+"/")
			}
			if ok && len(p.Path) > bestLen {
				best, bestLen = p.Backend.Service.Name, len(p.Path)
			}
		}
		return best
	}
	for path, want := range map[string]string{
		"/pode.web-dynamic/pages/home/sse-open":   edgeName,
		"/pode.web-dynamic/pages/orders/sse-open": edgeName,
		"/pode.web-dynamic/pages/home/sse-close":  "pode-app",
		"/pode.web-dynamic/pages/home":            "pode-app",
		"/":                                       "pode-app",
		"/login":                                  "pode-app",
	} {
		if got := route(path); got != want {
			t.Errorf("%s → %s, want %s", path, got, want)
		}
	}
	// Herald serves the route the Ingress sends it.
	if !strings.Contains(edgePodeWebPattern(t), "/pode.web-dynamic/pages/{group}/sse-open") {
		t.Errorf("Herald's Pode.Web route is %q", edgePodeWebPattern(t))
	}
}
