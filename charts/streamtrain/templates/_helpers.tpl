{{/*
Names are truncated to 63 characters: Kubernetes names and label values are DNS-1123 labels
(at most 63 characters), and the trailing "-" a cut may leave is trimmed.
*/}}
{{- define "streamtrain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamtrain.fullname" -}}
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

{{- define "streamtrain.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: only name and instance, because a Deployment's selector is immutable. */}}
{{- define "streamtrain.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamtrain.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every object's labels; pass a dict with "ctx" (the root context) and "component". */}}
{{- define "streamtrain.labels" -}}
helm.sh/chart: {{ include "streamtrain.chart" .ctx }}
{{ include "streamtrain.selectorLabels" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: streamtrain
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "streamtrain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamtrain.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamtrain.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}
