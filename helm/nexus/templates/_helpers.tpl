{{/* Names, labels and the rendered settings file of the nexus chart. */}}

{{- define "nexus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nexus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "nexus.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "nexus.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<role>", for a dict {root, role}. */}}
{{- define "nexus.roleName" -}}
{{- printf "%s-%s" (include "nexus.fullname" .root | trunc 52 | trimSuffix "-") .role -}}
{{- end -}}

{{/*
A role's Deployment, for a dict {root, role, shards}: "<fullname>-<role>", and for a
supervisor of some shards (supervisor.shards) "<fullname>-supervisor-<shard>[-<shard>...]".
*/}}
{{- define "nexus.deploymentName" -}}
{{- if .shards -}}
{{- printf "%s-%s" (include "nexus.roleName" .) (join "-" .shards) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "nexus.roleName" . -}}
{{- end -}}
{{- end -}}

{{/*
The label that tells apart the supervisors of different shards (their Deployments' pods
would otherwise match each other's selectors); nothing for a role's only Deployment, so
the selector of a supervisor of every shard is the one it always had.
*/}}
{{- define "nexus.scopeLabel" -}}
{{- with .shards -}}
science.sneaksanddata.com/supervised-shards: {{ join "." . | trunc 63 | trimSuffix "." | trimSuffix "-" | quote }}
{{- end -}}
{{- end -}}

{{- define "nexus.runtimeNamespace" -}}
{{- default .Release.Namespace .Values.runtimeNamespace -}}
{{- end -}}

{{- define "nexus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "nexus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nexus
{{- end -}}

{{/* Selector labels of one role, for a dict {root, role}. */}}
{{- define "nexus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nexus.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "nexus.roleLabels" -}}
{{ include "nexus.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "nexus.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The settings file: chart defaults, then values.config on top, then the keys the chart
must own (where it listens, where the shard kubeconfigs are mounted).
*/}}
{{- define "nexus.settings" -}}
{{- $ns := .Release.Namespace -}}
{{- $defaults := dict
    "executor" "kubernetes"
    "template-source" "kubernetes"
    "runtime-namespace" (include "nexus.runtimeNamespace" .)
    "deploy-namespace" $ns
    "receiver-url" (printf "http://%s.%s.svc:%d" (include "nexus.roleName" (dict "root" . "role" "receiver")) $ns (int .Values.port))
    "external-url" (printf "http://%s.%s.svc:%d" (include "nexus.roleName" (dict "root" . "role" "scheduler")) $ns (int .Values.port))
-}}
{{- $owned := dict "bind-host" "0.0.0.0" "bind-port" (int .Values.port) "data-dir" "/var/lib/nexus" -}}
{{- if .Values.secrets.shards.name -}}
{{- $_ := set $owned "shard-kube-config-path" .Values.secrets.shards.mountPath -}}
{{- end -}}
{{- $settings := mergeOverwrite $defaults (deepCopy (default dict .Values.config)) $owned -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* Environment from the referenced Secrets, for a dict {root, role}. */}}
{{- define "nexus.secretEnv" -}}
{{- $s := .root.Values.secrets -}}
{{- /* The controller talks to Kubernetes only: no store, no buffer credentials. */ -}}
{{- if eq .role "controller" }}
{{- else }}
{{- if $s.cassandra.name }}
- name: NEXUS__SCYLLA_CQL_STORE__USER
  valueFrom:
    secretKeyRef: {name: {{ $s.cassandra.name | quote }}, key: {{ $s.cassandra.userKey | quote }}}
- name: NEXUS__SCYLLA_CQL_STORE__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $s.cassandra.name | quote }}, key: {{ $s.cassandra.passwordKey | quote }}}
{{- end }}
{{- if and $s.s3.name (ne .role "receiver") }}
- name: NEXUS__S3_BUFFER__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ $s.s3.name | quote }}, key: {{ $s.s3.accessKeyIdKey | quote }}}
- name: NEXUS__S3_BUFFER__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $s.s3.name | quote }}, key: {{ $s.s3.secretAccessKeyKey | quote }}}
{{- end }}
{{- if and $s.payloadSigning.name (ne .role "receiver") }}
- name: NEXUS__S3_BUFFER__REQUEST_PAYLOAD_PROXY_CONFIGURATION__SIGN_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $s.payloadSigning.name | quote }}, key: {{ $s.payloadSigning.key | quote }}}
{{- end }}
{{- if $s.receiverTokens.name }}
- name: NEXUS__AUTH__RECEIVER_TOKEN_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $s.receiverTokens.name | quote }}, key: {{ $s.receiverTokens.key | quote }}}
{{- end }}
{{- end }}
{{- end -}}
