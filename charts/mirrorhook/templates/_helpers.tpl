{{/* Names and labels. */}}
{{- define "mirrorhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mirrorhook.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "mirrorhook.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "mirrorhook.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The webhook's matchConditions keep Pods labelled app.kubernetes.io/name=mirrorhook out, so this label is fixed. */}}
{{- define "mirrorhook.selectorLabels" -}}
app.kubernetes.io/name: mirrorhook
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mirrorhook.labels" -}}
{{ include "mirrorhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mirrorhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mirrorhook.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mirrorhook.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "mirrorhook.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "mirrorhook.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* What the configuration turns on, with the server's own defaults (server/core/config.ts). */}}
{{- define "mirrorhook.prepullEnabled" -}}
{{- if dig "kubeFledged" "enabled" true .Values.config }}true{{ end -}}
{{- end -}}

{{- define "mirrorhook.nodeRefreshEnabled" -}}
{{- if and (include "mirrorhook.prepullEnabled" .) (dig "kubeFledged" "nodes" "enabled" true .Values.config) }}true{{ end -}}
{{- end -}}

{{- define "mirrorhook.kubeFledgedNamespace" -}}
{{- dig "kubeFledged" "namespace" "kube-fledged" .Values.config -}}
{{- end -}}

{{- define "mirrorhook.learningEnabled" -}}
{{- if and (dig "reachability" "enabled" true .Values.config) (dig "reachability" "learning" "enabled" true .Values.config) }}true{{ end -}}
{{- end -}}

{{- define "mirrorhook.stateEnabled" -}}
{{- if and (dig "reachability" "enabled" true .Values.config) (dig "reachability" "persistence" "enabled" true .Values.config) }}true{{ end -}}
{{- end -}}

{{- define "mirrorhook.stateConfigMap" -}}
{{- dig "reachability" "persistence" "configMap" "mirrorhook-reachability" .Values.config -}}
{{- end -}}

{{- define "mirrorhook.stateNamespace" -}}
{{- dig "reachability" "persistence" "namespace" .Release.Namespace .Values.config -}}
{{- end -}}

{{- define "mirrorhook.remediationEnabled" -}}
{{- if dig "remediation" "enabled" true .Values.config }}true{{ end -}}
{{- end -}}

{{/* Patching Pods in place: only when the patch method or the bare-Pod patch rule is configured. */}}
{{- define "mirrorhook.remediationPatches" -}}
{{- if and (include "mirrorhook.remediationEnabled" .) (or (eq (dig "remediation" "method" "evict" .Values.config) "patch") (eq (dig "remediation" "barePods" "leave" .Values.config) "patch")) }}true{{ end -}}
{{- end -}}

{{- define "mirrorhook.prepullLease" -}}
{{- dig "kubeFledged" "lease" "mirrorhook-prepull" .Values.config -}}
{{- end -}}

{{- define "mirrorhook.remediationLease" -}}
{{- dig "remediation" "lease" "mirrorhook-remediation" .Values.config -}}
{{- end -}}

{{/* Scheduled pre-warm of workloads' images: off unless configured. */}}
{{- define "mirrorhook.prewarmEnabled" -}}
{{- if dig "prewarm" "enabled" false .Values.config }}true{{ end -}}
{{- end -}}

{{- define "mirrorhook.prewarmLease" -}}
{{- dig "prewarm" "lease" "mirrorhook-prewarm" .Values.config -}}
{{- end -}}
