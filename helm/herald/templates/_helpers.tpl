{{/* Chart name. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-herald, or the release name when it already contains the chart name. */}}
{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the bundled NATS objects; leaves room for "-headless" and pod ordinals. */}}
{{- define "herald.natsName" -}}
{{- printf "%s-nats" (include "herald.fullname" . | trunc 45 | trimSuffix "-") }}
{{- end }}

{{- define "herald.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the edges. */}}
{{- define "herald.edgeSelector" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: edge
{{- end }}

{{/* Selector labels of the bundled NATS servers. */}}
{{- define "herald.natsSelector" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: nats
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret the edges read. */}}
{{- define "herald.secretName" -}}
{{- default (include "herald.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Edge image reference: repository@digest, or repository:tag (default appVersion). */}}
{{- define "herald.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "herald.natsImage" -}}
{{- $i := .Values.nats.bundled.image }}
{{- if $i.digest }}
{{- printf "%s@%s" $i.repository $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository $i.tag }}
{{- end }}
{{- end }}

{{/* Mount points inside the edge container. */}}
{{- define "herald.configDir" -}}/etc/herald/config{{- end }}
{{- define "herald.natsCredsDir" -}}/etc/herald/nats-creds{{- end }}
{{- define "herald.natsTLSDir" -}}/etc/herald/nats-tls{{- end }}

{{/* NATS client URLs the edges use. */}}
{{- define "herald.natsURLs" -}}
{{- if .Values.nats.bundled.enabled }}
{{- list (printf "nats://%s:4222" (include "herald.natsName" .)) | toJson }}
{{- else }}
{{- .Values.nats.external.urls | toJson }}
{{- end }}
{{- end }}

{{/* Replicas of the history stream. */}}
{{- define "herald.historyReplicas" -}}
{{- if not (kindIs "invalid" .Values.nats.historyReplicas) }}
{{- .Values.nats.historyReplicas }}
{{- else if .Values.nats.bundled.enabled }}
{{- min 3 .Values.nats.bundled.replicas }}
{{- else }}
{{- 1 }}
{{- end }}
{{- end }}

{{/* Options the chart writes itself; edge.config may not set them. */}}
{{- define "herald.chartOptions" -}}
{{- list "config" "listen" "ws-listen" "nats" "nats-name" "nats-creds" "nats-user" "nats-password" "nats-token" "nats-tls-ca" "nats-tls-cert" "nats-tls-key" "drain-window" "shutdown-grace" "history-replicas" "edge-id" "publish-token" "signing-secret" "token-secret" | toJson }}
{{- end }}

{{/*
The edge's config file. Checks the values the schema cannot (relations
between keys) and fails with a message that names the value to change.
*/}}
{{- define "herald.edgeConfig" -}}
{{- $v := .Values }}
{{- range $k, $_ := $v.edge.config }}
{{- if has $k (include "herald.chartOptions" $ | fromJsonArray) }}
{{- if has $k (list "publish-token" "signing-secret" "token-secret" "nats-password" "nats-token" "nats-user") }}
{{- fail (printf "edge.config.%s is a secret: set it in secrets (a Secret), never in the ConfigMap" $k) }}
{{- end }}
{{- fail (printf "edge.config.%s is set by the chart: use its value (ports, drain, nats.*) instead" $k) }}
{{- end }}
{{- end }}
{{- if and (not $v.nats.bundled.enabled) (empty $v.nats.external.urls) }}
{{- fail "nats.external.urls: give the URLs of your NATS cluster, or set nats.bundled.enabled=true" }}
{{- end }}
{{- if le (int $v.edge.drain.shutdownGraceSeconds) (int $v.edge.drain.windowSeconds) }}
{{- fail (printf "edge.drain.shutdownGraceSeconds (%d) must exceed edge.drain.windowSeconds (%d)" (int $v.edge.drain.shutdownGraceSeconds) (int $v.edge.drain.windowSeconds)) }}
{{- end }}
{{- $cfg := dict }}
{{- range $k, $val := $v.edge.config }}
{{- $_ := set $cfg $k $val }}
{{- end }}
{{- $_ := set $cfg "listen" (printf ":%d" (int $v.edge.ports.http)) }}
{{- if $v.edge.podeWebSocket.enabled }}
{{- $_ := set $cfg "ws-listen" (printf ":%d" (int $v.edge.podeWebSocket.port)) }}
{{- end }}
{{- $_ := set $cfg "nats" (include "herald.natsURLs" . | fromJsonArray) }}
{{- $_ := set $cfg "history-replicas" (include "herald.historyReplicas" . | int) }}
{{- $_ := set $cfg "drain-window" (printf "%ds" (int $v.edge.drain.windowSeconds)) }}
{{- $_ := set $cfg "shutdown-grace" (printf "%ds" (int $v.edge.drain.shutdownGraceSeconds)) }}
{{- if eq $v.nats.auth.type "creds" }}
{{- $_ := set $cfg "nats-creds" (printf "%s/nats.creds" (include "herald.natsCredsDir" .)) }}
{{- end }}
{{- if and (not $v.nats.bundled.enabled) $v.nats.external.tls.enabled }}
{{- $_ := set $cfg "nats-tls-ca" (printf "%s/ca.crt" (include "herald.natsTLSDir" .)) }}
{{- if $v.nats.external.tls.clientCert }}
{{- $_ := set $cfg "nats-tls-cert" (printf "%s/tls.crt" (include "herald.natsTLSDir" .)) }}
{{- $_ := set $cfg "nats-tls-key" (printf "%s/tls.key" (include "herald.natsTLSDir" .)) }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Seconds Kubernetes waits between deleting an edge pod and killing it. */}}
{{- define "herald.edgeGraceSeconds" -}}
{{- $d := .Values.edge.drain }}
{{- add (int $d.preStopSeconds) (int $d.shutdownGraceSeconds) (int $d.extraSeconds) }}
{{- end }}

{{/* Generated topology spread constraints over nodes and zones. */}}
{{- define "herald.spread" -}}
{{- $ts := index . 0 }}
{{- $selector := index . 1 }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: {{ $ts.maxSkew }}
  topologyKey: {{ $key }}
  whenUnsatisfiable: {{ $ts.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- $selector | nindent 6 }}
{{- end }}
{{- end }}

{{/*
nats-server configuration of the bundled cluster. Secrets are $VARIABLE
references that nats-server resolves from the container's environment.
*/}}
{{- define "herald.natsConfig" -}}
{{- $b := .Values.nats.bundled }}
{{- $name := include "herald.natsName" . }}
{{- $auth := .Values.nats.auth.type }}
{{- if eq $auth "creds" }}
{{- fail "nats.auth.type=creds needs an external (operator mode) NATS cluster; the bundled cluster supports none, user and token" }}
{{- end }}
server_name: $SERVER_NAME
listen: 0.0.0.0:4222
http: 0.0.0.0:8222
pid_file: /var/run/nats/nats.pid
lame_duck_duration: {{ $b.lameDuck.durationSeconds }}s
lame_duck_grace_period: {{ $b.lameDuck.gracePeriodSeconds }}s
{{- if eq $auth "user" }}
authorization {
  user: $NATS_USER
  password: $NATS_PASSWORD
}
{{- else if eq $auth "token" }}
authorization {
  token: $NATS_TOKEN
}
{{- end }}
jetstream {
  store_dir: /data
  max_memory_store: {{ $b.jetstream.maxMemoryStore }}
  max_file_store: {{ $b.jetstream.maxFileStore }}
  {{- if $b.syncAlways }}
  sync_interval: always
  {{- end }}
}
{{- if gt (int $b.replicas) 1 }}
cluster {
  name: {{ $b.clusterName }}
  listen: 0.0.0.0:6222
  no_advertise: true
  # Routes are not authenticated: networkPolicy.enabled limits this port to
  # the NATS pods.
  routes: [
    {{- range $i, $_ := until (int $b.replicas) }}
    nats://{{ $name }}-{{ $i }}.{{ $name }}-headless.{{ $.Release.Namespace }}.svc.{{ $b.clusterDomain }}:6222
    {{- end }}
  ]
}
{{- end }}
{{- end }}
