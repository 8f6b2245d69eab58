{{/*
The standard helpers: names truncated to 63 characters (the DNS label limit), labels, images.
*/}}

{{- define "ragops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name, with the chart name appended unless the release name holds it.
*/}}
{{- define "ragops.fullname" -}}
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

{{- define "ragops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ragops.labels" -}}
helm.sh/chart: {{ include "ragops.chart" . }}
{{ include "ragops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragops
{{- end }}

{{- define "ragops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ragops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ragops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ragops.leaseName" -}}
{{- default (include "ragops.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "ragops.metricsServiceName" -}}
{{- printf "%s-metrics" (include "ragops.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
An image reference: repository, then @digest when given, else :tag (default: the chart's appVersion).
*/}}
{{- define "ragops.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches: empty in cluster mode.
*/}}
{{- define "ragops.watchedNamespaces" -}}
{{- if eq .Values.watch.mode "namespaces" }}
{{- if not .Values.watch.namespaces }}
{{- fail "watch.mode=namespaces needs at least one namespace in watch.namespaces" }}
{{- end }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson list }}
{{- end }}
{{- end }}

{{/*
The objects the operator creates and changes in the namespaces it watches (not its own custom
resources, Events or Lease): `rbac.confineWrites` limits its writes to those labelled as its own.
*/}}
{{- define "ragops.childResources" -}}
- apiGroups: [""]
  resources: ["configmaps", "serviceaccounts", "services"]
- apiGroups: ["apps"]
  resources: ["controllerrevisions", "deployments"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
- apiGroups: ["batch"]
  resources: ["jobs"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
{{- end }}

{{/*
What the operator does in each namespace it watches, derived from the calls it makes
(operator/ragops_operator/kube.py, controllers.py) and Kopf's own (watch, annotate, finalize,
post Events). Children are server-side applied: an apply that creates needs `create` as well as
`patch`. No wildcard, no `update` except where named, no Secret listing.
*/}}
{{- define "ragops.namespacedRules" -}}
# The two custom resources: Kopf lists and watches them and patches their annotations and
# finalizers; the operator reads versions, lists deployments (is a version in use?) and removes
# the manual rollout actions (ragops.dev/rollout-action, set-weight) it applies.
- apiGroups: ["ragops.dev"]
  resources: ["knowledgebaseversions", "ragdeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written only through the status subresource, never the user's spec.
- apiGroups: ["ragops.dev"]
  resources: ["knowledgebaseversions/status", "ragdeployments/status"]
  verbs: ["patch"]
# Children carry owner references with blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin runs (e.g. OpenShift), setting that
# needs `update` on the owner's finalizers.
- apiGroups: ["ragops.dev"]
  resources: ["knowledgebaseversions/finalizers", "ragdeployments/finalizers"]
  verbs: ["update"]
# Kopf posts an Event per handled transition.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Only the store DSN Secret a KnowledgeBaseVersion names, read by name: never listed or watched.
# rbac.storeSecretNames narrows it to those names.
- apiGroups: [""]
  resources: ["secrets"]
  {{- with .Values.rbac.storeSecretNames }}
  resourceNames: {{ toJson (uniq .) }}
  {{- end }}
  verbs: ["get"]
# The runtime's children, applied every pass. ConfigMaps (one per runtime template) are listed
# and deleted when no revision can return to them; a canary's golden set and recorded queries
# (golden probes) are read by name.
- apiGroups: [""]
  resources: ["serviceaccounts", "services"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "patch", "delete"]
# Runtime pods are listed, never changed, to say why a runtime cannot run (ImagePullBackOff,
# CreateContainerConfigError, CrashLoopBackOff) instead of counting it as baking.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
# A record of every runtime template that ran, so a rollback restores it exactly: listed by
# label, created once, deleted when no revision can return to it.
- apiGroups: ["apps"]
  resources: ["controllerrevisions"]
  verbs: ["list", "create", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch"]
# Build and gate Jobs of each KnowledgeBaseVersion.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "patch"]
# Listed to learn whether Prometheus Operator is installed; applied only then.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["list", "create", "patch"]
{{- end }}
